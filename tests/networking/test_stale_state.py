"""What a killed server leaves on the host (its nat table, its load balancers' /32 addresses on the
subnet bridges) is removed by the next server before it places an address; a live server's is not."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from dockyard.lb.vpc import SubnetAddresses, nat_script, placed_in, reap_stale, stale_tables

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
