"""The cache keeps the scheduler's index current: every change to an instance's registration,
allocation record, liveness or tasks re-builds exactly that instance's view."""

from __future__ import annotations

import random
from collections import Counter
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


async def test_running_counts_and_releases_keep_the_index_equal_to_a_relisted_one(env):  # type: ignore[no-untyped-def]
    """Views re-built only in their running count (the registration and record unchanged) match
    views built from scratch."""
    store, cache = env
    for name in "abc":
        await add_instance(store, name, memory=500, attributes={"zone": name})
    ask = TaskAsk(Resources(0, 100))
    outcome = await place_tasks(store, cache, SCOPE, [ask] * 6, builder(ask, "g"), rng=random.Random(2))
    await cache.sync()
    before = {n: view(cache, n) for n in "abc"}
    for i, task in enumerate(outcome.tasks):
        found = await read_task(store, SCOPE, task.id)
        assert found is not None
        status = TaskStatus.RUNNING if i % 3 else TaskStatus.STOPPED
        await write_task(store, SCOPE, found[1], replace(found[0], last_status=status), release=not i % 3)
    await cache.sync()
    for n in "abc":  # the attribute map was not copied again when only the running count moved
        if view(cache, n).revision == before[n].revision:
            assert view(cache, n).attributes is before[n].attributes
    assert sum(view(cache, n).running_tasks for n in "abc") == 4
    again = ClusterCache(store)
    again.start()
    await again.ready()
    try:
        await again.sync()
        assert again.index(SCOPE).views == cache.index(SCOPE).views
        for field in ("cpu", "memory"):
            assert list(again.index(SCOPE).sorted_by(field)) == list(cache.index(SCOPE).sorted_by(field))
    finally:
        await again.close()


async def test_what_this_process_wrote_is_kept_as_written_not_decoded_again(env):  # type: ignore[no-untyped-def]
    store, cache = env
    await add_instance(store, "a", memory=500)
    ask = TaskAsk(Resources(0, 100))
    outcome = await place_tasks(store, cache, SCOPE, [ask] * 2, builder(ask, "g"), rng=random.Random(3))
    await cache.sync()
    assert all(cache.task(SCOPE, t.id) is t for t in outcome.tasks)
    task = outcome.tasks[0]
    # a hint whose bytes are not what was stored (its write lost, another writer won) is ignored
    key = keys.task(SCOPE, task.id)
    other = replace(task, last_status=TaskStatus.RUNNING)
    cache.expect(key, b"{}", replace(task, last_status=TaskStatus.STOPPED))
    await store.txn([], [Put(key, orjson.dumps(other.to_document()))])
    await cache.sync()
    held = cache.task(SCOPE, task.id)
    assert held == other and held is not other
    # a hint of the wrong kind is ignored as well
    alloc = cache.allocation(SCOPE, "a")
    assert alloc is not None
    raw = orjson.dumps(alloc.value.to_document())
    cache.expect(keys.allocation(SCOPE, "a"), raw, task)
    await store.txn([], [Put(keys.allocation(SCOPE, "a"), raw)])
    await cache.sync()
    assert cache.allocation(SCOPE, "a").value == alloc.value  # type: ignore[union-attr]


async def test_task_counts_followed_through_updates_equal_a_relisted_cache(env):  # type: ignore[no-untyped-def]
    """Status counts, tasks per instance and running counts, kept current through updates in place,
    moves between instances and deletions, equal what a fresh list builds."""
    store, cache = env
    for name in "abc":
        await add_instance(store, name, memory=5000)
    ask = TaskAsk(Resources(0, 100))
    outcome = await place_tasks(store, cache, SCOPE, [ask] * 9, builder(ask, "g"), rng=random.Random(4))
    rng = random.Random(5)
    statuses = [TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.STOPPING, TaskStatus.STOPPED]
    live = {t.id: t for t in outcome.tasks}
    for _ in range(60):
        task = live[rng.choice(sorted(live))]
        roll = rng.random()
        if roll < 0.1 and len(live) > 3:
            await store.txn(deletes=[Delete(keys.task(SCOPE, task.id))])
            del live[task.id]
            continue
        moved = rng.choice("abc") if roll > 0.85 else task.instance_id
        changed = replace(task, last_status=rng.choice(statuses), instance_id=moved)
        await store.txn([], [Put(keys.task(SCOPE, task.id), orjson.dumps(changed.to_document()))])
        live[task.id] = changed
        await cache.sync()
        st = cache.scope(SCOPE)
        assert +st.status_counts == +Counter(t.last_status for t in live.values())
        assert {i: set(ids) for i, ids in st.tasks_by_instance.items()} == {
            i: {t.id for t in live.values() if t.instance_id == i}
            for i in {t.instance_id for t in live.values()}
        }
        running = Counter(t.instance_id for t in live.values() if t.last_status is TaskStatus.RUNNING)
        assert +st.running == running
        assert {n: view(cache, n).running_tasks for n in "abc"} == {n: running[n] for n in "abc"}
