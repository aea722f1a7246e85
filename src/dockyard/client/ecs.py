"""A small ECS JSON 1.1 client on aiohttp: the agent's one HTTP stack (no botocore in the agent).

    EcsClient.call(target, body) -> dict          POST / with X-Amz-Target, SigV4-signed
      ApiError(code, message, status)             the server answered {"__type", "message"}
      TransportError                              no answer (connection refused, timeout, bad JSON)

``register_container_instance``, ``poll`` and ``report`` name the operations of
docs/agent-protocol.md; ``credentials`` can be swapped after registration (the agent's own key pair).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from dockyard.client import sigv4

ECS_PREFIX = "AmazonEC2ContainerServiceV20141113."
AGENT_PREFIX = "DockyardAgentV1."
CONTENT_TYPE = "application/x-amz-json-1.1"


class ClientError(Exception):
    """Base of the client's errors."""


class TransportError(ClientError):
    """The server could not be reached or did not answer with JSON."""


class ApiError(ClientError):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class EcsClient:
    def __init__(
        self,
        endpoint: str,
        credentials: sigv4.Credentials,
        region: str,
        *,
        session: aiohttp.ClientSession | None = None,
        service: str = "ecs",
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

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=8), json_serialize=json.dumps
            )
        return self._session

    async def close(self) -> None:
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
        return await self.call(AGENT_PREFIX + "Poll", body, timeout=wait_seconds + 15.0)

    async def report(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call(AGENT_PREFIX + "Report", body)
