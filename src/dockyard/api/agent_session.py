"""Agent sessions: an agent's calls over one WebSocket instead of one HTTP request each.

ECS agents talk to the control plane over a long-lived WebSocket (ACS); a Dockyard agent may do
the same (docs/agent-protocol.md section 8). ``GET /_dockyard/agent/v1`` with ``Upgrade: websocket``,
SigV4-signed like any call (signing name ``ecs``, empty body), opens a session for the signer. Each
binary (or UTF-8 text) message is one call::

    -> {"id": 7, "target": "DockyardAgentV1.Poll", "body": {...}}
    <- {"id": 7, "result": {...}, "requestId": "..."}
    <- {"id": 7, "status": 400, "error": {"__type": "...", "message": "..."}, "requestId": "..."}

A call is exactly the operation ``POST /`` would run for the same principal (``EcsApi.call``:
authorization, validation, use case), so a session keeps nothing but who signed it: the protocol
stays level-triggered and any server replica can answer any call. Only the agent operations
(``DockyardAgentV1.*``) are taken. Calls run concurrently and are answered in any order (a waiting
Poll does not hold a Report back). What a session saves is the per-request part: the HTTP request
and the signature check, done once at the upgrade.

The signature of an upgrade is good once (a replayed upgrade is refused like a bad signature) and a
session lasts at most ``MAX_AGE`` seconds: the agent opens a new one well before (the client
rotates after ``client.session.ROTATE_AFTER``), so a key pair that is no longer valid stops working
within that time. An upgrade that fails authentication is refused with the AWS error as an HTTP
response (status, ``x-amzn-ErrorType`` header, ``{"__type", "message"}`` body); a message that is
not a call object is answered with ``SerializationException`` (its ``id`` when one could be read).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine
from functools import partial
from typing import Any, Protocol

import orjson

from dockyard.api.calls import AGENT_TARGET_PREFIX, JSON_CONTENT_TYPE, Caller, lowered, new_request_id
from dockyard.domain.errors import InvalidSignature, SerializationError, UnknownOperation

log = logging.getLogger("dockyard.api.agent_session")

PATH = "/_dockyard/agent/v1"
SIGNING_NAME = "ecs"
MAX_CALLS_IN_FLIGHT = 64  # per session: an agent has a Poll and a Report or two in flight
MAX_MESSAGE = 16 * 1024 * 1024  # bytes per message, both ways (uvicorn's ws_max_size)
MAX_AGE = 3600.0  # seconds a session may last (agents rotate theirs after 15 minutes)
DRAIN_SECONDS = 15.0  # how long calls in flight may finish after their session ended


class Calls(Protocol):
    """What a session needs of the ECS JSON protocol (``app.EcsApi``)."""

    async def verify(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: dict[str, str],
        body: bytes,
        expected_service: str | None = None,
    ) -> Caller: ...

    async def outcome(
        self, call: Coroutine[Any, Any, dict[str, Any]], request_id: str
    ) -> tuple[int, dict[str, Any]]: ...

    def operation_of(self, target: str) -> tuple[str, bool]: ...

    async def call(
        self, caller: Caller, operation: str, modelled: bool, params: dict[str, Any], request_id: str
    ) -> dict[str, Any]: ...


class Sessions:
    """The server's agent sessions: ``serve`` runs one, from ``websocket.connect`` to its end."""

    def __init__(self, api: Calls, *, max_age: float = MAX_AGE, window_seconds: float = 900.0) -> None:
        self.api = api
        self.max_age = max_age
        self._seen = _SeenSignatures(2 * window_seconds)

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        request_id = new_request_id()
        status, caller = await self.api.outcome(self._authenticate(scope), request_id)
        if status != 200:
            await _refuse(scope, send, status, caller, request_id)
            return
        await send({"type": "websocket.accept"})
        session: Caller = caller["caller"]
        calls: set[asyncio.Task[None]] = set()
        gate = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)
        loop = asyncio.get_running_loop()
        ending = loop.call_later(self.max_age * random.uniform(0.9, 1.0), _close, send, loop)
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    break  # websocket.disconnect
                data = message.get("bytes")
                if data is None:
                    data = (message.get("text") or "").encode()
                await gate.acquire()
                call = asyncio.create_task(_call(self.api, session, data, send))
                calls.add(call)
                call.add_done_callback(partial(_finished, calls, gate))
        finally:
            ending.cancel()
            if calls:  # they finish (their answers go nowhere) before the server may close the store
                await asyncio.wait(list(calls), timeout=DRAIN_SECONDS)

    async def _authenticate(self, scope: dict[str, Any]) -> dict[str, Any]:
        headers = lowered(scope["headers"])
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        caller = await self.api.verify("GET", raw_path, query, headers, b"", expected_service=SIGNING_NAME)
        if not self._seen.first_time(headers.get("authorization", "")):
            raise InvalidSignature("This request signature was already used to open a session.")
        return {"caller": caller}  # (``outcome`` maps what fails here to the AWS error)


class _SeenSignatures:
    """Upgrade signatures used within the last ``keep`` seconds (longer than the signature window,
    so a replay is refused for as long as its date would be accepted)."""

    def __init__(self, keep: float) -> None:
        self.keep = keep
        self._until: dict[str, float] = {}

    def first_time(self, authorization: str) -> bool:
        now = time.monotonic()
        if len(self._until) > 4096:
            self._until = {k: t for k, t in self._until.items() if t > now}
        if self._until.get(authorization, 0.0) > now:
            return False
        self._until[authorization] = now + self.keep
        return True


def _close(send: Any, loop: asyncio.AbstractEventLoop) -> None:
    """The session reached its age: close it (the agent's calls in flight fail and are retried)."""
    loop.create_task(_send_close(send))


async def _send_close(send: Any) -> None:
    try:
        await send({"type": "websocket.close", "code": 1000, "reason": "session age"})
    except Exception as e:  # already gone
        log.debug("session close not sent: %s", e)


async def _refuse(
    scope: dict[str, Any], send: Any, status: int, error: dict[str, Any], request_id: str
) -> None:
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})  # policy violation: no body possible
        return
    body = orjson.dumps(error)
    headers = [
        (b"content-type", JSON_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-amzn-requestid", request_id.encode()),
        (b"x-amzn-errortype", str(error["__type"]).encode("latin-1")),
    ]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


def _finished(calls: set[asyncio.Task[None]], gate: asyncio.Semaphore, call: asyncio.Task[None]) -> None:
    calls.discard(call)
    gate.release()


async def _call(api: Calls, caller: Caller, data: bytes, send: Any) -> None:
    request_id = new_request_id()
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        frame = SerializationError(f"Message is not valid JSON: {e}")
    call_id = frame.get("id") if isinstance(frame, dict) else None
    status, payload = await api.outcome(_run(api, caller, frame, request_id), request_id)
    answer: dict[str, Any] = {"id": call_id, "requestId": request_id}
    if status == 200:
        answer["result"] = payload
    else:
        answer["status"], answer["error"] = status, payload
    try:
        await send({"type": "websocket.send", "bytes": orjson.dumps(answer)})
    except Exception as e:  # the agent went away meanwhile (or the answer would not encode)
        log.debug("session answer %s not sent: %s", request_id, e)


async def _run(api: Calls, caller: Caller, frame: object, request_id: str) -> dict[str, Any]:
    """The call a message asks for; what is wrong with the message itself is raised as its error."""
    if isinstance(frame, SerializationError):
        raise frame
    if not isinstance(frame, dict):
        raise SerializationError("Message must be a JSON object {id, target, body}.")
    target, body = frame.get("target"), frame.get("body", {})
    if not isinstance(target, str) or not isinstance(body, dict):
        raise SerializationError("Message must carry a string target and an object body.")
    if not target.startswith(AGENT_TARGET_PREFIX):
        raise UnknownOperation(f"{target[:200]!r} is not taken on an agent session: send it as POST /.")
    operation, modelled = api.operation_of(target)
    return await api.call(caller, operation, modelled, body, request_id)
