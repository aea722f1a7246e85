"""Agent sessions: an agent's calls over one WebSocket instead of one HTTP request each.

ECS agents talk to the control plane over a long-lived WebSocket (ACS); a Dockyard agent may do
the same (docs/agent-protocol.md section 8). ``GET /_dockyard/agent/v1`` with ``Upgrade: websocket``,
SigV4-signed like any call (signing name ``ecs``, empty body), opens a session for the signer. Each
binary (or text) message is one call::

    -> {"id": 7, "target": "DockyardAgentV1.Poll", "body": {...}}
    <- {"id": 7, "result": {...}, "requestId": "..."}
    <- {"id": 7, "status": 400, "error": {"__type": "...", "message": "..."}, "requestId": "..."}

A call is exactly the operation ``POST /`` would run for the same principal (``EcsApi.call``:
authorization, validation, use case), so a session keeps nothing but who signed it: the protocol
stays level-triggered and any server replica can answer any call. Calls run concurrently and are
answered in any order (a waiting Poll does not hold a Report back). What a session saves is the
per-request part: the HTTP request and the signature check, done once at the upgrade.

An upgrade that fails authentication is refused with the AWS error as an HTTP response (status,
``x-amzn-ErrorType`` header, ``{"__type", "message"}`` body); a message that is not a call object
is answered with ``SerializationException`` (its ``id`` when one could be read).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

import orjson

from dockyard.api.calls import JSON_CONTENT_TYPE, Caller, lowered, new_request_id
from dockyard.domain.errors import DockyardError, SerializationError

log = logging.getLogger("dockyard.api.agent_session")

PATH = "/_dockyard/agent/v1"
MAX_CALLS_IN_FLIGHT = 64  # per session: an agent has a Poll and a Report or two in flight


class Calls(Protocol):
    """What a session needs of the ECS JSON protocol (``app.EcsApi``)."""

    async def verify(
        self, method: str, raw_path: bytes, query: bytes, headers: dict[str, str], body: bytes
    ) -> Caller: ...

    async def outcome(
        self, call: Coroutine[Any, Any, dict[str, Any]], request_id: str
    ) -> tuple[int, dict[str, Any]]: ...

    def operation_of(self, target: str) -> tuple[str, bool]: ...

    async def call(
        self, caller: Caller, operation: str, modelled: bool, params: dict[str, Any], request_id: str
    ) -> dict[str, Any]: ...


async def serve(api: Calls, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """One agent session, from the ASGI ``websocket.connect`` to its disconnect."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    headers = lowered(scope["headers"])
    request_id = new_request_id()
    status, caller = await api.outcome(_authenticate(api, scope, headers), request_id)
    if status != 200:
        await _refuse(scope, send, status, caller, request_id)
        return
    await send({"type": "websocket.accept"})
    session = Caller(caller["principal"], caller["region"])
    calls: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            break  # websocket.disconnect: calls in flight finish; their answers go nowhere
        data = message.get("bytes")
        if data is None:
            data = (message.get("text") or "").encode()
        await gate.acquire()
        call = asyncio.create_task(_call(api, session, data, send))
        calls.add(call)
        call.add_done_callback(calls.discard)
        call.add_done_callback(lambda _: gate.release())


async def _authenticate(api: Calls, scope: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    raw_path = scope.get("raw_path") or scope["path"].encode()
    caller = await api.verify("GET", raw_path, scope.get("query_string", b""), headers, b"")
    return {"principal": caller.principal, "region": caller.region}


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


async def _call(api: Calls, caller: Caller, data: bytes, send: Any) -> None:
    request_id = new_request_id()
    call_id: Any = None
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        frame = SerializationError(f"Message is not valid JSON: {e}")
    if isinstance(frame, dict):
        call_id = frame.get("id")
    status, payload = await api.outcome(_run(api, caller, frame, request_id), request_id)
    answer: dict[str, Any] = {"id": call_id, "requestId": request_id}
    if status == 200:
        answer["result"] = payload
    else:
        answer["status"], answer["error"] = status, payload
    try:
        await send({"type": "websocket.send", "bytes": orjson.dumps(answer)})
    except Exception as e:  # the agent went away meanwhile: it calls again on a new session
        log.debug("session answer %s not sent: %s", request_id, e)


async def _run(api: Calls, caller: Caller, frame: object, request_id: str) -> dict[str, Any]:
    if isinstance(frame, DockyardError):
        raise frame
    if not isinstance(frame, dict):
        raise SerializationError("Message must be a JSON object {id, target, body}.")
    target, body = frame.get("target"), frame.get("body", {})
    if not isinstance(target, str) or not isinstance(body, dict):
        raise SerializationError("Message must carry a string target and an object body.")
    operation, modelled = api.operation_of(target)
    return await api.call(caller, operation, modelled, body, request_id)
