"""uvicorn's httptools HTTP/1.1 protocol, writing each response's head together with its body.

uvicorn writes the head (status line and headers) when the app sends ``http.response.start`` and
the body when it sends ``http.response.body``: two socket writes for every answer, the first of
which only a body can follow. The ASGI spec lets a protocol server hold the head until the first
body message (its "Response Start" event), so this protocol holds it there and hands the socket the
head and the first body bytes as one write. Everything else (parsing, keep-alive, flow control,
upgrades) is uvicorn's.

Used as uvicorn's ``http=`` protocol class (``cli/server_cmd.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _HeadWithBody:
    """One response's view of the connection's transport: the first write made after the response
    started (its head) waits for the next one (its first body bytes) and leaves with it. A held head
    goes out before the transport closes (an app that started a response and never finished it)."""

    __slots__ = ("_cycle", "_head", "_held", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._held = False

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif not self._held and self._cycle.response_started:
            self._held = True
            self._head = data
        else:
            self._transport.write(data)  # before the response started: "100 Continue"

    def writelines(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def close(self) -> None:
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose responses reach the socket in one write when their body comes
    in one message (``_HeadWithBody``)."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        # a cycle made just now (an upgrade makes none); a HEAD answer writes no body to join
        if cycle is not None and cycle is not before and cycle.scope["method"] != "HEAD":
            cycle.transport = _HeadWithBody(self.transport, cycle)  # type: ignore[assignment]
