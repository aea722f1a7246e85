"""Placement commits: one transaction per decision, conflicts re-planned, never over-committed."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from dockyard.domain.container_instances import Allocation
from dockyard.domain.resources import Resources
from dockyard.domain.task_lifecycle import stop_now
from dockyard.domain.tasks import Container, Task
from dockyard.placement import keys
from dockyard.placement.cache import ClusterCache
from dockyard.placement.commit import place_tasks, read_task, write_task
from dockyard.scheduler import Placement, TaskAsk
from dockyard.store.base import Compare, Conflict, Put
from dockyard.store.memory import MemoryStore
from tests.placement.factories import SCOPE, add_instance

_ids = iter(range(1_000_000))


def builder(ask: TaskAsk):  # type: ignore[no-untyped-def]
    def build(index: int, p: Placement) -> Task:
        task_id = f"t{next(_ids)}"
        return Task(
            arn=f"arn:aws:ecs:us-east-1:000000000000:task/c/{task_id}",
            id=task_id,
            cluster="c",
            cluster_arn="arn:aws:ecs:us-east-1:000000000000:cluster/c",
            task_definition_arn="arn:aws:ecs:us-east-1:000000000000:task-definition/f:1",
            container_instance_arn=p.instance_arn,
            instance_id=p.instance_id,
            containers=(Container("web", f"arn:c/{task_id}", "busybox"),),
            reservation=ask.needs,
            created_at=0.0,
            group="family:f",
        )

    return build


@pytest.fixture
async def env():
    store = MemoryStore()
    cache = ClusterCache(store)
    cache.start()
    await cache.ready()
    yield store, cache
    await cache.close()
    await store.close()


async def allocations(store) -> dict[str, Allocation]:  # type: ignore[no-untyped-def]
    page = await store.list(keys.prefix(keys.ALLOCATIONS, SCOPE))
    return {kv.key.rsplit("/", 1)[1]: Allocation.from_document(orjson.loads(kv.value)) for kv in page.kvs}


@pytest.mark.parametrize("seed", range(5))
async def test_concurrent_placers_never_over_commit(env, seed):
    store, cache = env
    for name in ("a", "b", "c"):
        await add_instance(store, name, cpu=4096, memory=1000, ports=frozenset())
    await cache.sync()
    # room for 3 x 3 memory-bound tasks, plus one static port per instance
    memory_ask = TaskAsk(Resources(0, 300))
    port_ask = TaskAsk(Resources(0, 1, frozenset({8080})))

    async def placer(i: int, ask: TaskAsk) -> int:
        outcome = await place_tasks(
            store, cache, SCOPE, [ask, ask], builder(ask), rng=random.Random(seed * 100 + i)
        )
        return len(outcome.tasks)

    results = await asyncio.gather(
        *(placer(i, memory_ask) for i in range(8)), *(placer(100 + i, port_ask) for i in range(4))
    )
    placed = sum(results)
    assert placed == 9 + 3
    for name, alloc in (await allocations(store)).items():
        reserved = alloc.reserved()
        assert reserved.memory <= 1000, name
        ports = [p for r in alloc.tasks.values() for p in r.ports]
        assert len(ports) == len(set(ports)) <= 1
    tasks = (await store.list(keys.prefix(keys.TASKS, SCOPE))).kvs
    assert len(tasks) == placed


async def test_a_conflict_re_plans_only_the_conflicted_tasks(env):
    store, cache = env
    await add_instance(store, "a", memory=1000)
    await add_instance(store, "b", memory=1000)
    await cache.sync()
    ask = TaskAsk(Resources(0, 600))
    # someone else fills "a" behind the cache's back on the first commit attempt
    real_txn = store.txn
    calls = 0

    async def txn(compares=(), puts=(), deletes=()):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            for c in compares:
                if c.key.startswith("/allocations/"):
                    kv = await store.get(c.key)
                    grown = Allocation(tasks={"other": Resources(0, 900)})
                    await real_txn(
                        [Compare.unchanged(kv, c.key)], [Put(c.key, orjson.dumps(grown.to_document()))]
                    )
                    break
        return await real_txn(compares, puts, deletes)

    store.txn = txn  # type: ignore[method-assign]
    outcome = await place_tasks(store, cache, SCOPE, [ask], builder(ask), rng=random.Random(0))
    assert outcome.conflicts == 1 and len(outcome.tasks) == 1
    allocs = await allocations(store)
    full = [n for n, a in allocs.items() if "other" in a.tasks]
    [task] = outcome.tasks
    assert task.instance_id not in full and allocs[task.instance_id].reserved().memory == 600


async def test_guard_conflicts_are_raised_and_failures_reported(env):
    store, cache = env
    await add_instance(store, "a", memory=100)
    await cache.sync()
    ask = TaskAsk(Resources(0, 50))
    await store.txn([], [Put("/guard", b"1")])
    with pytest.raises(Conflict):
        await place_tasks(
            store, cache, SCOPE, [ask], builder(ask), rng=random.Random(0), guards=[Compare.absent("/guard")]
        )
    big = TaskAsk(Resources(0, 500))
    outcome = await place_tasks(store, cache, SCOPE, [ask, big], builder(ask), rng=random.Random(0))
    assert len(outcome.tasks) == 1
    assert [(f.reason, f.arn.rsplit("/", 1)[1]) for f in outcome.failures] == [("RESOURCE:MEMORY", "a")]


async def test_stopping_releases_the_reservation_in_the_same_write(env):
    store, cache = env
    await add_instance(store, "a", memory=100)
    await cache.sync()
    ask = TaskAsk(Resources(0, 100, frozenset({80})))
    [task] = (await place_tasks(store, cache, SCOPE, [ask], builder(ask), rng=random.Random(0))).tasks
    assert (await allocations(store))["a"].reserved().memory == 100
    found = await read_task(store, SCOPE, task.id)
    assert found is not None
    merged = stop_now(found[0], reason="bye", stop_code="UserInitiated", now=1.0)
    await write_task(store, SCOPE, found[1], merged.task, release=merged.released)
    assert (await allocations(store))["a"].tasks == {}
    await cache.sync()
    again = await place_tasks(store, cache, SCOPE, [ask], builder(ask), rng=random.Random(0))
    assert len(again.tasks) == 1
