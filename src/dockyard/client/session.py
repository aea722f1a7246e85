"""An agent session: the agent's calls over one WebSocket (docs/agent-protocol.md section 8).

    AgentSession.call(target, body, credentials, timeout) -> dict    one call, answered by id
      SessionUnsupported      the server (or a proxy) does not take the upgrade: use POST /
      ApiError                the server refused the upgrade or answered the call with an error
      TransportError          no session or no answer within the timeout

The session is opened on the first call, SigV4-signed with the credentials that call brings, within
that call's timeout. A call with other credentials (the agent registered again) opens a new session
and the old one ends: its calls in flight fail. After ``ROTATE_AFTER`` seconds new calls go on a new
session while the old one finishes its calls in flight and closes (the server ends sessions after
an hour and takes each upgrade signature once). Calls go out concurrently; a reader resolves each
by its ``id``. When the connection ends, every call in flight on it fails with ``TransportError``
(a call the server never answered because it closed the session normally is sent once more on a
new session first); the agent's loops retry as they do for HTTP, and the retry opens a new session.

What counts as "no sessions here": an upgrade answered 404, 400 ``UnknownOperationException`` (a
Dockyard server from before sessions) or any non-101 answer that is not an AWS error (a proxy).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from dockyard.client import sigv4
from dockyard.client.errors import ApiError, TransportError

log = logging.getLogger("dockyard.client.session")

PATH = "/_dockyard/agent/v1"  # api/agent_session.PATH
MAX_MESSAGE = 16 * 1024 * 1024  # api/agent_session.MAX_MESSAGE
ROTATE_AFTER = 900.0  # seconds before new calls go on a new session (the server allows an hour)
NONCE_HEADER = "X-Dockyard-Nonce"  # signed: the server takes each upgrade signature once
NORMAL_CLOSE = frozenset({1000, 1001, 1012})  # normal, going away, service restart


class SessionUnsupported(Exception):
    """The server does not offer agent sessions."""


class _Closed(TransportError):
    """The server closed the session normally before answering: the call may go again."""


class _Connection:
    """One open WebSocket, who signed it, and the calls waiting for an answer on it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, signer: sigv4.Credentials, opened: float) -> None:
        self.ws = ws
        self.signer = signer
        self.opened = opened
        self.retiring = False  # no new calls; closes when the last call in flight is answered
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.closer: asyncio.Future[None] | None = None

    @property
    def usable(self) -> bool:
        return not self.ws.closed and not self.retiring

    async def end(self, why: str, error: type[TransportError] = TransportError) -> None:
        """Every call waiting on this connection fails; the socket closes."""
        for answer in self.pending.values():
            if not answer.done():
                answer.set_exception(error(why))
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
        rotate_after: float = ROTATE_AFTER,
    ) -> None:
        parts = urlsplit(endpoint)
        scheme = "wss" if parts.scheme == "https" else "ws"
        self.url = f"{scheme}://{parts.netloc}{PATH}"
        self.host = parts.netloc
        self.region = region
        self.service = service
        self.rotate_after = rotate_after
        self._http = http
        self._conn: _Connection | None = None
        self._ids = itertools.count(1)
        self._opening = asyncio.Lock()

    async def call(
        self, target: str, body: dict[str, Any], credentials: sigv4.Credentials, timeout: float
    ) -> dict[str, Any]:
        try:
            return await self._call_once(target, body, credentials, timeout)
        except _Closed:  # closed normally (server restart, session age) before answering: once more
            return await self._call_once(target, body, credentials, timeout)

    async def _call_once(
        self, target: str, body: dict[str, Any], credentials: sigv4.Credentials, timeout: float
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is None or not conn.usable or conn.signer != credentials or self._old(conn, loop):
            try:
                async with asyncio.timeout(timeout):
                    conn = await self._open(credentials)
            except TimeoutError as e:
                raise TransportError(f"no session opened within {timeout:.0f}s") from e
        call_id = next(self._ids)
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
            if conn.retiring and not conn.pending and conn.closer is None:
                conn.closer = asyncio.ensure_future(conn.end("session rotated"))
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            code = str(error.get("__type") or "ServerException").rsplit("#", 1)[-1]
            raise ApiError(code, str(error.get("message") or ""), int(reply.get("status") or 500))
        result = reply.get("result")
        if not isinstance(result, dict):
            raise TransportError("session answer without a result object")
        return result

    def _old(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> bool:
        return loop.time() - conn.opened > self.rotate_after

    async def close(self) -> None:
        if self._conn is not None:
            await self._end(self._conn, "session closed")

    async def _end(self, conn: _Connection, why: str, error: type[TransportError] = TransportError) -> None:
        if self._conn is conn:
            self._conn = None
        await conn.end(why, error)

    def _expire(self, conn: _Connection, answer: asyncio.Future[dict[str, Any]], timeout: float) -> None:
        """A call got no answer in time: the connection may be dead, so it goes too."""
        if not answer.done():
            answer.set_exception(TransportError(f"no answer on the session within {timeout:.0f}s"))
            conn.closer = asyncio.ensure_future(self._end(conn, "a call on the session timed out"))

    async def _open(self, credentials: sigv4.Credentials) -> _Connection:
        async with self._opening:
            loop = asyncio.get_running_loop()
            conn = self._conn
            if conn is not None and conn.usable and conn.signer == credentials and not self._old(conn, loop):
                return conn  # another call opened it meanwhile
            if conn is not None:
                self._conn = None
                if conn.ws.closed:
                    await conn.end("session closed")
                elif conn.signer != credentials:
                    await conn.end("session re-opened with other credentials")
                else:  # rotation: its calls in flight finish first
                    conn.retiring = True
                    if not conn.pending:
                        await conn.end("session rotated")
            headers = sigv4.sign(
                method="GET",
                host=self.host,
                path=PATH,
                headers={NONCE_HEADER: secrets.token_hex(8)},  # two upgrades in one second differ
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
                code = e.headers.get("x-amzn-ErrorType") if e.headers else None
                if e.status == 404 or not code or code == "UnknownOperationException":
                    raise SessionUnsupported(f"{self.url}: HTTP {e.status} {code or ''}".strip()) from e
                raise ApiError(code, f"session refused (HTTP {e.status})", e.status) from e
            except (aiohttp.ClientError, OSError) as e:
                raise TransportError(f"{type(e).__name__}: {e}") from e
            conn = self._conn = _Connection(ws, credentials, loop.time())
            conn.reader = asyncio.create_task(self._read(conn), name="agent-session-reader")
            return conn

    async def _read(self, conn: _Connection) -> None:
        why, error = "session closed by the server", TransportError
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
            else:
                if conn.ws.close_code in NORMAL_CLOSE:
                    why, error = f"session closed by the server ({conn.ws.close_code})", _Closed
        except (aiohttp.ClientError, OSError) as e:
            why = f"session lost: {type(e).__name__}: {e}"
        finally:
            await self._end(conn, why, error)
