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
Once all registered, collection goes in small steps (``_collect_in_steps``).
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

GC_THRESHOLDS = (10_000, 50, 100)
GC_INTERVAL = 0.2  # seconds between two steps of collection (_collect_in_steps)


async def _collect_in_steps(interval: float) -> None:
    """Collect in small, regular steps instead of the collector's own.

    With a thousand engines in one event loop, an automatic collection of the older generations
    walks hundreds of thousands of objects at once: the loop stalls, the instances' reports miss
    their window and go out as separate calls (measured: +25-35% requests to the server under
    bench/placement.py). Here automatic collection is off; every ``interval`` the young
    generations are collected (what the last interval left alive, cycles among it freed) and the
    survivors frozen, so no collection walks them again. The price: a cycle among objects that
    survived one step is never freed. A hollow agent is a scale-test process; the real agent
    keeps the default collector."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        while True:
            await asyncio.sleep(interval)
            gc.collect(1)
            gc.freeze()
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
        self._collector = asyncio.create_task(_collect_in_steps(GC_INTERVAL), name="hollow-gc")

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
                    self.template.server, self.template.credentials, self.template.region, session=session
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
