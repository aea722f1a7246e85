"""A hollow ``ContainerRuntime``: no containers, only their lifecycle, after configurable delays.

The scheduler's scale tests run many hollow agents in one process against a real server: each one
registers, polls, "runs" tasks and reports exactly like a real agent, through the same engine.

A container runs until it is stopped, unless its command is ``["exit", "N"]`` (it exits with N at
once) or its environment has ``SIMULATED_EXIT_AFTER`` (seconds) and ``SIMULATED_EXIT_CODE``.
Stopping gives exit code 143 (SIGTERM). Images whose name contains ``missing`` fail to pull.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from dockyard.agent.runtime.base import (
    ContainerSpec,
    EventKind,
    NotFound,
    Observation,
    PullError,
    RuntimeEvent,
    State,
    VolumeSpec,
)


@dataclass(frozen=True)
class Delays:
    """Seconds each step takes (``--sim-pull-ms``, ``--sim-create-ms``, ``--sim-start-ms``,
    ``--sim-stop-ms``); 0 completes the step without yielding to the event loop."""

    pull: float = 0.0
    create: float = 0.0
    start: float = 0.0
    stop: float = 0.0


async def _pause(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


@dataclass
class _Container:
    """What the runtime knows of one container (its ``Observation`` is made when asked for)."""

    id: str
    name: str
    labels: Mapping[str, str]
    definition: Mapping[str, Any]  # the container definition (wire): command, environment
    state: State = State.CREATED
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_task: asyncio.Task[None] | None = field(default=None)

    def observation(self) -> Observation:
        return Observation(
            id=self.id,
            name=self.name,
            labels=self.labels,
            state=self.state,
            exit_code=self.exit_code,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


class SimulatedRuntime:
    def __init__(self, delays: Delays | None = None) -> None:
        self.delays = delays or Delays()
        self._containers: dict[str, _Container] = {}
        self._names: dict[str, str] = {}  # container name -> id
        self._subscribers: list[tuple[dict[str, str], asyncio.Queue[RuntimeEvent]]] = []
        self._ids = itertools.count(1)

    async def version(self) -> str:
        return "simulated"

    async def image_present(self, image: str) -> bool:
        return "missing" not in image

    async def pull(self, image: str) -> None:
        await _pause(self.delays.pull)
        if "missing" in image:
            raise PullError(f"pull access denied for {image}, repository does not exist")

    async def ensure_network(self, name: str) -> None:
        return None

    async def ensure_volume(self, volume: VolumeSpec) -> None:
        return None

    async def remove_volume(self, name: str) -> None:
        return None

    def _find(self, ref: str) -> _Container:
        c = self._containers.get(ref) or self._containers.get(self._names.get(ref, ""))
        if c is None:
            raise NotFound(ref)
        return c

    async def create(self, spec: ContainerSpec) -> str:
        await _pause(self.delays.create)
        existing = self._names.get(spec.name)
        if existing is not None:
            return existing
        cid = f"sim{next(self._ids):061d}"
        self._containers[cid] = _Container(cid, spec.name, dict(spec.labels), spec.definition)
        self._names[spec.name] = cid
        return cid

    async def start(self, container_id: str) -> None:
        await _pause(self.delays.start)
        c = self._find(container_id)
        if c.state is not State.CREATED:
            return
        c.state, c.started_at = State.RUNNING, time.time()
        self._publish(RuntimeEvent(EventKind.START, c.id, c.labels, time=time.time()))
        command = list(c.definition.get("command") or [])
        env = {e.get("name"): e.get("value") for e in c.definition.get("environment") or ()}
        if len(command) == 2 and command[0] == "exit":
            self._exit(c, int(command[1]))
        elif env.get("SIMULATED_EXIT_AFTER"):
            code = int(env.get("SIMULATED_EXIT_CODE") or 0)
            c.exit_task = asyncio.create_task(self._exit_later(c, float(env["SIMULATED_EXIT_AFTER"]), code))

    async def _exit_later(self, c: _Container, after: float, code: int) -> None:
        await asyncio.sleep(after)
        self._exit(c, code)

    def _exit(self, c: _Container, code: int) -> None:
        if c.state is not State.RUNNING:
            return
        c.state, c.exit_code, c.finished_at = State.EXITED, code, time.time()
        self._publish(RuntimeEvent(EventKind.DIE, c.id, c.labels, exit_code=code, time=time.time()))

    async def stop(self, container_id: str, timeout: int) -> None:
        await _pause(self.delays.stop)
        try:
            c = self._find(container_id)
        except NotFound:
            return
        if c.exit_task is not None:
            c.exit_task.cancel()
        self._exit(c, 143)

    async def remove(self, container_id: str) -> None:
        try:
            c = self._find(container_id)
        except NotFound:
            return
        self._exit(c, 137)
        del self._containers[c.id]
        if self._names.get(c.name) == c.id:
            del self._names[c.name]
        self._publish(RuntimeEvent(EventKind.DESTROY, c.id, c.labels, time=time.time()))

    async def inspect(self, container_id: str) -> Observation | None:
        try:
            return self._find(container_id).observation()
        except NotFound:
            return None

    async def list(self, labels: Mapping[str, str]) -> list[Observation]:
        return [
            c.observation()
            for c in self._containers.values()
            if all(c.labels.get(k) == v for k, v in labels.items())
        ]

    def _publish(self, event: RuntimeEvent) -> None:
        for labels, queue in self._subscribers:
            if all(event.labels.get(k) == v for k, v in labels.items()):
                queue.put_nowait(event)

    async def events(self, labels: Mapping[str, str]) -> AsyncIterator[RuntimeEvent]:
        queue: asyncio.Queue[RuntimeEvent] = asyncio.Queue()
        entry = (dict(labels), queue)
        self._subscribers.append(entry)
        try:
            yield RuntimeEvent(EventKind.RESYNC)
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(entry)

    async def close(self) -> None:
        for c in self._containers.values():
            if c.exit_task is not None:
                c.exit_task.cancel()
