"""Load balancers' addresses in their subnets: on the host side of each subnet's Docker network.

A load balancer that names subnets has an address in its first one (claimed like a task's, see
``services/load_balancers.py``). Its HAProxy connects to targets from that address, so awsvpc tasks
on the subnet's network see the load balancer's own address, which security groups that name the
load balancer's groups admit. The address goes on the network's bridge on this host::

    docker network dockyard-subnet-…   created if no agent made it yet (same settings as agents)
    ip addr replace <address>/32 dev br-<network id[:12]>

plus an nft rule that keeps Docker from masquerading its connections (``nat_script``).

The bridge already carries the subnet's gateway with its /24 (or whatever) route, so connections
from the /32 leave through the bridge and replies come back to it (the host answers ARP for its
addresses). The host itself still connects from the gateway address, which the tasks' groups need
not admit. Addresses are removed when their load balancer goes away and when the server stops.
A server killed with -9 leaves its table and addresses behind: the next server to place an address
first removes every ``dockyard_lb_<pid>`` table whose process is gone, and the addresses its rules
name (``stale_tables``, ``placed_in``).
Docker flushes addresses it did not set when a bridge's first container joins, and a network may be
removed and made again: placed addresses are checked twice a second and placed again if gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import aiodocker
from aiodocker.exceptions import DockerError

from dockyard.domain.task_eni import subnet_network_config
from dockyard.lb.model import SubnetAttachment

log = logging.getLogger("dockyard.lb")

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
TABLE_PREFIX = "dockyard_lb_"
CHECK_EVERY = 0.5  # seconds between checks that a placed address is still there
RETRY_AFTER = 5.0  # seconds before trying again to place an address that could not be placed


class PlacementError(Exception):
    """The address could not be put on its subnet's bridge."""


_TABLE = re.compile(rf"^table ip ({TABLE_PREFIX}(\d+))\b", re.M)
_PLACED = re.compile(r'ip saddr ([0-9.]+) oifname "([^"]+)" snat')


def stale_tables(listing: str, alive: Callable[[int], bool]) -> list[str]:
    """The ``dockyard_lb_<pid>`` tables of ``nft list tables ip`` whose server is gone (PURE)."""
    return [m.group(1) for m in _TABLE.finditer(listing) if not alive(int(m.group(2)))]


def placed_in(table_listing: str) -> dict[str, str]:
    """address -> bridge of the load balancer addresses a table's rules name (PURE)."""
    return {m.group(1): m.group(2) for m in _PLACED.finditer(table_listing)}


def server_alive(pid: int) -> bool:
    """Whether ``pid`` is a running dockyard process (not one that reused a dead server's pid)."""
    if pid == os.getpid():
        return True
    try:
        return b"dockyard" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def _output(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    return out.decode(errors="replace") if proc.returncode == 0 else ""


async def reap_stale(alive: Callable[[int], bool] = server_alive) -> list[str]:
    """Remove what killed servers left: their nat tables and the addresses these name. The tables
    removed (never raises: a machine without nft has nothing to remove)."""
    removed = []
    try:
        for table in stale_tables(await _output("nft", "list", "tables", "ip"), alive):
            for address, bridge in placed_in(await _output("nft", "list", "table", "ip", table)).items():
                try:
                    await ip("addr", "del", f"{address}/32", "dev", bridge)
                except PlacementError as e:  # gone with its bridge already
                    log.debug("%s", e)
            try:
                await nft(f"delete table ip {table}\n")
                removed.append(table)
            except PlacementError as e:  # another server removed it meanwhile
                log.debug("%s", e)
    except OSError as e:
        log.debug("no stale load balancer state removed: %s", e)
    if removed:
        log.info("removed what stopped servers left: %s", ", ".join(removed))
    return removed


def bridge_name(network: dict[str, object]) -> str:
    """The host interface of a Docker bridge network (PURE)."""
    options = network.get("Options") or {}
    named = options.get(BRIDGE_NAME_OPTION) if isinstance(options, dict) else None
    return str(named) if named else "br-" + str(network["Id"])[:12]


def nat_script(table: str, placed: dict[str, str]) -> str:
    """Our own ``ip`` nat table (PURE): connections from a load balancer's address keep it.

    Docker masquerades locally generated traffic leaving through a bridge (``fib saddr type local``,
    its hairpin rule) to the bridge's gateway address, which would hide the load balancer behind
    the host's address. An identity ``snat`` in a chain that runs just before Docker's (priority
    99 < srcnat 100) binds the connection first, so Docker's rule is not consulted for it."""
    lines = [f"table ip {table} {{}}", f"delete table ip {table}"]
    if placed:
        lines += [
            f"table ip {table} {{",
            "  chain postrouting {",
            "    type nat hook postrouting priority 99; policy accept;",
            *(
                f'    ip saddr {address} oifname "{bridge}" snat to {address}'
                for address, bridge in sorted(placed.items())
            ),
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


async def nft(script: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "nft",
        "-f",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate(script.encode())
    if proc.returncode != 0:
        raise PlacementError(f"nft: {err.decode(errors='replace').strip()}")


async def ip(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise PlacementError(f"ip {' '.join(args)}: {err.decode(errors='replace').strip()}")


class SubnetAddresses:
    def __init__(self, sys_net: Path = Path("/sys/class/net"), table: str | None = None) -> None:
        self.sys_net = sys_net
        self.table = table or f"{TABLE_PREFIX}{os.getpid()}"  # one per server process
        self._docker: aiodocker.Docker | None = None
        self._placed: dict[str, str] = {}  # address -> bridge device
        self._failed: dict[str, float] = {}  # address -> when placing it last failed
        self._checked: dict[str, float] = {}  # address -> when it was last seen on its bridge
        self._reaped = False

    async def ensure(self, att: SubnetAttachment) -> bool:
        """Whether ``att.address`` is on its bridge now (placing it if needed; never raises)."""
        if not self._reaped:  # before the first address: what killed servers left goes
            self._reaped = True
            await reap_stale()
        bridge = self._placed.get(att.address)
        if bridge is not None and await self._still_there(att.address, bridge):
            return True
        self._placed.pop(att.address, None)
        failed = self._failed.get(att.address)
        if failed is not None and time.monotonic() - failed < RETRY_AFTER:
            return False
        try:
            bridge = await self._bridge(att)
            await ip("addr", "replace", f"{att.address}/32", "dev", bridge)
            await nft(nat_script(self.table, {**self._placed, att.address: bridge}))
        except (DockerError, PlacementError, OSError) as e:
            self._failed[att.address] = time.monotonic()
            log.warning(
                "load balancer address %s could not be put on the network of %s (targets are reached "
                "from the loopback address instead): %s",
                att.address,
                att.subnet_id,
                e,
            )
            return False
        self._failed.pop(att.address, None)
        self._placed[att.address] = bridge
        self._checked[att.address] = time.monotonic()
        return True

    async def _still_there(self, address: str, bridge: str) -> bool:
        """Docker may flush a bridge's addresses (e.g. when the first container joins it) or
        remove the network: checked at most every ``CHECK_EVERY`` seconds."""
        now = time.monotonic()
        if now - self._checked.get(address, 0.0) < CHECK_EVERY:
            return True
        self._checked[address] = now
        if not (self.sys_net / bridge).exists():
            return False
        proc = await asyncio.create_subprocess_exec(
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            bridge,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        return f" {address}/32 " in out.decode(errors="replace")

    async def _bridge(self, att: SubnetAttachment) -> str:
        if self._docker is None:
            self._docker = aiodocker.Docker()
        try:
            network = await self._docker.networks.get(att.network_name)
        except DockerError as e:
            if e.status != 404:
                raise
            config = subnet_network_config(att.network_name, att.cidr, att.gateway, att.subnet_id)
            try:
                await self._docker.networks.create(config)
            except DockerError as e2:
                if e2.status != 409:
                    raise
            network = await self._docker.networks.get(att.network_name)
        return bridge_name(await network.show())

    async def release(self, address: str) -> None:
        self._failed.pop(address, None)
        self._checked.pop(address, None)
        bridge = self._placed.pop(address, None)
        if bridge is None:
            return
        try:
            await nft(nat_script(self.table, self._placed))
            await ip("addr", "del", f"{address}/32", "dev", bridge)
        except PlacementError as e:  # the bridge is gone already (and the address with it)
            log.debug("%s", e)

    async def close(self) -> None:
        for address in list(self._placed):
            await self.release(address)
        if self._docker is not None:
            docker, self._docker = self._docker, None
            await docker.close()
