"""What a killed server leaves on the host (its nat table, its load balancers' /32 addresses on the
subnet bridges) is removed by the next server when it starts (its load-balancer reconciler), and
again before it places an address; a live server's is not."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from dockyard.clock import SystemClock
from dockyard.lb.reconciler import LoadBalancerReconciler
from dockyard.lb.settings import LbSettings
from dockyard.lb.vpc import SubnetAddresses, nat_script, placed_in, reap_stale, stale_tables
from dockyard.store.memory import MemoryStore

LISTING = "table ip nat\ntable ip dockyard_lb_12\ntable ip filter\ntable ip dockyard_lb_34\n"


def test_stale_tables_and_what_they_placed() -> None:
    assert stale_tables(LISTING, lambda pid: pid == 34) == ["dockyard_lb_12"]
    assert stale_tables(LISTING, lambda pid: True) == []
    script = nat_script("dockyard_lb_12", {"10.213.0.7": "br-0123456789ab", "10.213.0.8": "br-ffff"})
    assert placed_in(script) == {"10.213.0.7": "br-0123456789ab", "10.213.0.8": "br-ffff"}
    assert placed_in(nat_script("dockyard_lb_12", {})) == {}


needs_nft = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None, reason="needs root, nft and ip (scripts/setup.sh)"
)


def _sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


@needs_nft
async def test_a_killed_servers_table_and_address_are_removed() -> None:
    dead = 4_000_000 + int(uuid.uuid4().hex[:5], 16)  # above pid_max: no process has it
    live = os.getpid()
    device = "dyt" + uuid.uuid4().hex[:8]
    address = "10.213.255.250"
    stale, mine = f"dockyard_lb_{dead}", f"dockyard_lb_x{uuid.uuid4().hex[:6]}"
    assert _sh("ip", "link", "add", device, "type", "bridge").returncode == 0
    try:
        assert _sh("ip", "addr", "add", f"{address}/32", "dev", device).returncode == 0
        for table in (stale, mine):
            done = subprocess.run(
                ["nft", "-f", "-"], input=nat_script(table, {address: device}), text=True, capture_output=True
            )
            assert done.returncode == 0, done.stderr
        # a server placing its first address reaps first (only tables of processes that are gone)
        addresses = SubnetAddresses(table=f"dockyard_lb_{live}")
        assert stale in await reap_stale()
        assert stale not in _sh("nft", "list", "tables", "ip").stdout
        assert mine in _sh("nft", "list", "tables", "ip").stdout  # not a dockyard_lb_<pid> name: not ours
        assert f" {address}/32 " not in _sh("ip", "-4", "-o", "addr", "show", "dev", device).stdout
        await addresses.close()
    finally:
        _sh("ip", "link", "del", device)
        _sh("nft", "delete", "table", "ip", stale)
        _sh("nft", "delete", "table", "ip", mine)


@needs_nft
async def test_a_starting_server_removes_a_killed_servers_table(tmp_path: Path) -> None:
    """Before any load balancer exists (no address placed yet), the reconciler's start reaps."""
    dead = 4_000_000 + int(uuid.uuid4().hex[:5], 16)
    device = "dyt" + uuid.uuid4().hex[:8]
    address = "10.213.255.249"
    stale = f"dockyard_lb_{dead}"
    assert _sh("ip", "link", "add", device, "type", "bridge").returncode == 0
    settings = LbSettings(hosts_file=None, state_dir=tmp_path / "lb")
    running: asyncio.Task[None] | None = None
    try:
        assert _sh("ip", "addr", "add", f"{address}/32", "dev", device).returncode == 0
        done = subprocess.run(
            ["nft", "-f", "-"], input=nat_script(stale, {address: device}), text=True, capture_output=True
        )
        assert done.returncode == 0, done.stderr
        running = asyncio.create_task(LoadBalancerReconciler(MemoryStore(), SystemClock(), settings).run())
        deadline = time.monotonic() + 10
        while stale in _sh("nft", "list", "tables", "ip").stdout:
            assert time.monotonic() < deadline, "the stale table outlived the server's start"
            assert not running.done(), running
            await asyncio.sleep(0.05)
        assert f" {address}/32 " not in _sh("ip", "-4", "-o", "addr", "show", "dev", device).stdout
    finally:
        if running is not None:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        _sh("ip", "link", "del", device)
        _sh("nft", "delete", "table", "ip", stale)
