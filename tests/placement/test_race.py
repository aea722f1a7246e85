"""Concurrent placers on one store (in-process, many seeds): never over-committed, never a static
host port twice, never two tasks of a distinctInstance group on one instance, and every task that
found no room fails with ECS's RESOURCE:* reason."""

from __future__ import annotations

import asyncio
import random

import pytest

from dockyard.domain.resources import Resources
from dockyard.placement import keys
from dockyard.placement.cache import ClusterCache
from dockyard.placement.commit import place_tasks
from dockyard.scheduler import PlacementConstraint, PlacementStrategy, TaskAsk
from dockyard.store.memory import MemoryStore
from dockyard.store.sqlite import SqliteStore
from tests.placement.factories import SCOPE, add_instance, allocations, builder

CLIENTS = 16
STRATEGIES = [
    (),
    (PlacementStrategy("binpack", "memory"),),
    (PlacementStrategy("spread", "instanceId"),),
    (PlacementStrategy("spread", "attribute:ecs.availability-zone"), PlacementStrategy("binpack", "cpu")),
]


async def _setup(store, instances: int, memory: int):  # type: ignore[no-untyped-def]
    for i in range(instances):
        zone = {"ecs.availability-zone": f"az-{i % 2}"}
        await add_instance(store, f"i{i}", cpu=4096, memory=memory, ports=frozenset({22}), attributes=zone)
    cache = ClusterCache(store)
    cache.start()
    await cache.ready()
    return cache


async def _race(store, cache, seed: int, asks_per_client: list[list[TaskAsk]], **kw):  # type: ignore[no-untyped-def]
    async def client(n: int) -> tuple[int, list[str]]:
        asks = asks_per_client[n]
        outcome = await place_tasks(
            store, cache, SCOPE, asks, builder(asks[0]), rng=random.Random(seed * 1000 + n), **kw
        )
        return len(outcome.tasks), [f.reason for f in outcome.failures]

    return await asyncio.gather(*(client(n) for n in range(CLIENTS)))


@pytest.mark.parametrize("strategy", STRATEGIES, ids=["random", "binpack", "spread", "spread+binpack"])
@pytest.mark.parametrize("seed", range(12))
async def test_exactly_the_room_there_is_gets_placed(seed, strategy):  # type: ignore[no-untyped-def]
    """Four instances with room for 3 + 3 + 3 + 3 memory-bound tasks, 16 clients asking for 2 each;
    then one static host port on each instance, asked for by 16 more clients."""
    store = MemoryStore()
    cache = await _setup(store, 4, 300)
    try:
        rng = random.Random(seed)
        memory_ask = TaskAsk(Resources(0, 100))
        results = await _race(store, cache, seed, [[memory_ask] * 2] * CLIENTS, strategy=strategy)
        assert sum(n for n, _ in results) == 12
        for placed, reasons in results:
            if placed < 2:
                assert reasons and all(r.startswith("RESOURCE:") for r in reasons), reasons
        allocs = await allocations(store)
        assert all(a.reserved().memory <= 300 for a in allocs.values())
        # now every instance is full by memory; free 1 MiB-tasks with a static port still fit once each
        for i in range(4):
            await add_instance(
                store, f"p{i}", cpu=4096, memory=10 * rng.randrange(1, 5), ports=frozenset({22})
            )
        await cache.sync()
        port_ask = TaskAsk(Resources(0, 1, frozenset({8080})))
        results = await _race(store, cache, seed, [[port_ask]] * CLIENTS, strategy=strategy)
        assert sum(n for n, _ in results) == 4
        assert all(r.startswith("RESOURCE:") for n, reasons in results if not n for r in reasons)
        allocs = await allocations(store)
        for name, alloc in allocs.items():
            ports = [p for r in alloc.tasks.values() for p in r.ports]
            assert len(ports) == len(set(ports)) <= 1, name
        tasks = (await store.list(keys.prefix(keys.TASKS, SCOPE))).kvs
        assert len(tasks) == 16
    finally:
        await cache.close()
        await store.close()


@pytest.mark.parametrize("seed", range(8))
async def test_distinct_instance_holds_under_concurrency(seed):  # type: ignore[no-untyped-def]
    store = MemoryStore()
    cache = await _setup(store, 6, 4096)
    try:
        ask = TaskAsk(Resources(0, 10))
        distinct = (PlacementConstraint("distinctInstance"),)
        results = await _race(store, cache, seed, [[ask]] * CLIENTS, constraints=distinct, group="family:f")
        assert sum(n for n, _ in results) == 6
        reasons = {r for n, rs in results if not n for r in rs}
        assert reasons == {"DistinctInstance placement constraint unsatisfied"}
        for alloc in (await allocations(store)).values():
            assert alloc.group_counts() == {"family:f": 1}
    finally:
        await cache.close()
        await store.close()


async def test_two_caches_on_one_sqlite_file_never_over_commit(tmp_path):  # type: ignore[no-untyped-def]
    """Two stores (as two server processes would have) on one file: each placer learns of the
    other's writes only through the change log, and the allocation compare keeps them honest."""
    first = SqliteStore(tmp_path / "state.db")
    second = SqliteStore(tmp_path / "state.db")
    caches = []
    try:
        caches.append(await _setup(first, 4, 500))
        cache_b = ClusterCache(second)
        cache_b.start()
        await cache_b.ready()
        caches.append(cache_b)
        ask = TaskAsk(Resources(0, 100))

        async def client(n: int) -> int:
            store, cache = ((first, caches[0]), (second, caches[1]))[n % 2]
            outcome = await place_tasks(store, cache, SCOPE, [ask] * 2, builder(ask), rng=random.Random(n))
            return len(outcome.tasks)

        placed = await asyncio.gather(*(client(n) for n in range(CLIENTS)))
        assert sum(placed) == 20
        allocs = await allocations(first)
        assert all(a.reserved().memory <= 500 for a in allocs.values())
    finally:
        for cache in caches:
            await cache.close()
        await first.close()
        await second.close()
