"""Place through the scheduler, then commit the reservations with compare-and-swap (Omega style).

One decision commits in ONE transaction that

- compares the ``mod_revision`` of every chosen instance's allocation record (the only document
  placement compares; heartbeats and attribute changes never touch it) and the caller's guards (the
  cluster's revision; a RunTask clientToken being absent),
- puts each chosen instance's allocation record with the new reservations,
- creates each task document (``Compare.absent``).

On a conflict on allocation records only the tasks placed on the conflicted instances are re-planned,
against fresh copies of those records read from the store; the others keep their instance unless its
record moved meanwhile. Retries are bounded and jittered (``rng``). A conflict on a guard is the
caller's to handle (re-validate, or answer from the client token), so it is raised unchanged.

``write_task`` stores a task's new state and, when the task reached STOPPED, releases its
reservation from the allocation record in the same transaction.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from dockyard.domain.container_instances import Allocation, InstanceStatus
from dockyard.domain.errors import ServerError
from dockyard.domain.resources import NONE, Resources, remaining
from dockyard.domain.task_status import TaskStatus
from dockyard.domain.tasks import Task
from dockyard.placement import keys
from dockyard.placement.cache import ClusterCache, Entry
from dockyard.placement.keys import Scope
from dockyard.scheduler import Failure, InstanceView, Placement, PlacementRequest, Snapshot, TaskAsk, place
from dockyard.store.base import Compare, Conflict, KeyValue, Put, StateStore

MAX_ATTEMPTS = 8

# builds the task document for ask ``index`` once the scheduler chose ``placement``
TaskBuilder = Callable[[int, Placement], Task]


@dataclass
class PlaceOutcome:
    tasks: list[Task]  # committed, in ask order
    failures: list[Failure]
    conflicts: int = 0  # allocation conflicts met (and re-planned) on the way


@dataclass
class _Base:
    """An allocation record as a snapshot read it: the value placement builds on and compares."""

    allocation: Allocation
    mod_revision: int


@dataclass
class _Plan:
    kept: dict[int, tuple[Placement, Task, int]] = field(default_factory=dict)  # index -> (.., base rev)
    failures: dict[str, Failure] = field(default_factory=dict)


def encode(doc: object) -> bytes:
    return orjson.dumps(doc)


def allocation_bases(
    cache: ClusterCache, scope: Scope, overlay: Mapping[str, Entry[Allocation] | None] | None = None
) -> dict[str, _Base]:
    """Each instance's allocation record: the cache's, or ``overlay``'s when it was read fresher
    from the store after a conflict (None there: the record is gone)."""
    bases: dict[str, _Base] = {}
    for entry in cache.instances(scope):
        instance_id = entry.value.id
        alloc = cache.allocation(scope, instance_id)
        if overlay and instance_id in overlay:
            fresh = overlay[instance_id]
            if fresh is None or alloc is None or fresh.mod_revision >= alloc.mod_revision:
                alloc = fresh
        if alloc is not None:
            bases[instance_id] = _Base(alloc.value, alloc.mod_revision)
    return bases


def build_snapshot(
    cache: ClusterCache,
    scope: Scope,
    bases: Mapping[str, _Base],
    *,
    pending: Mapping[str, Resources] | None = None,
    include_inactive: bool = False,
) -> Snapshot:
    """The scheduler's view of one cluster, computed from ``bases`` (see ``allocation_bases``).

    ``pending``: reservations of this decision not committed yet, per instance id. INACTIVE
    instances are left out unless ``include_inactive`` (StartTask names them: reason INACTIVE).
    """
    views: list[InstanceView] = []
    for entry in cache.instances(scope):
        instance = entry.value
        base = bases.get(instance.id)
        if base is None:
            continue
        status = base.allocation.status
        if status is InstanceStatus.INACTIVE and not include_inactive:
            continue
        reserved = base.allocation.reserved() + (pending or {}).get(instance.id, NONE)
        views.append(
            InstanceView(
                arn=instance.arn,
                id=instance.id,
                status=status.value,
                agent_connected=cache.connected(scope, instance.id),
                registered=instance.registered,
                remaining=remaining(instance.registered, reserved),
                attributes=instance.attribute_map(),
                running_tasks=sum(
                    1 for t in cache.tasks_on(scope, instance.id) if t.last_status is TaskStatus.RUNNING
                ),
                ec2_instance_id=instance.ec2_instance_id,
            )
        )
    return Snapshot(tuple(views))


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
) -> PlaceOutcome:
    """Place ``asks``, commit the placements, and return the tasks made and the failures."""
    plan = _Plan()
    todo = list(range(len(asks)))
    overlay: dict[str, Entry[Allocation] | None] = {}
    include_inactive = any(a.instance is not None for a in asks)
    conflicts = 0
    for _ in range(attempts):
        bases = allocation_bases(cache, scope, overlay)
        # a kept placement whose record moved since it was decided is decided again
        for index, (p, _, rev) in list(plan.kept.items()):
            base = bases.get(p.instance_id)
            if base is None or base.mod_revision != rev:
                del plan.kept[index]
                todo.append(index)
        pending: dict[str, Resources] = {}
        for p, task, _ in plan.kept.values():
            pending[p.instance_id] = pending.get(p.instance_id, NONE) + task.reservation
        snapshot = build_snapshot(cache, scope, bases, pending=pending, include_inactive=include_inactive)
        todo.sort()
        result = place(PlacementRequest(tuple(asks[i] for i in todo)), snapshot, rng)
        for p in result.placements:
            index = todo[p.task]
            placed = Placement(index, p.instance_arn, p.instance_id)
            plan.kept[index] = (placed, build(index, placed), bases[p.instance_id].mod_revision)
        for f in result.failures:
            plan.failures.setdefault(f.arn, f)
        todo = []
        if not plan.kept:
            return PlaceOutcome([], list(plan.failures.values()), conflicts)
        tasks = [plan.kept[i][1] for i in sorted(plan.kept)]
        compares, puts = _reservations(scope, plan, bases)
        failures = list(plan.failures.values()) if len(tasks) < len(asks) else []
        try:
            await store.txn([*guards, *compares], [*puts, *extra_puts(tasks, failures)])
        except Conflict as conflict:
            conflicted = _conflicted_instances(scope, plan, conflict)
            if conflicted is None:
                raise  # a guard (or a task key) conflicted: the caller decides
            conflicts += 1
            for instance_id in conflicted:
                kv = await store.get(keys.allocation(scope, instance_id))
                overlay[instance_id] = (
                    Entry(Allocation.from_document(orjson.loads(kv.value)), kv.mod_revision) if kv else None
                )
            for index, (p, _, _) in list(plan.kept.items()):
                if p.instance_id in conflicted:
                    del plan.kept[index]
                    todo.append(index)
            await asyncio.sleep(rng.uniform(0, min(0.05, 0.002 * 2**conflicts)))
            continue
        return PlaceOutcome(tasks, failures, conflicts)
    raise ServerError("Too many concurrent placements on the same container instances; retry the request.")


def _reservations(scope: Scope, plan: _Plan, bases: Mapping[str, _Base]) -> tuple[list[Compare], list[Put]]:
    by_instance: dict[str, dict[str, Resources]] = {}
    compares: list[Compare] = []
    puts: list[Put] = []
    for p, task, _ in plan.kept.values():
        by_instance.setdefault(p.instance_id, {})[task.id] = task.reservation
        key = keys.task(scope, task.id)
        compares.append(Compare.absent(key))
        puts.append(Put(key, encode(task.to_document())))
    for instance_id, reservations in sorted(by_instance.items()):
        base = bases[instance_id]
        key = keys.allocation(scope, instance_id)
        compares.append(Compare.mod_revision(key, base.mod_revision))
        puts.append(Put(key, encode(base.allocation.with_tasks(reservations).to_document())))
    return compares, puts


def _conflicted_instances(scope: Scope, plan: _Plan, conflict: Conflict) -> set[str] | None:
    """The instances whose allocation record conflicted; None if anything else conflicted."""
    by_key = {keys.allocation(scope, p.instance_id): p.instance_id for p, _, _ in plan.kept.values()}
    if not conflict.keys or any(k not in by_key for k in conflict.keys):
        return None
    return {by_key[k] for k in conflict.keys}


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
                puts.append(Put(alloc_key, encode(allocation.without([task.id]).to_document())))
    await store.txn(compares, puts)
