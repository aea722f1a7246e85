"""The service controller's loop: store watch -> snapshot -> reconcile (pure) -> commit (CAS).

    service documents (ServiceCache, watched)  ─┐
    tasks, instances, liveness (ClusterCache)  ─┤
    targets' health (/elb-health/, watched)    ─┼─> reconcile(service, tasks, hosts, now, targets)
    clock                                       ─┘        │  -> Decision
                                                         v
            commit_stops / commit_service / commit_starts (each compares the service's revision)

For a service behind load balancers, ``targets.TargetSteps`` runs first: it registers ACTIVATING
tasks, drains DEACTIVATING ones, deregisters tasks that stopped by themselves, and reads the
targets' health that reconcile takes as input (``controller/targets.py``).

A round reconciles every ACTIVE or DRAINING service; a round runs when a service document changes,
when the cluster cache applies a change (a task report, an instance joining or draining), when a
load balancer's view of a target's health changes, or when a decision said time alone would change
it (``wake_at``: a task settling, a back-off ending, a grace period or a drain ending). Rounds are
coalesced for a few milliseconds so a burst of reports costs one.

No leader is needed for correctness: a decision commits only if the service document is still the
one it was made from, so two controllers (two server processes) can run this loop at once; the loser
of a race re-reads and decides again. Before deciding, the loop waits until the cluster cache has
applied the service document's revision, so the tasks written with it are visible.

The only state kept in memory is when each instance was first seen disconnected (for the grace
period; a restart starts that clock again, which only delays a replacement).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from dockyard.clock import Clock
from dockyard.domain.services import SchedulingStrategy
from dockyard.domain.tasks import Task
from dockyard.lb.keys import HEALTH
from dockyard.placement import keys
from dockyard.placement.cache import ClusterCache, Entry
from dockyard.store.base import Compacted, Conflict, StateStore, StoreClosed

from .actions import commit_service, commit_starts, commit_stops
from .model import ControllerSettings, Decision, Host
from .placing import constraints_of, members
from .reconcile import reconcile
from .service_cache import ServiceCache, ServiceEntry
from .targets import TargetSteps

log = logging.getLogger("dockyard.controller")


@dataclass
class LoopOptions:
    coalesce_seconds: float = 0.01  # gather a burst of changes into one round
    idle_seconds: float = 5.0  # a round at least this often (disconnections are noticed by time)
    retry_seconds: float = 1.0  # after an unexpected error, or a placement that found no room
    rng: random.Random = field(default_factory=random.Random)


class ServiceController:
    def __init__(
        self,
        store: StateStore,
        cache: ClusterCache,
        clock: Clock,
        settings: ControllerSettings | None = None,
        options: LoopOptions | None = None,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.clock = clock
        self.settings = settings or ControllerSettings()
        self.options = options or LoopOptions()
        self.services = ServiceCache(store, on_change=self._wake)
        self._dirty = asyncio.Event()
        self._disconnected: dict[tuple[keys.Scope, str], float] = {}
        self._hold: dict[str, float] = {}  # service key -> no placement before (it found no room)
        self._new_id = new_id or _uuid
        self.targets = TargetSteps(store, cache, clock, self.options.retry_seconds)
        self.rounds = 0
        self.conflicts = 0

    def _wake(self) -> None:
        self._dirty.set()

    async def run(self) -> None:
        self.services.start()
        followers: list[asyncio.Task[None]] = []
        try:
            await self.services.ready()
            await self.cache.ready()
            followers = [
                asyncio.create_task(self._follow_cache(), name="service-controller-follow"),
                asyncio.create_task(self._follow_health(), name="service-controller-health"),
            ]
            while True:
                _raise_if_cancelled()
                self._dirty.clear()
                wake_at = await self.round()
                timeout = self.options.idle_seconds
                if wake_at is not None:
                    timeout = max(0.0, min(timeout, wake_at - self.clock.time()))
                if not self._dirty.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):
                            await self._dirty.wait()
                await asyncio.sleep(self.options.coalesce_seconds)
        finally:
            for f in followers:
                f.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
            await self.services.close()

    async def _follow_cache(self) -> None:
        """Wake the loop whenever the cluster cache applies a change."""
        while True:
            _raise_if_cancelled()
            seen = self.cache.applied_revision
            try:
                await self.cache.wait_applied(seen + 1, timeout=30.0)
            except TimeoutError:
                continue
            self._dirty.set()

    async def _follow_health(self) -> None:
        """Wake the loop whenever a load balancer's view of a target's health changes."""
        while True:
            _raise_if_cancelled()
            try:
                listed = await self.store.list(HEALTH, limit=1)
                self._dirty.set()
                async for _ in self.store.watch(HEALTH, listed.revision + 1):
                    self._dirty.set()
            except Compacted:
                continue
            except StoreClosed:
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watching target health failed; watching again")
                await asyncio.sleep(self.options.retry_seconds)

    # ---- one round ----------------------------------------------------------------------------

    async def round(self) -> float | None:
        """Reconcile every ACTIVE or DRAINING service once; the earliest ``wake_at``."""
        self.rounds += 1
        now = self.clock.time()
        by_scope: dict[keys.Scope, dict[str, list[Entry[Task]]]] = {}
        hosts: dict[keys.Scope, list[Host]] = {}
        wake: list[float] = []
        for entry in list(self.services.entries.values()):
            if entry.service.status.value == "INACTIVE":
                continue
            try:
                await self.cache.wait_applied(entry.mod_revision)
                if entry.scope not in by_scope:
                    by_scope[entry.scope] = _by_service(self.cache.task_entries(entry.scope))
                    hosts[entry.scope] = self._hosts(entry.scope, now)
                tasks = by_scope[entry.scope].get(entry.service.name, [])
                at = await self._reconcile(entry, tasks, hosts[entry.scope], now)
            except Conflict:
                self.conflicts += 1
                self._dirty.set()  # re-read and decide again
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciling %s failed; retrying", entry.key)
                at = now + self.options.retry_seconds
            if at is not None:
                wake.append(at)
        return min(wake) if wake else None

    async def _reconcile(
        self, entry: ServiceEntry, tasks: list[Entry[Task]], hosts: list[Host], now: float
    ) -> float | None:
        service = entry.service
        primary = service.primary
        if service.scheduling_strategy is SchedulingStrategy.DAEMON and primary is not None:
            wanted = constraints_of(service, primary.task_definition)
            ok = members(self.cache, entry.scope, (h.id for h in hosts), wanted)
            hosts = [replace(h, eligible=h.id in ok) for h in hosts]
        balanced = await self.targets.run(entry.key, entry.scope, service, tasks)
        tasks = balanced.tasks
        decision: Decision = reconcile(
            service, [e.value for e in tasks], hosts, now, self.settings, self._new_id, balanced.targets
        )
        if decision.idle:
            return _earliest(decision.wake_at, balanced.wake_at)
        revision = entry.mod_revision
        if decision.stops:
            by_id = {e.value.id: e for e in tasks}
            revision = await commit_stops(
                self.store, entry.scope, entry.key, revision, decision.service, decision.stops, by_id, now
            )
        elif decision.write:
            revision = await commit_service(self.store, entry.key, revision, decision.service)
        wake_at = _earliest(decision.wake_at, balanced.wake_at)
        if decision.starts:
            hold = self._hold.get(entry.key, 0.0)
            if hold > now:
                return min(hold, wake_at) if wake_at is not None else hold
            started = await commit_starts(
                self.store,
                self.cache,
                entry.scope,
                entry.key,
                revision,
                decision.service,
                decision.starts,
                instance_arns={h.id: h.arn for h in hosts},
                rng=self.options.rng,
                now=now,
                new_id=self._new_id,
                max_events=self.settings.max_events,
            )
            if started.failures or not started.tasks:
                retry = now + self.options.retry_seconds
                self._hold[entry.key] = retry
                wake_at = min(retry, wake_at) if wake_at is not None else retry
            else:
                self._hold.pop(entry.key, None)
        await self._settle(entry.key)
        return wake_at

    async def _settle(self, key: str) -> None:
        """Wait until both caches show this service's latest write (so the next round decides on it)."""
        kv = await self.store.get(key)
        if kv is None:
            return
        await self.services.wait_applied(kv.mod_revision)
        await self.cache.wait_applied(kv.mod_revision)

    def _hosts(self, scope: keys.Scope, now: float) -> list[Host]:
        out = []
        for e in self.cache.instances(scope):
            instance = e.value
            connected = self.cache.connected(scope, instance.id)
            k = (scope, instance.id)
            since: float | None = None
            if connected:
                self._disconnected.pop(k, None)
            else:
                since = self._disconnected.setdefault(k, now)
            out.append(Host(instance.id, instance.arn, instance.status, connected, since))
        return out


def _raise_if_cancelled() -> None:
    """Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that arrives as its awaitable
    completes (fixed in 3.12); a loop that waits through it checks, so it always stops when asked."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _earliest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _by_service(entries: Iterable[Entry[Task]]) -> dict[str, list[Entry[Task]]]:
    """Tasks by the service that started them (``Task.service``; standalone tasks are left out)."""
    out: dict[str, list[Entry[Task]]] = {}
    for e in entries:
        if e.value.service is not None:
            out.setdefault(e.value.service, []).append(e)
    return out


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())
