"""Place through the scheduler, then commit the reservations with compare-and-swap (Omega style).

One decision commits in ONE transaction that

- compares the ``mod_revision`` of every chosen instance's allocation record (the only document
  placement compares; heartbeats and attribute changes never touch it) and the caller's guards (the
  cluster's revision; a RunTask clientToken being absent),
- puts each chosen instance's allocation record with the new reservations (and their task groups,
  so ``spread`` and ``distinctInstance`` decide from the record they compare),
- creates each task document (``Compare.absent``).

The decision reads the cache's index (``ClusterCache.index``) plus ``overrides``: fresher copies of
records read from the store after a conflict, and the reservations this decision already holds.
While a commit is in flight its instances are marked ``busy`` (``placement.inflight``), so other
placers of this process choose them last among equals instead of colliding on them; so are the
instances another process placed on lately (``placement.elsewhere``), so two servers sharing a
store settle on different instances instead of colliding on the same records.

On a conflict on allocation records only the tasks placed on the conflicted instances are
re-planned, against fresh copies of those records read from the store; the others keep their
instance unless its record moved meanwhile. Retries are bounded and jittered (``rng``), conflicts
are counted (``ClusterCache.stats``, logged by ``dockyard.placement``). A conflict on a guard is
the caller's to handle (re-validate, or answer from the client token), so it is raised unchanged.

``write_task`` stores a task's new state and, when the task reached STOPPED, releases its
reservation from the allocation record in the same transaction. ``write_tasks`` does the same for
a batch of tasks of one instance (an agent's Report) in one transaction: a compare-and-swap on each
task document against the revision its new state was merged from, and on the instance's allocation
record whenever one of them is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from dockyard.domain.container_instances import Allocation
from dockyard.domain.errors import ServerError
from dockyard.domain.tasks import Task
from dockyard.placement import keys
from dockyard.placement.cache import ClusterCache, Entry
from dockyard.placement.inflight import LOG_EVERY
from dockyard.placement.keys import Scope
from dockyard.scheduler import (
    Failure,
    InstanceView,
    Placement,
    PlacementConstraint,
    PlacementRequest,
    PlacementStrategy,
    Snapshot,
    TaskAsk,
    place,
)
from dockyard.scheduler.model import either
from dockyard.store.base import MAX_TXN_OPS, Compare, Conflict, KeyValue, Put, StateStore, TxnResult

log = logging.getLogger("dockyard.placement")

MAX_ATTEMPTS = 16
MAX_BACKOFF = 0.05

# builds the task document for ask ``index`` once the scheduler chose ``placement``
TaskBuilder = Callable[[int, Placement], Task]


@dataclass
class PlaceOutcome:
    tasks: list[Task]  # committed, in ask order
    failures: list[Failure]
    conflicts: int = 0  # allocation conflicts met (and re-planned) on the way


@dataclass
class _Kept:
    """A placement this decision holds: the task it makes and the record revision it builds on."""

    placement: Placement
    task: Task
    revision: int


def encode(doc: object) -> bytes:
    return orjson.dumps(doc)


def _put(cache: ClusterCache | None, key: str, value: Task | Allocation) -> Put:
    """The put of ``value``'s document; the cache, when given, keeps ``value`` rather than decoding
    the document again when the watch brings it back (``ClusterCache.expect``)."""
    raw = value.to_json() if isinstance(value, Allocation) else encode(value.to_document())
    if cache is not None:
        cache.expect(key, raw, value)
    return Put(key, raw)


class _Decision:
    """The state of one ``place_tasks`` call across its attempts."""

    def __init__(self, cache: ClusterCache, scope: Scope) -> None:
        self.cache = cache
        self.scope = scope
        self.kept: dict[int, _Kept] = {}
        self.fresh: dict[str, Entry[Allocation] | None] = {}  # instance id -> record read after a conflict
        self.failures: dict[str, Failure] = {}

    def base(self, instance_id: str) -> Entry[Allocation] | None:
        """The newest allocation record known: the cache's, or the one read after a conflict."""
        cached = self.cache.allocation(self.scope, instance_id)
        if instance_id in self.fresh:
            fresh = self.fresh[instance_id]
            if fresh is None or cached is None or fresh.mod_revision >= cached.mod_revision:
                return fresh
        return cached

    def drop_moved(self) -> list[int]:
        """Forget kept placements whose record moved since they were decided; their indexes."""
        moved = []
        for index, kept in list(self.kept.items()):
            base = self.base(kept.placement.instance_id)
            if base is None or base.mod_revision != kept.revision:
                del self.kept[index]
                moved.append(index)
        return moved

    def held(self) -> dict[str, list[_Kept]]:
        by_instance: dict[str, list[_Kept]] = {}
        for kept in self.kept.values():
            by_instance.setdefault(kept.placement.instance_id, []).append(kept)
        return by_instance

    def snapshot(self) -> Snapshot:
        overrides: dict[str, InstanceView] = {}
        for instance_id, fresh in self.fresh.items():
            if fresh is not None and self.base(instance_id) is fresh:
                view = self.cache.view(self.scope, instance_id, fresh)
                if view is not None:
                    overrides[view.arn] = view
        for instance_id, held in self.held().items():
            base = self.base(instance_id)
            assert base is not None
            grown = _with(base.value, held)
            view = self.cache.view(self.scope, instance_id, Entry(grown, base.mod_revision))
            if view is not None:
                overrides[view.arn] = view
        mine = [k.placement.instance_arn for k in self.kept.values()]
        busy = either(self.cache.inflight.busy(self.scope, mine), self.cache.elsewhere.busy(self.scope))
        return Snapshot(index=self.cache.index(self.scope), overrides=overrides, busy=busy)

    def reservations(self) -> tuple[list[Compare], list[Put]]:
        compares: list[Compare] = []
        puts: list[Put] = []
        for kept in self.kept.values():
            key = keys.task(self.scope, kept.task.id)
            compares.append(Compare.absent(key))
            puts.append(_put(self.cache, key, kept.task))
        for instance_id, held in sorted(self.held().items()):
            base = self.base(instance_id)
            assert base is not None and all(k.revision == base.mod_revision for k in held)
            key = keys.allocation(self.scope, instance_id)
            compares.append(Compare.mod_revision(key, base.mod_revision))
            puts.append(_put(self.cache, key, _with(base.value, held)))
        return compares, puts

    def conflicted(self, conflict: Conflict) -> set[str] | None:
        """The instances whose allocation record conflicted; None if anything else conflicted."""
        by_key = {
            keys.allocation(self.scope, k.placement.instance_id): k.placement.instance_id
            for k in self.kept.values()
        }
        if not conflict.keys or any(k not in by_key for k in conflict.keys):
            return None
        return {by_key[k] for k in conflict.keys}


def _with(allocation: Allocation, held: Sequence[_Kept]) -> Allocation:
    return allocation.with_tasks(
        {k.task.id: k.task.reservation for k in held}, {k.task.id: k.task.group for k in held}
    )


async def place_tasks(
    store: StateStore,
    cache: ClusterCache,
    scope: Scope,
    asks: Sequence[TaskAsk],
    build: TaskBuilder,
    *,
    rng: random.Random,
    guards: Sequence[Compare] = (),
    extra_puts: Callable[[list[Task], list[Failure]], Sequence[Put]] = lambda _t, _f: (),
    attempts: int = MAX_ATTEMPTS,
    group: str | None = None,
    strategy: Sequence[PlacementStrategy] = (),
    constraints: Sequence[PlacementConstraint] = (),
) -> PlaceOutcome:
    """Place ``asks`` (``group``, ``strategy`` and ``constraints`` as ``PlacementRequest`` has
    them), commit the placements, and return the tasks made and the failures.

    Each attempt takes one of the process's placement slots (``inflight.Slots``) for its
    decide-and-commit, so decisions queue *before* they read the cache rather than after: a
    decision waiting for the store is a decision going stale.
    """
    decision = _Decision(cache, scope)
    todo = list(range(len(asks)))
    conflicts = 0
    for attempt in range(attempts):
        async with cache.inflight.slot():
            with contextlib.suppress(TimeoutError):
                await cache.sync()  # decide on the freshest view, other processes' commits included
            todo += decision.drop_moved()
            todo.sort()
            snapshot = decision.snapshot()
            request = PlacementRequest(
                tuple(asks[i] for i in todo), group, tuple(strategy), tuple(constraints)
            )
            result = place(request, snapshot, rng)
            for p in result.placements:
                index = todo[p.task]
                placed = Placement(index, p.instance_arn, p.instance_id)
                view = snapshot.view(p.instance_arn)
                assert view is not None
                decision.kept[index] = _Kept(placed, build(index, placed), view.revision)
            for f in result.failures:
                decision.failures.setdefault(f.arn, f)
            todo = []
            if not decision.kept:
                return PlaceOutcome([], list(decision.failures.values()), conflicts)
            tasks = [decision.kept[i].task for i in sorted(decision.kept)]
            failures = list(decision.failures.values()) if len(tasks) < len(asks) else []
            compares, puts = decision.reservations()
            arns = sorted({k.placement.instance_arn for k in decision.kept.values()})
            cache.inflight.mark(scope, arns)
            cache.stats.attempts += 1
            try:
                committed = await store.txn([*guards, *compares], [*puts, *extra_puts(tasks, failures)])
            except Conflict as conflict:
                cache.inflight.unmark(scope, arns)
                conflicted = decision.conflicted(conflict)
                if conflicted is None:
                    cache.stats.guard_conflicts += 1
                    raise  # a guard (or a task key) conflicted: the caller decides
                conflicts += 1
                cache.stats.conflicts += 1
                cache.inflight.slots.conflicted()
                log.debug("placement conflict on %d instance(s), attempt %d", len(conflicted), attempt + 1)
                todo = await _re_read(store, scope, decision, conflicted)
                committed = None
            except BaseException:
                cache.inflight.unmark(scope, arns)
                raise
        if committed is None:
            await asyncio.sleep(rng.uniform(0, min(MAX_BACKOFF, 0.001 * 2**conflicts)))
            continue
        cache.stats.commits += 1
        cache.stats.placed += len(tasks)
        cache.inflight.slots.committed()
        try:
            with contextlib.suppress(TimeoutError):  # others see these instances busy until applied
                await cache.wait_applied(committed.revision)
        finally:
            cache.inflight.unmark(scope, arns)
        _log_stats(cache)
        return PlaceOutcome(tasks, failures, conflicts)
    raise ServerError("Too many concurrent placements on the same container instances; retry the request.")


async def _re_read(store: StateStore, scope: Scope, decision: _Decision, conflicted: set[str]) -> list[int]:
    """Fresh copies of the conflicted records; the tasks placed on them, to place again."""
    for instance_id in conflicted:
        kv = await store.get(keys.allocation(scope, instance_id))
        decision.fresh[instance_id] = (
            Entry(Allocation.from_document(orjson.loads(kv.value)), kv.mod_revision) if kv else None
        )
    again = []
    for index, kept in list(decision.kept.items()):
        if kept.placement.instance_id in conflicted:
            del decision.kept[index]
            again.append(index)
    return again


def _log_stats(cache: ClusterCache) -> None:
    stats = cache.stats
    now = time.monotonic()
    if now - stats.logged_at >= LOG_EVERY and stats.as_tuple() != stats.logged:
        stats.logged, stats.logged_at = stats.as_tuple(), now
        log.info("%s", stats.line())


# ---- task updates ------------------------------------------------------------------------------------


async def read_task(store: StateStore, scope: Scope, task_id: str) -> tuple[Task, KeyValue] | None:
    kv = await store.get(keys.task(scope, task_id))
    if kv is None:
        return None
    return Task.from_document(orjson.loads(kv.value)), kv


async def write_task(store: StateStore, scope: Scope, kv: KeyValue, task: Task, *, release: bool) -> None:
    """Store ``task`` if its document is still ``kv``; with ``release``, free its reservation too.

    Raises ``Conflict`` when the task (or the allocation record) changed: re-read and re-merge.
    """
    compares = [Compare.unchanged(kv, kv.key)]
    puts = [Put(kv.key, encode(task.to_document()))]
    if release:
        alloc_key = keys.allocation(scope, task.instance_id)
        alloc_kv = await store.get(alloc_key)
        if alloc_kv is not None:
            allocation = Allocation.from_document(orjson.loads(alloc_kv.value))
            if task.id in allocation.tasks:
                compares.append(Compare.unchanged(alloc_kv, alloc_key))
                puts.append(Put(alloc_key, allocation.without([task.id]).to_json()))
    await store.txn(compares, puts)


# a task write is a compare and a put; the allocation record's compare and put come on top
MAX_TASK_WRITES = (MAX_TXN_OPS - 2) // 2


@dataclass(frozen=True)
class TaskWrite:
    """A task's new state and the ``mod_revision`` of the document it was merged from."""

    task: Task
    revision: int
    release: bool = False  # the task reached STOPPED: free its reservation in the same transaction


async def write_tasks(
    store: StateStore,
    scope: Scope,
    writes: Sequence[TaskWrite],
    allocation: Entry[Allocation] | None,
    cache: ClusterCache | None = None,
) -> TxnResult:
    """Store tasks of ONE instance in one transaction, each only if its document is still at the
    revision it was merged from; released ones leave ``allocation`` (the instance's record as the
    caller knows it, compared by revision whenever anything is released, so a stale copy conflicts
    rather than leaking a reservation). At most ``MAX_TASK_WRITES`` writes.

    Raises ``Conflict`` naming the keys that moved: re-read those, re-merge, retry. With ``cache``,
    the cache keeps the written tasks as they are when the watch brings them back.
    """
    if len(writes) > MAX_TASK_WRITES:
        raise ValueError(f"at most {MAX_TASK_WRITES} task writes per transaction")
    if len({w.task.instance_id for w in writes}) > 1:
        raise ValueError("the tasks of one write_tasks call must be on one instance")
    compares: list[Compare] = []
    puts: list[Put] = []
    for w in writes:
        key = keys.task(scope, w.task.id)
        compares.append(Compare.mod_revision(key, w.revision))
        puts.append(_put(cache, key, w.task))
    released = [w.task for w in writes if w.release]
    if released:
        alloc_key = keys.allocation(scope, released[0].instance_id)
        compares.append(Compare.mod_revision(alloc_key, allocation.mod_revision if allocation else 0))
        held = [t.id for t in released if allocation is not None and t.id in allocation.value.tasks]
        if allocation is not None and held:
            puts.append(_put(cache, alloc_key, allocation.value.without(held)))
    return await store.txn(compares, puts)
