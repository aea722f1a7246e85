"""An agent session: the agent's calls over one WebSocket (docs/agent-protocol.md section 8).

    AgentSession.call(target, body, credentials, timeout) -> dict    one call, answered by id
      SessionUnsupported      the server has no sessions (HTTP 404 at the upgrade): use POST /
      ApiError                the server refused the upgrade or answered the call with an error
      TransportError          no session or no answer (the next call opens a new session)

The session is opened on the first call, SigV4-signed with the credentials that call brings; a call
with other credentials (the agent registered again) opens a new one. Calls go out concurrently; a
reader resolves each by its ``id``. When the connection ends, every call in flight fails with
``TransportError``: the agent's loops retry as they do for HTTP, and the retry opens a new session.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from dockyard.client import sigv4
from dockyard.client.errors import ApiError, TransportError

log = logging.getLogger("dockyard.client.session")

PATH = "/_dockyard/agent/v1"  # api/agent_session.PATH
MAX_MESSAGE = 64 * 1024 * 1024  # a Poll answer holds the instance's whole desired set


class SessionUnsupported(Exception):
    """The server does not offer agent sessions."""


class _Connection:
    """One open WebSocket, who signed it, and the calls waiting for an answer on it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, signer: sigv4.Credentials) -> None:
        self.ws = ws
        self.signer = signer
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.closer: asyncio.Future[None] | None = None

    @property
    def usable(self) -> bool:
        return not self.ws.closed

    async def end(self, why: str) -> None:
        """Every call waiting on this connection fails; the socket closes."""
        for answer in self.pending.values():
            if not answer.done():
                answer.set_exception(TransportError(why))
        self.pending.clear()
        if not self.ws.closed:
            await self.ws.close()


class AgentSession:
    def __init__(
        self,
        endpoint: str,
        region: str,
        http: Callable[[], aiohttp.ClientSession],
        *,
        service: str = "ecs",
    ) -> None:
        parts = urlsplit(endpoint)
        scheme = "wss" if parts.scheme == "https" else "ws"
        self.url = f"{scheme}://{parts.netloc}{PATH}"
        self.host = parts.netloc
        self.region = region
        self.service = service
        self._http = http
        self._conn: _Connection | None = None
        self._ids = itertools.count(1)
        self._opening = asyncio.Lock()

    async def call(
        self, target: str, body: dict[str, Any], credentials: sigv4.Credentials, timeout: float
    ) -> dict[str, Any]:
        conn = self._conn
        if conn is None or not conn.usable or conn.signer != credentials:
            conn = await self._open(credentials)
        call_id = next(self._ids)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()
        conn.pending[call_id] = answer
        timer = loop.call_later(timeout, self._expire, conn, answer, timeout)
        try:
            try:
                await conn.ws.send_bytes(orjson.dumps({"id": call_id, "target": target, "body": body}))
            except (aiohttp.ClientError, OSError, RuntimeError) as e:
                await self._end(conn, f"send failed: {type(e).__name__}: {e}")
            reply = await answer
        finally:
            timer.cancel()
            conn.pending.pop(call_id, None)
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            code = str(error.get("__type") or "ServerException").rsplit("#", 1)[-1]
            raise ApiError(code, str(error.get("message") or ""), int(reply.get("status") or 500))
        result = reply.get("result")
        if not isinstance(result, dict):
            raise TransportError("session answer without a result object")
        return result

    async def close(self) -> None:
        if self._conn is not None:
            await self._end(self._conn, "session closed")

    async def _end(self, conn: _Connection, why: str) -> None:
        if self._conn is conn:
            self._conn = None
        await conn.end(why)

    def _expire(self, conn: _Connection, answer: asyncio.Future[dict[str, Any]], timeout: float) -> None:
        """A call got no answer in time: the connection may be dead, so it goes too."""
        if not answer.done():
            answer.set_exception(TransportError(f"no answer on the session within {timeout:.0f}s"))
            conn.closer = asyncio.ensure_future(self._end(conn, "a call on the session timed out"))

    async def _open(self, credentials: sigv4.Credentials) -> _Connection:
        async with self._opening:
            conn = self._conn
            if conn is not None and conn.usable and conn.signer == credentials:
                return conn  # another call opened it meanwhile
            if conn is not None:
                await self._end(conn, "session re-opened with other credentials")
            headers = sigv4.sign(
                method="GET",
                host=self.host,
                path=PATH,
                headers={},
                body=b"",
                credentials=credentials,
                region=self.region,
                service=self.service,
            )
            headers.pop("Host", None)  # aiohttp sends the same Host itself
            try:
                ws = await self._http().ws_connect(
                    self.url,
                    headers=headers,
                    max_msg_size=MAX_MESSAGE,
                    timeout=aiohttp.ClientWSTimeout(ws_close=10),
                )
            except aiohttp.WSServerHandshakeError as e:
                if e.status == 404:
                    raise SessionUnsupported(f"{self.url}: HTTP 404") from e
                code = e.headers.get("x-amzn-ErrorType") if e.headers else None
                if code:
                    raise ApiError(code, e.message, e.status) from e
                raise TransportError(f"session refused: HTTP {e.status} {e.message}") from e
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise TransportError(f"{type(e).__name__}: {e}") from e
            conn = self._conn = _Connection(ws, credentials)
            conn.reader = asyncio.create_task(self._read(conn), name="agent-session-reader")
            return conn

    async def _read(self, conn: _Connection) -> None:
        why = "session closed by the server"
        try:
            async for message in conn.ws:
                if message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    try:
                        reply = orjson.loads(message.data)
                    except ValueError:
                        why = "session answer is not JSON"
                        break
                    call_id = reply.get("id") if isinstance(reply, dict) else None
                    waiting = conn.pending.get(call_id) if isinstance(call_id, int) else None
                    if waiting is not None and not waiting.done():
                        waiting.set_result(reply)
                elif message.type is aiohttp.WSMsgType.ERROR:
                    why = f"session error: {conn.ws.exception()}"
                    break
        except (aiohttp.ClientError, OSError) as e:
            why = f"session lost: {type(e).__name__}: {e}"
        finally:
            await self._end(conn, why)
