"""The HTTP protocol (api/http_protocol.py): a response's head leaves with its body in one write,
and what reaches the client is byte for byte what uvicorn's own protocol sends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from dockyard.api.http_protocol import OneWriteHttpToolsProtocol

POST = b"POST /%s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/fail":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"9")]})
        raise RuntimeError("failed after the response started")
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"b"})
        return
    answer = b"echo:" + body
    length = str(len(answer)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]})
    await send({"type": "http.response.body", "body": answer})


class Transport:
    """What the protocol writes, one entry per ``write``."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


async def exchange(protocol_class: type, request: bytes, *, responses: int = 1) -> Transport:
    config = uvicorn.Config(app=app, http=protocol_class, log_config=None, lifespan="off")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(200):
        if transport.closed or protocol.server_state.total_requests >= responses:
            break
        await asyncio.sleep(0.005)
    protocol.connection_lost(None)
    return transport


def stable(data: bytes) -> bytes:
    """The response bytes without the ``date`` header's value (it changes every second)."""
    return b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(b"date: "))


async def test_a_response_with_its_body_in_one_message_is_one_write() -> None:
    transport = await exchange(OneWriteHttpToolsProtocol, POST % b"")
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\necho:abc")


@pytest.mark.parametrize(
    ("request_bytes", "responses"),
    [
        (POST % b"" + POST % b"again", 2),  # keep-alive, pipelined
        (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", 1),
        (b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", 1),
        (b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n", 1),
        (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 1),
        (b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", 1),
    ],
)
async def test_the_client_gets_what_uvicorns_protocol_sends(request_bytes: bytes, responses: int) -> None:
    ours = await exchange(OneWriteHttpToolsProtocol, request_bytes, responses=responses)
    theirs = await exchange(HttpToolsProtocol, request_bytes, responses=responses)
    assert stable(b"".join(ours.writes)) == stable(b"".join(theirs.writes))
    assert ours.closed == theirs.closed
