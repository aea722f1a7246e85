"""Pause containers and subnet networks on the Docker Engine API.

A pause container is ``sleep`` from the host's static busybox in an image imported FROM scratch
(``dockyard/pause``). A few wait started (the warm pool), each in a namespace with no interface but
``lo`` (created on Docker's default bridge and disconnected from it before it starts, so no veth is
made or deleted) and a deny-all nft table. A task takes one: its rules are applied while it is
connected to its subnet's network with the server-assigned address (one veth, the only Docker call
on the task's path; the deny-all table guards the address until the task's rules replace it), so
the task's containers (``NetworkMode: container:<pause>``) find a ready namespace. Teardown removes
the pause container in the background (veth deletion is slow; several go at once). The pool refills
a second after a take, not during it: a pause container starting while a task's interface is
connected made that connect twice as slow (``bench/awsvpc.py``). With the pool empty (a burst) a
task starts its own pause container the same way.

The pool fills when the agent starts, on an instance that takes awsvpc tasks (``--awsvpc-tasks`` not
0), so the first awsvpc task does not wait for one either. That is cheap: a warm pause container is an
idle ``sleep`` and its containerd shim, about 5 MiB PSS each (measured: 4.3-4.9 MiB per shim) and no
CPU once started; making one cost dockerd and containerd about 25 ms of CPU (90 ms for four). Filling
it only when the first desired set names an awsvpc task would still make that task wait. A warm
one also carries its agent process (``LABEL_OWNER``: boot id, pid namespace, pid, start time): an
agent killed with -9 leaves its pool behind, and the next agent to start on the engine removes warm
ones whose process is gone (an instance that never registers again would keep them forever).

Restarts: a pause container carries this instance's label (``LABEL_POOL``) and, once a task took
it, its endpoint on the task's subnet network with the task's server-assigned address, which no
other live task has: (network name, address) identifies the task's pause container without
relabelling (Docker cannot change a container's labels). At start, warm ones (on no network) and
stopped ones are removed; attached ones wait to be adopted by their task's runner
(``adopt``) until the first desired set says which tasks are still wanted (``keep_only``). The
namespace, the task's containers in it and their nft table live on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shutil
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from dockyard.agent.networking.firewall import ruleset
from dockyard.domain.task_eni import subnet_network_config

log = logging.getLogger("dockyard.agent.networking")

PAUSE_IMAGE = "dockyard/pause:latest"
LABEL_POOL = "com.dockyard.pause-pool"
LABEL_TASK = "com.dockyard.pause-task"  # not the ECS task label: the engine must not adopt it
LABEL_OWNER = "com.dockyard.pause-owner"  # a warm one's agent process (``process_id``)
DEFAULT_BRIDGE = "bridge"
DENY_ALL = ruleset(())  # a warm namespace's table until a task's rules replace it
REFILL_DELAY = 1.0  # seconds after a task takes a warm pause container until the pool refills


class NetworkSetupError(Exception):
    """The task's interface could not be set up (the task fails with ResourceInitializationError)."""


@dataclass(frozen=True)
class Attached:
    pause_id: str
    pid: int
    address: str


def _endpoint(settings: Mapping[str, Any], state: str) -> tuple[str, str] | None:
    """(network name, address) of a running pause container attached to a subnet network (from
    the container list's summary), or None: a warm one (no network) or a stopped one."""
    if state != "running":
        return None
    networks = (settings or {}).get("Networks") or {}
    for name, endpoint in networks.items():
        if name != DEFAULT_BRIDGE and (endpoint or {}).get("IPAddress"):
            return str(name), str(endpoint["IPAddress"])
    return None


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks after boot; field 22 of its stat), "" when gone."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rpartition(")")[2].split()[19] if stat else ""


def process_id(pid: int | None = None) -> str:
    """This (or ``pid``'s) process, unique on the machine: boot id, pid namespace, pid, start time."""
    pid = os.getpid() if pid is None else pid
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{_read('/proc/sys/kernel/random/boot_id')}/{namespace}/{pid}/{_start_time(pid)}"


def owner_gone(owner: str, me: str) -> bool:
    """Whether the agent process ``owner`` (a ``process_id``) has exited: only judged for one of this
    boot and pid namespace (another host's or container's agent is never taken for dead)."""
    parts, mine = owner.split("/"), me.split("/")
    if len(parts) != 4 or len(mine) != 4 or parts[:2] != mine[:2] or not parts[2].isdigit():
        return False
    return process_id(int(parts[2])) != owner


def _pause_tar(busybox: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sleep")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    return out.getvalue()


async def nft_apply(pid: int, script: str) -> None:
    """Apply ``script`` in the network namespace of ``pid`` as one nft transaction."""
    proc = await asyncio.create_subprocess_exec(
        "nsenter",
        "-t",
        str(pid),
        "-n",
        "nft",
        "-f",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate(script.encode())
    if proc.returncode != 0:
        raise NetworkSetupError(f"nft failed in the task's namespace: {err.decode(errors='replace').strip()}")


class PausePool:
    def __init__(
        self,
        docker: aiodocker.Docker,
        instance_arn: str,
        *,
        size: int = 4,
        reaper_width: int = 8,
        refill_delay: float = REFILL_DELAY,
    ) -> None:
        self.docker = docker
        self.instance_arn = instance_arn
        self.size = size
        self.refill_delay = refill_delay
        self._warm: asyncio.Queue[tuple[str, int]] = asyncio.Queue()  # (container id, pid)
        self._filling = 0
        self._networks: dict[str, asyncio.Lock] = {}
        self._known_networks: set[str] = set()
        self._reaper = asyncio.Semaphore(reaper_width)
        self._jobs: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._left: dict[tuple[str, str], str] = {}  # (network, address) -> a previous run's pause
        self._me = process_id()

    async def start(self, *, warm: bool = True) -> None:
        """Remove what a previous run left (keeping what tasks hold) and, with ``warm``, fill the pool."""
        await self.ensure_image()
        old = await self.docker.containers.list(all=True, filters={"label": [LABEL_POOL]})
        for c in old:  # a previous run's pause containers: kept for adoption if they hold a task
            summary = {k: c[k] for k in ("State", "NetworkSettings", "Labels") if k in c}
            held = _endpoint(summary.get("NetworkSettings") or {}, str(summary.get("State") or ""))
            labels = summary.get("Labels") or {}
            if labels.get(LABEL_POOL) != self.instance_arn:  # another agent's: only a dead one's warm
                if held is None and owner_gone(str(labels.get(LABEL_OWNER) or ""), self._me):
                    with contextlib.suppress(DockerError):
                        await c.delete(force=True)
            elif held is not None:
                self._left[held] = str(c.id)
            else:
                with contextlib.suppress(DockerError):
                    await c.delete(force=True)
        if warm:
            self._refill()

    async def adopt(self, eni: Mapping[str, Any]) -> Attached | None:
        """The pause container a previous run attached for ``eni``, if it still runs."""
        address = str(eni["privateIPv4Address"])
        cid = self._left.pop((str(eni["networkName"]), address), None)
        if cid is None:
            return None
        try:
            info = await self.docker.containers.container(cid).show()
        except DockerError:
            return None
        pid = int(info["State"].get("Pid") or 0)
        if not info["State"].get("Running") or pid <= 0:
            self.release(cid)
            return None
        self._known_networks.add(str(eni["networkName"]))
        return Attached(cid, pid, address)

    def keep_only(self, enis: Iterable[Mapping[str, Any]]) -> None:
        """Remove a previous run's pause containers that none of ``enis`` (the tasks the server
        still lists) will adopt."""
        wanted = {(str(e["networkName"]), str(e["privateIPv4Address"])) for e in enis}
        for held in [h for h in self._left if h not in wanted]:
            self.release(self._left.pop(held))

    def release_left(self, eni: Mapping[str, Any]) -> None:
        """A task that finished without adopting its interface: remove what a previous run left."""
        cid = self._left.pop((str(eni.get("networkName")), str(eni.get("privateIPv4Address"))), None)
        if cid is not None:
            self.release(cid)

    async def close(self) -> None:
        self._closed = True  # no refills from now on; ones in flight remove what they made
        await asyncio.gather(*self._jobs, return_exceptions=True)
        while not self._warm.empty():
            cid, _ = self._warm.get_nowait()
            with contextlib.suppress(DockerError):
                await self.docker.containers.container(cid).delete(force=True)
        await asyncio.gather(*self._jobs, return_exceptions=True)

    async def ensure_image(self) -> None:
        try:
            await self.docker.images.inspect(PAUSE_IMAGE)
            return
        except DockerError as e:
            if e.status != 404:
                raise
        busybox = shutil.which("busybox") or "/bin/busybox"
        repo, _, tag = PAUSE_IMAGE.partition(":")
        async with self.docker._query(  # the import endpoint aiodocker does not wrap
            "images/create",
            method="POST",
            params={"fromSrc": "-", "repo": repo, "tag": tag},
            data=_pause_tar(busybox),
            headers={"Content-Type": "application/x-tar"},
        ) as response:
            await response.read()

    # -- the warm pool ---------------------------------------------------------------------------

    def _refill(self) -> None:
        while not self._closed and self._warm.qsize() + self._filling < self.size:
            self._filling += 1
            job = asyncio.create_task(self._make_warm())
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)

    async def _make_warm(self) -> None:
        try:
            warm = await self._new_pause({LABEL_OWNER: self._me})
            if self._closed:
                await self.docker.containers.container(warm[0]).delete(force=True)
            else:
                self._warm.put_nowait(warm)
        except (DockerError, NetworkSetupError) as e:
            log.warning("could not start a pause container: %s", e)
        finally:
            self._filling -= 1

    async def _new_pause(self, labels: Mapping[str, str]) -> tuple[str, int]:
        """A started pause container with only ``lo`` and a deny-all nft table: (id, pid).

        Docker cannot start a container on no network and connect it later (``none`` mode refuses
        other networks), so it is created on the default bridge and disconnected before it starts:
        no veth is made, and connecting the task's network later is the only interface change."""
        container = await self.docker.containers.create(
            {
                "Image": PAUSE_IMAGE,
                "Cmd": ["/bin/sleep", "2147483647"],
                "Labels": {LABEL_POOL: self.instance_arn, **labels},
                "HostConfig": {"NetworkMode": DEFAULT_BRIDGE, "AutoRemove": False},
            }
        )
        try:
            bridge = await self.docker.networks.get(DEFAULT_BRIDGE)
            await bridge.disconnect({"Container": container.id, "Force": True})
            await container.start()
            info = await container.show()
            pid = int(info["State"]["Pid"])
            await nft_apply(pid, DENY_ALL)
        except BaseException:
            with contextlib.suppress(DockerError):
                await container.delete(force=True)
            raise
        return str(container.id), pid

    async def _take(self, task_arn: str) -> tuple[str, int]:
        # refill later, not now: starting a pause container while this task's interface is
        # connected and its containers start slows both down (dockerd serialises much of it)
        asyncio.get_running_loop().call_later(self.refill_delay, self._refill)
        try:
            return self._warm.get_nowait()
        except asyncio.QueueEmpty:
            return await self._new_pause({LABEL_TASK: task_arn})

    # -- subnets and interfaces ------------------------------------------------------------------

    async def ensure_network(self, eni: Mapping[str, Any]) -> str:
        name = str(eni["networkName"])
        if name in self._known_networks:
            return name
        lock = self._networks.setdefault(name, asyncio.Lock())
        async with lock:
            try:
                await self.docker.networks.get(name)
            except DockerError as e:
                if e.status != 404:
                    raise
                try:
                    await self.docker.networks.create(
                        subnet_network_config(
                            name, str(eni["subnetCidr"]), str(eni["gateway"]), str(eni["subnetId"])
                        )
                    )
                except DockerError as e2:
                    if e2.status != 409:
                        raise
            self._known_networks.add(name)
        return name

    async def attach(self, task_arn: str, eni: Mapping[str, Any], rules: str) -> Attached:
        """A pause container with the task's address on its subnet network and ``rules`` applied.

        The rules and the address go in at once: the warm namespace's deny-all table guards the
        address until the task's rules replace it (one nft transaction), so it is never reachable
        unguarded. A pause container that could not be set up is removed."""
        cid: str | None = None
        try:
            network = await self.ensure_network(eni)
            cid, pid = await self._take(task_arn)
            subnet = await self.docker.networks.get(network)
            connect = subnet.connect(
                {
                    "Container": cid,
                    "EndpointConfig": {"IPAMConfig": {"IPv4Address": eni["privateIPv4Address"]}},
                }
            )
            await asyncio.gather(nft_apply(pid, rules), connect)
            return Attached(cid, pid, str(eni["privateIPv4Address"]))
        except (DockerError, NetworkSetupError) as e:
            if cid is not None:
                self.release(cid)
            if isinstance(e, NetworkSetupError):
                raise
            raise NetworkSetupError(str(e.message if hasattr(e, "message") else e)) from e

    def release(self, pause_id: str) -> None:
        """Remove the pause container (and with it the namespace and its veth) in the background."""
        job = asyncio.create_task(self._remove(pause_id))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _remove(self, pause_id: str) -> None:
        async with self._reaper:
            with contextlib.suppress(DockerError):
                await self.docker.containers.container(pause_id).delete(force=True)


__all__ = ["Attached", "NetworkSetupError", "PausePool", "nft_apply", "ruleset"]
