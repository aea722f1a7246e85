"""Dynamic host ports for bridge mode, from the agent's own range.

The range lies outside the kernel's ``ip_local_port_range`` (``default_range``), so an outgoing
connection's ephemeral port never takes a port the agent hands out. A port is given out only if the
agent holds no claim on it and it can be bound on the bind address right now (TCP and UDP as
asked); claims are released when the task stops and re-taken from adopted containers at restart.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

MIN_PORTS = 1000


class NoPortsAvailable(Exception):
    pass


def parse_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    low, high = int(lo), int(hi or lo)
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"bad port range {text!r}")
    return low, high


def default_range(proc: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """Above the ephemeral range when there is room, else below it."""
    try:
        lo, hi = (int(x) for x in proc.read_text().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    if 65535 - hi >= MIN_PORTS or (hi < 65535 and lo - 1024 < MIN_PORTS):
        return hi + 1, 65535
    return max(1024, lo - 10_000), lo - 1


def can_bind(address: str, port: int, protocol: str = "tcp") -> bool:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with contextlib.closing(socket.socket(family, kind)) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


class PortAllocator:
    def __init__(self, low: int, high: int, bind_address: str = "127.0.0.1") -> None:
        self.low, self.high = low, high
        self.bind_address = bind_address
        self._claims: dict[tuple[int, str], str] = {}  # (port, protocol) -> task arn
        self._next = low

    def claim(self, task_arn: str, port: int, protocol: str = "tcp") -> None:
        """Record a port the task already holds (re-adoption, static host ports)."""
        self._claims[(port, protocol)] = task_arn

    def allocate(self, task_arn: str, protocol: str = "tcp") -> int:
        size = self.high - self.low + 1
        for _ in range(size):
            port = self._next
            self._next = self.low if port >= self.high else port + 1
            if (port, protocol) in self._claims:
                continue
            if can_bind(self.bind_address, port, protocol):
                self._claims[(port, protocol)] = task_arn
                return port
        raise NoPortsAvailable(f"no free host port in {self.low}-{self.high}")

    def release(self, task_arn: str) -> None:
        for key in [k for k, owner in self._claims.items() if owner == task_arn]:
            del self._claims[key]

    def held(self, task_arn: str) -> list[int]:
        return sorted(p for (p, _), owner in self._claims.items() if owner == task_arn)
