"""The cache keeps the scheduler's index current: every change to an instance's registration,
allocation record, liveness or tasks re-builds exactly that instance's view."""

from __future__ import annotations

import random
from dataclasses import replace

import orjson
import pytest

from dockyard.domain.container_instances import Allocation, InstanceStatus
from dockyard.domain.resources import Resources
from dockyard.domain.task_status import TaskStatus
from dockyard.placement import keys
from dockyard.placement.cache import ClusterCache
from dockyard.placement.commit import place_tasks, read_task, write_task
from dockyard.scheduler import InstanceView, TaskAsk
from dockyard.store.base import Delete, Put
from dockyard.store.memory import MemoryStore
from tests.placement.factories import SCOPE, add_instance, builder


@pytest.fixture
async def env():
    store = MemoryStore()
    cache = ClusterCache(store)
    cache.start()
    await cache.ready()
    yield store, cache
    await cache.close()
    await store.close()


def view(cache: ClusterCache, instance_id: str) -> InstanceView:
    found = cache.index(SCOPE).find(instance_id)
    assert found is not None
    return found


async def test_views_follow_placements_reports_liveness_and_registration(env):  # type: ignore[no-untyped-def]
    store, cache = env
    instance = await add_instance(store, "a", cpu=1024, memory=1000, attributes={"zone": "z1"})
    await cache.sync()
    fresh = view(cache, "a")
    assert fresh.remaining == Resources(1024, 1000, frozenset({22})) and fresh.schedulable
    assert fresh.attributes == {"zone": "z1"} and fresh.groups == {} and fresh.running_tasks == 0

    ask = TaskAsk(Resources(100, 200, frozenset({8080})))
    outcome = await place_tasks(store, cache, SCOPE, [ask], builder(ask, "g"), rng=random.Random(0))
    small = TaskAsk(Resources(1, 1))
    await place_tasks(store, cache, SCOPE, [small], builder(small, "g"), rng=random.Random(0))
    placed = view(cache, "a")
    assert placed.remaining.cpu == 1024 - 101 and 8080 in placed.remaining.ports
    assert placed.groups == {"g": 2}
    assert placed.revision == cache.allocation(SCOPE, "a").mod_revision  # type: ignore[union-attr]

    task, kv = await read_task(store, SCOPE, outcome.tasks[0].id)  # type: ignore[misc]
    await write_task(store, SCOPE, kv, replace(task, last_status=TaskStatus.RUNNING), release=False)
    await cache.sync()
    assert view(cache, "a").running_tasks == 1

    task, kv = await read_task(store, SCOPE, task.id)  # type: ignore[misc]
    await write_task(store, SCOPE, kv, replace(task, last_status=TaskStatus.STOPPED), release=True)
    await cache.sync()
    stopped = view(cache, "a")
    assert stopped.running_tasks == 0 and stopped.groups == {"g": 1} and 8080 not in stopped.remaining.ports

    await store.txn(deletes=[Delete(keys.liveness(SCOPE, "a"))])
    await cache.sync()
    assert not view(cache, "a").agent_connected and view(cache, "a").arn not in cache.index(SCOPE).order

    tagged = replace(instance, attributes=(("zone", "z2"), ("stack", "prod")))
    await store.txn([], [Put(keys.instance(SCOPE, "a"), orjson.dumps(tagged.to_document()))])
    await cache.sync()
    assert view(cache, "a").attributes == {"zone": "z2", "stack": "prod"}

    alloc = cache.allocation(SCOPE, "a")
    assert alloc is not None
    drained = replace(alloc.value, status=InstanceStatus.DRAINING)
    await store.txn([], [Put(keys.allocation(SCOPE, "a"), orjson.dumps(drained.to_document()))])
    await cache.sync()
    assert view(cache, "a").status == "DRAINING" and not view(cache, "a").schedulable

    await store.txn(deletes=[Delete(keys.instance(SCOPE, "a")), Delete(keys.allocation(SCOPE, "a"))])
    await cache.sync()
    assert cache.index(SCOPE).find("a") is None


async def test_a_relisted_cache_rebuilds_the_same_index(env):  # type: ignore[no-untyped-def]
    store, cache = env
    for name in "abc":
        await add_instance(store, name, memory=500)
    ask = TaskAsk(Resources(0, 100))
    await place_tasks(store, cache, SCOPE, [ask] * 5, builder(ask, "g"), rng=random.Random(1))
    await cache.sync()
    again = ClusterCache(store)
    again.start()
    await again.ready()
    try:
        await again.sync()
        assert again.index(SCOPE).views == cache.index(SCOPE).views
    finally:
        await again.close()


def test_allocation_records_keep_groups_and_read_old_documents():
    old = Allocation.from_document({"status": "ACTIVE", "tasks": {"t1": {"cpu": 1, "memory": 2}}})
    assert old.group_counts() == {}
    grown = old.with_tasks({"t2": Resources(1, 1)}, {"t2": "g"})
    assert Allocation.from_document(orjson.loads(orjson.dumps(grown.to_document()))) == grown
    assert grown.group_counts() == {"g": 1} and grown.without(["t2"]).groups == {}
