"""Load-balancing settings of a server, and the choice of a load balancer's listen address."""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

EXTRAS_KEY = "elb"  # where the server puts its LbSettings in ``Env.extras``


@dataclass(frozen=True)
class LbSettings:
    # Listen (and source) addresses of load balancers come from this network; loopback by default.
    network: str = "127.100.0.0/16"
    # DNSName = <name>-<digits>.<region>.<dns_suffix>, written to ``hosts_file`` when it is set.
    dns_suffix: str = "elb.dockyard.internal"
    hosts_file: str | None = "/etc/hosts"
    # Where each load balancer's HAProxy keeps its files (one directory per load balancer).
    state_dir: Path = Path("lb")
    haproxy: str = "/usr/sbin/haproxy"
    # How often the reconciler reads HAProxy's health observations and checks its processes.
    poll_interval: float = 0.5
    maxconn: int = 4096
    nbthread: int | None = None
    # HAProxy's connect timeout toward targets (see lb/config.py); raise it for targets on other hosts.
    connect_timeout_ms: int = 100
    # Source ports HAProxy connects to targets from when its source address is on loopback (see
    # ``config.source_arg`` for why): "auto" is 1024 up to just below the kernel's ephemeral range,
    # "LOW-HIGH" a range, "kernel" (or "") lets the kernel pick them from its ephemeral range.
    source_ports: str = "auto"


def resolve_source_ports(value: str, ephemeral_low: int | None) -> tuple[int, int] | None:
    """``LbSettings.source_ports`` as a range (PURE; ``ephemeral_low``: the kernel's first
    ephemeral port, None when unknown). Raises ValueError for a malformed value."""
    value = value.strip()
    if value in ("", "kernel"):
        return None
    if value == "auto":
        return (1024, ephemeral_low - 1) if ephemeral_low is not None and ephemeral_low > 1024 else None
    low, sep, high = value.partition("-")
    if not sep or not low.isdigit() or not high.isdigit() or not 0 < int(low) <= int(high) <= 65535:
        raise ValueError(f"source ports must be auto, kernel or LOW-HIGH (1-65535), not {value!r}")
    return int(low), int(high)


def settings_of(extras: dict[str, object]) -> LbSettings:
    found = extras.get(EXTRAS_KEY)
    return found if isinstance(found, LbSettings) else LbSettings()


def pick_address(network: str, used: Container[str], seed: str) -> str | None:
    """A free host address of ``network``, probing from a point derived from ``seed`` (PURE).

    Starting from a hash spreads concurrent creators over the range so they rarely contend for
    the same create-only claim.
    """
    net = ipaddress.ip_network(network, strict=False)
    size = net.num_addresses
    if size <= 2:
        candidates = [net.network_address] if size == 1 else list(net)
        return next((str(a) for a in candidates if str(a) not in used), None)
    hosts = size - 2  # skip the network and broadcast addresses
    start = zlib.crc32(seed.encode()) % hosts
    base = int(net.network_address) + 1
    for i in range(hosts):
        candidate = str(ipaddress.ip_address(base + (start + i) % hosts))
        if candidate not in used:
            return candidate
    return None
