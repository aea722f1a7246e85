"""A small ECS JSON 1.1 client on aiohttp: the agent's one HTTP stack (no botocore in the agent).

    EcsClient.call(target, body) -> dict          POST / with X-Amz-Target, SigV4-signed
      ApiError(code, message, status)             the server answered {"__type", "message"}
      TransportError                              no answer (connection refused, timeout, bad JSON)

``register_container_instance``, ``poll`` and ``report`` name the operations of
docs/agent-protocol.md; ``credentials`` can be swapped after registration (the agent's own key pair).
``poll`` and ``report`` go over an agent session (``client.session``: one WebSocket, section 8)
when the server offers one, else as HTTP requests like every other call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from dockyard.client import sigv4
from dockyard.client.errors import ApiError, ClientError, TransportError
from dockyard.client.session import AgentSession, SessionUnsupported

__all__ = ["AGENT_PREFIX", "ECS_PREFIX", "ApiError", "ClientError", "EcsClient", "TransportError"]

log = logging.getLogger("dockyard.client")

ECS_PREFIX = "AmazonEC2ContainerServiceV20141113."
AGENT_PREFIX = "DockyardAgentV1."
CONTENT_TYPE = "application/x-amz-json-1.1"
SESSION_RETRY_SECONDS = 600.0  # after "no sessions here", calls go as POST / this long


class EcsClient:
    def __init__(
        self,
        endpoint: str,
        credentials: sigv4.Credentials,
        region: str,
        *,
        session: aiohttp.ClientSession | None = None,
        service: str = "ecs",
        agent_session: bool = True,
    ) -> None:
        parts = urlsplit(endpoint)
        self.endpoint = endpoint.rstrip("/") + "/"
        self.host = parts.netloc
        self.path = "/"
        self.credentials = credentials
        self.region = region
        self.service = service
        self._session = session
        self._own_session = session is None
        # Poll and Report go over an agent session (one WebSocket) unless the server has none
        self._agent: AgentSession | None = (
            AgentSession(endpoint, region, self._http, service=service) if agent_session else None
        )
        self._agent_retry_at = 0.0  # loop time from which a session is tried (again)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=8), json_serialize=json.dumps
            )
        return self._session

    async def close(self) -> None:
        if self._agent is not None:
            await self._agent.close()
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    async def call(self, target: str, body: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        raw = orjson.dumps(body)  # (orjson: the agent loads it anyway, via dockyard.domain)
        headers = sigv4.sign(
            method="POST",
            host=self.host,
            path=self.path,
            headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": target},
            body=raw,
            credentials=self.credentials,
            region=self.region,
            service=self.service,
        )
        headers.pop("Host", None)  # aiohttp sends the same Host itself
        try:
            async with self._http().post(
                self.endpoint, data=raw, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                text = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise TransportError(f"{type(e).__name__}: {e}") from e
        try:
            payload = orjson.loads(text) if text else {}
        except ValueError as e:
            raise TransportError(f"HTTP {status}: not JSON: {text[:200]!r}") from e
        if status >= 400:
            code = str(payload.get("__type") or f"HTTP{status}").rsplit("#", 1)[-1]
            raise ApiError(code, str(payload.get("message") or payload.get("Message") or ""), status)
        if not isinstance(payload, dict):
            raise TransportError(f"HTTP {status}: expected a JSON object")
        return payload

    # -- the operations the agent uses -------------------------------------------------------------

    async def register_container_instance(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call(ECS_PREFIX + "RegisterContainerInstance", body)

    async def poll(self, body: dict[str, Any], wait_seconds: float) -> dict[str, Any]:
        return await self.agent_call(AGENT_PREFIX + "Poll", body, timeout=wait_seconds + 15.0)

    async def report(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.agent_call(AGENT_PREFIX + "Report", body)

    async def agent_call(self, target: str, body: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """An agent operation: on the agent session, or as ``POST /`` when the server has none."""
        loop = asyncio.get_running_loop()
        if self._agent is not None and loop.time() >= self._agent_retry_at:
            try:
                return await self._agent.call(target, body, self.credentials, timeout)
            except SessionUnsupported as e:
                log.info(
                    "no agent sessions at %s (%s): calls go as HTTP requests; trying again in %.0fs",
                    self.endpoint,
                    e,
                    SESSION_RETRY_SECONDS,
                )
                self._agent_retry_at = loop.time() + SESSION_RETRY_SECONDS
        return await self.call(target, body, timeout=timeout)
