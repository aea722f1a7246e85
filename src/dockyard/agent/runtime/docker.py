"""``ContainerRuntime`` on the Docker Engine API, through aiodocker (one aiohttp stack).

Talks to ``DOCKER_HOST`` or ``unix:///var/run/docker.sock``. Events come from ``GET /events``
filtered by the agent's own label, so several agents on one engine see only their containers;
after every (re)connect a RESYNC event tells the engine to re-list, since events may have been
missed while the stream was down (Docker restarted).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from dockyard.agent.runtime.base import (
    ContainerSpec,
    CreateError,
    EventKind,
    ImageMissing,
    Observation,
    PortBinding,
    PullError,
    RuntimeError_,
    RuntimeEvent,
    StartError,
    State,
    VolumeSpec,
)
from dockyard.agent.runtime.docker_config import create_body

log = logging.getLogger("dockyard.agent.docker")

_NETWORK_NOT_FOUND = re.compile(r"network (\S+) not found")
_EVENTS = {"start": EventKind.START, "die": EventKind.DIE, "oom": EventKind.OOM, "destroy": EventKind.DESTROY}


def parse_time(text: str | None) -> float | None:
    """Docker's RFC 3339 time (nanoseconds, Z) as epoch seconds; None for the zero time."""
    if not text or text.startswith("0001-"):
        return None
    main, _, frac = text.rstrip("Z").partition(".")
    digits = "".join(ch for ch in frac if ch.isdigit())[:6]
    when = dt.datetime.fromisoformat(main).replace(tzinfo=dt.UTC)
    return when.timestamp() + (int(digits) / 10 ** len(digits) if digits else 0.0)


def _bindings(ports: Mapping[str, Any] | None) -> tuple[PortBinding, ...]:
    out = []
    for key, hosts in (ports or {}).items():
        port, _, proto = key.partition("/")
        for h in hosts or ():
            if h.get("HostPort"):
                out.append(PortBinding(int(port), int(h["HostPort"]), proto or "tcp", h.get("HostIp") or ""))
    return tuple(out)


def observation(info: Mapping[str, Any]) -> Observation:
    """An inspect result as an ``Observation``."""
    state = info.get("State") or {}
    status = state.get("Status") or ""
    if status == "running" or state.get("Running"):
        kind = State.RUNNING
    elif status == "created":
        kind = State.CREATED
    elif status in ("exited", "dead", "removing"):
        kind = State.EXITED
    else:
        kind = State.UNKNOWN
    health = (state.get("Health") or {}).get("Status")
    return Observation(
        id=str(info.get("Id")),
        name=str(info.get("Name") or "").lstrip("/"),
        labels=dict((info.get("Config") or {}).get("Labels") or {}),
        state=kind,
        exit_code=int(state["ExitCode"]) if kind is State.EXITED and "ExitCode" in state else None,
        oom_killed=bool(state.get("OOMKilled")),
        health=health,
        started_at=parse_time(state.get("StartedAt")),
        finished_at=parse_time(state.get("FinishedAt")),
        error=str(state.get("Error") or ""),
        port_bindings=_bindings((info.get("HostConfig") or {}).get("PortBindings")),
    )


def _message(e: DockerError) -> str:
    return str(e.message.get("message") if isinstance(e.message, dict) else e.message)


def _create_error(e: DockerError) -> CreateError:
    message = _message(e)
    if e.status == 404 and "no such image" in message.lower():
        return ImageMissing(message)
    return CreateError(message)


class DockerRuntime:
    def __init__(self, url: str | None = None) -> None:
        self._docker = aiodocker.Docker(url=url)
        self._network_locks: dict[str, asyncio.Lock] = {}
        self._networks: set[str] = set()  # known to exist: a burst checks its network once

    @property
    def client(self) -> aiodocker.Docker:
        return self._docker

    async def close(self) -> None:
        await self._docker.close()

    async def version(self) -> str:
        info = await self._docker.version()
        return str(info.get("Version") or "")

    async def api_version(self) -> str:
        info = await self._docker.version()
        return str(info.get("ApiVersion") or "")

    async def image_present(self, image: str) -> bool:
        try:
            await self._docker.images.inspect(image)
            return True
        except DockerError as e:
            if e.status == 404:
                return False
            raise RuntimeError_(_message(e)) from e

    async def pull(self, image: str) -> None:
        try:
            await self._docker.images.pull(image)
        except DockerError as e:
            raise PullError(_message(e)) from e
        except (TimeoutError, OSError) as e:
            raise PullError(str(e)) from e

    async def ensure_network(self, name: str) -> None:
        """Create the network if missing. Serialised per name: concurrent creates on Docker 20.10 can
        make duplicates despite CheckDuplicate, after which every container create fails as ambiguous.
        Checked once: a network removed behind the agent's back is made again when a create or start
        fails for want of it (``_lost_network``)."""
        if name in self._networks:
            return
        async with self._network_locks.setdefault(name, asyncio.Lock()):
            if name not in self._networks:
                await self._ensure_network(name)
                self._networks.add(name)

    async def _ensure_network(self, name: str) -> None:
        try:
            await self._docker.networks.get(name)
            return
        except DockerError as e:
            if e.status != 404:
                raise RuntimeError_(_message(e)) from e
        try:
            await self._docker.networks.create(
                {"Name": name, "Driver": "bridge", "CheckDuplicate": True, "Labels": {"com.dockyard": "1"}}
            )
        except DockerError as e:
            if e.status != 409:  # another agent created it meanwhile
                raise RuntimeError_(_message(e)) from e

    async def ensure_volume(self, volume: VolumeSpec) -> None:
        try:
            await self._docker.volumes.get(volume.name)  # type: ignore[no-untyped-call]
            return
        except DockerError as e:
            if e.status != 404:
                raise RuntimeError_(_message(e)) from e
        if not volume.create:
            raise RuntimeError_(f"volume {volume.name} does not exist")
        try:
            await self._docker.volumes.create(  # type: ignore[no-untyped-call]
                {
                    "Name": volume.name,
                    "Driver": volume.driver,
                    "DriverOpts": dict(volume.driver_opts),
                    "Labels": dict(volume.labels),
                }
            )
        except DockerError as e:
            raise RuntimeError_(_message(e)) from e

    async def remove_volume(self, name: str) -> None:
        try:
            volume = await self._docker.volumes.get(name)  # type: ignore[no-untyped-call]
            await volume.delete()
        except DockerError as e:
            if e.status != 404:
                raise RuntimeError_(_message(e)) from e

    async def create(self, spec: ContainerSpec) -> str:
        try:
            return await self._create(spec)
        except DockerError as e:
            lost = self._lost_network(e)
            if lost is None:
                raise _create_error(e) from e
        await self.ensure_network(lost)
        try:
            return await self._create(spec)
        except DockerError as e:
            raise _create_error(e) from e

    async def _create(self, spec: ContainerSpec) -> str:
        try:
            container = await self._docker.containers.create(create_body(spec), name=spec.name)
            return str(container.id)
        except DockerError as e:
            if e.status == 409:  # created before a crash: adopt it
                existing = await self.inspect(spec.name)
                if existing is not None:
                    return existing.id
            raise

    async def start(self, container_id: str) -> None:
        try:
            return await self._start(container_id)
        except DockerError as e:
            lost = self._lost_network(e)
            if lost is None:
                raise StartError(_message(e)) from e
        await self.ensure_network(lost)  # Docker finds a missing network only at start
        try:
            await self._start(container_id)
        except DockerError as e:
            raise StartError(_message(e)) from e

    async def _start(self, container_id: str) -> None:
        try:
            await self._docker.containers.container(container_id).start()
        except DockerError as e:
            if e.status != 304:  # already started
                raise

    def _lost_network(self, e: DockerError) -> str | None:
        """A network this runtime ensured that has been removed behind its back (forgotten now)."""
        found = _NETWORK_NOT_FOUND.search(_message(e)) if e.status == 404 else None
        name = found.group(1) if found else None
        if name is None or name not in self._networks:
            return None
        self._networks.discard(name)
        return name

    async def stop(self, container_id: str, timeout: int) -> None:
        try:
            await self._docker.containers.container(container_id).stop(t=timeout)
        except DockerError as e:
            if e.status in (304, 404):  # already stopped, or gone
                return
            raise RuntimeError_(_message(e)) from e

    async def remove(self, container_id: str) -> None:
        try:
            await self._docker.containers.container(container_id).delete(force=True, v=False)
        except DockerError as e:
            if e.status not in (404, 409):
                raise RuntimeError_(_message(e)) from e

    async def inspect(self, container_id: str) -> Observation | None:
        try:
            info = await self._docker.containers.container(container_id).show()
        except DockerError as e:
            if e.status == 404:
                return None
            raise RuntimeError_(_message(e)) from e
        return observation(info)

    async def list(self, labels: Mapping[str, str]) -> list[Observation]:
        filters = json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})
        try:
            found = await self._docker.containers.list(all="1", filters=filters)
        except DockerError as e:
            raise RuntimeError_(_message(e)) from e
        out = []
        for c in found:
            obs = await self.inspect(c.id)
            if obs is not None:
                out.append(obs)
        return out

    async def logs(self, container_id: str, *, follow: bool = False) -> AsyncIterator[str]:
        container = self._docker.containers.container(container_id)
        if follow:
            async for line in container.log(stdout=True, stderr=True, follow=True):
                yield line
        else:
            for line in await container.log(stdout=True, stderr=True):
                yield line

    async def events(self, labels: Mapping[str, str]) -> AsyncIterator[RuntimeEvent]:
        filters = json.dumps({"type": ["container"], "label": [f"{k}={v}" for k, v in labels.items()]})
        while True:
            try:
                async with self._docker._query(
                    "events", params={"filters": filters}, timeout=None
                ) as response:
                    yield RuntimeEvent(EventKind.RESYNC)
                    async for line in response.content:
                        event = _event(line)
                        if event is not None:
                            yield event
            except (TimeoutError, DockerError, OSError, ValueError) as e:
                log.warning("docker event stream interrupted: %s", e)
            except Exception as e:  # aiohttp's own errors
                if type(e).__module__.startswith("aiohttp"):
                    log.warning("docker event stream interrupted: %s", e)
                else:
                    raise
            await asyncio.sleep(1.0)


def _event(line: bytes) -> RuntimeEvent | None:
    line = line.strip()
    if not line:
        return None
    data = json.loads(line)
    action = str(data.get("Action") or data.get("status") or "")
    actor = data.get("Actor") or {}
    attrs = dict(actor.get("Attributes") or {})
    when = data.get("timeNano")
    if action.startswith("health_status"):
        kind = EventKind.HEALTH
        health: str | None = action.split(":", 1)[1].strip() if ":" in action else None
    elif action in _EVENTS:
        kind, health = _EVENTS[action], None
    else:
        return None
    exit_code = attrs.get("exitCode")
    return RuntimeEvent(
        kind=kind,
        id=str(actor.get("ID") or data.get("id") or ""),
        labels=attrs,
        exit_code=int(exit_code) if exit_code not in (None, "") else None,
        health=health,
        time=int(when) / 1e9 if when else None,
    )
