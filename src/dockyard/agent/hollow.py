"""Hollow agents: N container instances in one process (``dockyard agent --runtime simulated --instances N``).

Each hollow instance is a full ``Engine`` (the one the Docker runtime uses: registration, the
desired-set long-poll, one runner per task, batched and sequenced reports, cleanup) over its own
``SimulatedRuntime``, so tasks walk the same lifecycle as real ones after the configured delays,
without containers. What they share is the process: one aiohttp session (one connection pool)
for every instance's calls, and one ``ReportStats``.

Instance ``n`` keeps its identity (``i-...`` id, container instance ARN) in ``STATE_DIR/instance-NNNNN``,
so a restarted hollow agent registers the same instances again; tasks are not checkpointed (the
simulated containers do not outlive the process) and writes are not fsynced. Availability zones
go round-robin over ``zones``. Registrations run at most ``register_concurrency`` at a time. The
process's garbage collector runs less often (and skips what exists once all registered): a
thousand engines are a large heap of long-lived objects that every full collection would walk.
Once all registered, the young generation is collected only when it doubled the heap
(``YoungCollector``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

import aiohttp

from dockyard.agent.engine import AgentSettings, Engine
from dockyard.agent.reporter import ReportStats
from dockyard.agent.runtime.simulated import Delays, SimulatedRuntime
from dockyard.client.ecs import EcsClient
from dockyard.domain.task_status import TaskStatus

log = logging.getLogger("dockyard.agent.hollow")

GC_THRESHOLDS = (10_000, 50, 100)  # while the instances register
GC_CHECK_INTERVAL = 1.0  # seconds between two looks at the young generation (YoungCollector)
GC_MIN_YOUNG = 1_000_000  # never collect for fewer young objects than this (100,000 cost ~8% more CPU)


class YoungCollector:
    """Collect the young generation only once it outgrew what earlier collections kept.

    The collector exists to free reference cycles; everything else goes by reference counting.
    The hollow agents' steady state makes next to none: measured over bench/placement.py (10,000
    tasks on 1,000 instances), collections of the young generation every 0.2 s never found
    anything to free, and at exit a full collection of everything found 83 objects. What those
    steps did cost was walking each object that lived past one step (tasks' state, in-flight
    calls): 0.1 ms of CPU per placed task, a fifth of the process, for nothing.

    So automatic collection is off, and ``step`` (every ``GC_CHECK_INTERVAL``) looks at the
    collector's count of generation 0: objects allocated, net of those freed, since the last
    collection. Once that passes ``live`` (what the collections so far kept: the heap grown since
    registration) and ``GC_MIN_YOUNG``, it collects the young generation and freezes the
    survivors, so no collection walks them again. Memory stays bounded: cyclic garbage is at most
    what accrued, so what grew since registration at most doubles between collections (as with
    Go's GOGC=100), and each object that lives is walked once, however often collections run.
    (The heap frozen at registration is not counted: ``gc.get_freeze_count()`` walks the whole
    list, a pause the loop would feel.) A cycle among objects already frozen is never freed: the
    price, measured negligible above. A hollow agent is a scale-test process; the real agent keeps
    the default collector."""

    def __init__(self) -> None:
        self.live = 0  # objects kept by the collections so far (an estimate)
        self.collections = 0

    def step(self) -> bool:
        """Collect the young generation if it outgrew the live heap; True if it did."""
        young = gc.get_count()[0]
        if young <= max(self.live, GC_MIN_YOUNG):
            return False
        found = gc.collect(1)
        gc.freeze()
        self.live = max(0, self.live + young - found)
        self.collections += 1
        return True

    async def run(self, interval: float) -> None:
        enabled = gc.isenabled()
        gc.disable()
        try:
            while True:
                await asyncio.sleep(interval)
                self.step()
        finally:
            if enabled:
                gc.enable()


def instance_settings(template: AgentSettings, n: int, zones: Sequence[str]) -> AgentSettings:
    """The settings of hollow instance ``n``: its own state dir and availability zone."""
    return replace(
        template,
        state_dir=template.state_dir / f"instance-{n:05d}",
        availability_zone=zones[n % len(zones)] if zones else template.availability_zone,
        cgroup_root=None,
        checkpoint_tasks=False,
        checkpoint_sync=False,
    )


class HollowAgents:
    def __init__(
        self,
        template: AgentSettings,
        count: int,
        *,
        zones: Sequence[str] = (),
        delays: Delays | None = None,
        register_concurrency: int = 32,
        stats: ReportStats | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.template = template
        self.count = count
        self.zones = list(zones)
        self.delays = delays or Delays()
        self.register_concurrency = register_concurrency
        self.stats = stats if stats is not None else ReportStats()
        self.engines: list[Engine] = []
        self._collector: asyncio.Task[None] | None = None

    @property
    def registered(self) -> int:
        return sum(1 for e in self.engines if e.registered.is_set())

    def running_tasks(self) -> int:
        """Tasks whose containers all run (as the engines know them)."""
        return sum(1 for e in self.engines for r in e.runners.values() if r.task.known is TaskStatus.RUNNING)

    async def _announce(self, on_ready: Callable[[int], None] | None) -> None:
        for engine in self.engines:
            await engine.registered.wait()
        gc.freeze()  # the instances' long-lived state: not scanned by every collection from now on
        log.info("%d hollow instances registered", self.count)
        if on_ready is not None:
            on_ready(self.count)
        self._collector = asyncio.create_task(YoungCollector().run(GC_CHECK_INTERVAL), name="hollow-gc")

    async def run(
        self, on_ready: Callable[[int], None] | None = None, *, register_only: bool = False
    ) -> None:
        """Run every instance until cancelled; ``on_ready(n)`` once all ``n`` registered. With
        ``register_only`` the instances register and then neither poll nor report (a benchmark's
        baseline: placement without agent traffic; the instances go disconnected after the timeout)."""
        # thousands of engines keep a large heap of long-lived objects: collect less often
        thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False), json_serialize=json.dumps
        )
        gate = asyncio.Semaphore(self.register_concurrency)
        self.engines = [
            Engine(
                instance_settings(self.template, n, self.zones),
                SimulatedRuntime(self.delays),
                EcsClient(
                    self.template.server,
                    self.template.credentials,
                    self.template.region,
                    session=session,
                    agent_session=self.template.session,
                ),
                stats=self.stats,
                registration_gate=gate,
            )
            for n in range(self.count)
        ]
        jobs = [
            asyncio.create_task(e.register() if register_only else e.run(), name=f"hollow-{n}")
            for n, e in enumerate(self.engines)
        ]
        jobs.append(asyncio.create_task(self._announce(on_ready)))
        try:
            await asyncio.gather(*jobs)  # until cancelled (or every instance was deregistered)
            if register_only:
                await asyncio.Event().wait()
        finally:
            for job in jobs:
                job.cancel()
            if self._collector is not None:
                self._collector.cancel()
                jobs.append(self._collector)
            await asyncio.gather(*jobs, return_exceptions=True)
            for e in self.engines:
                await e.runtime.close()
            await session.close()
            gc.set_threshold(*thresholds)
            gc.unfreeze()
