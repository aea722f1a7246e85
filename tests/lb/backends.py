"""Small HTTP servers on loopback addresses that answer with their id: targets for load-balancer tests.

``/`` answers the server's id; ``/health`` answers 200 (or what ``health_status`` says); ``/slow``
answers after ``slow_seconds``; any other path answers ``<id> <path>``. Every response names the
peer address it came from in ``X-Peer`` (the load balancer's source address).
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_hosts = itertools.count(1)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy closes its check connections with a reset; that is not an error here


class Backend:
    def __init__(self, ident: str, host: str) -> None:
        self.id = ident
        self.health_status = 200
        self.slow_seconds = 3.0
        self.peers: set[str] = set()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                backend.peers.add(self.client_address[0])
                status, body = 200, backend.id
                if self.path == "/health":
                    status, body = backend.health_status, "health"
                elif self.path == "/slow":
                    time.sleep(backend.slow_seconds)
                elif self.path != "/":
                    body = f"{backend.id} {self.path}"
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Peer", self.client_address[0])
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _QuietServer((host, 0), Handler)
        self.host, self.port = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_backend(ident: str) -> Backend:
    """A backend on its own address of 127.0.40.0/24 (and above), on an ephemeral port."""
    n = next(_hosts)
    return Backend(ident, f"127.0.{40 + n // 250}.{n % 250 + 1}")


def get(
    host: str, port: int = 80, path: str = "/", timeout: float = 10.0, headers: dict[str, str] | None = None
):  # type: ignore[no-untyped-def]
    """(status, body) of one GET on a fresh connection."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()
