"""Instances another process placed on lately: remembered by the cache, taken last among equals."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from dockyard.clock import FakeClock
from dockyard.domain.resources import Resources
from dockyard.placement.cache import ClusterCache
from dockyard.placement.commit import place_tasks, read_task, write_task
from dockyard.placement.elsewhere import PlacedElsewhere
from dockyard.scheduler import TaskAsk
from dockyard.store.memory import MemoryStore
from tests.placement.factories import SCOPE, add_instance, builder, instance_arn


def test_remembers_other_processes_placements_for_the_horizon_only():
    clock = FakeClock()
    seen = PlacedElsewhere(clock, horizon=10.0)
    assert "a" not in seen.busy(SCOPE)
    seen.placed(SCOPE, "a", elsewhere=True)
    clock.advance(4)
    seen.placed(SCOPE, "b", elsewhere=True)
    assert set(seen.busy(SCOPE)) == {"a", "b"}
    seen.placed(SCOPE, "b", elsewhere=False)  # this process placed there since: its own again
    assert set(seen.busy(SCOPE)) == {"a"}
    clock.advance(5)
    seen.placed(SCOPE, "a", elsewhere=True)  # placed there again: the horizon starts over
    clock.advance(6)
    assert set(seen.busy(SCOPE)) == {"a"}
    clock.advance(5)
    assert set(seen.busy(SCOPE)) == set()


@pytest.fixture
async def two() -> AsyncIterator[tuple[MemoryStore, ClusterCache, ClusterCache, FakeClock]]:
    """Two caches on one store, as two server processes have (each knows only its own writes)."""
    store = MemoryStore()
    clock = FakeClock()
    first, second = ClusterCache(store, clock=clock), ClusterCache(store, clock=clock)
    for cache in (first, second):
        cache.start()
        await cache.ready()
    yield store, first, second, clock
    for cache in (first, second):
        await cache.close()
    await store.close()


async def test_a_cache_marks_what_another_placed_and_its_decisions_go_elsewhere(two):  # type: ignore[no-untyped-def]
    store, first, second, clock = two
    for name in ("a", "b"):
        await add_instance(store, name, memory=10_000)
    ask = TaskAsk(Resources(0, 10))
    out = await place_tasks(store, first, SCOPE, [ask], builder(ask), rng=random.Random(0))
    taken = out.tasks[0].instance_id
    other = "b" if taken == "a" else "a"
    await second.sync()
    assert instance_arn(taken) in second.elsewhere.busy(SCOPE)
    assert instance_arn(taken) not in first.elsewhere.busy(SCOPE)  # its own placement

    for seed in range(8):  # equally good otherwise: the second process goes to the other instance
        placed = await place_tasks(store, second, SCOPE, [ask], builder(ask), rng=random.Random(seed))
        assert placed.tasks[0].instance_id == other
    await first.sync()
    assert instance_arn(other) in first.elsewhere.busy(SCOPE)

    clock.advance(first.elsewhere.horizon + 1)  # long ago: ties are broken uniformly again
    picks = set()
    for seed in range(16):
        placed = await place_tasks(store, first, SCOPE, [ask], builder(ask), rng=random.Random(seed))
        picks.add(placed.tasks[0].instance_id)
    assert picks == {"a", "b"}


async def test_only_a_preference_and_releases_are_not_placements(two):  # type: ignore[no-untyped-def]
    store, first, second, _ = two
    await add_instance(store, "a", memory=100)
    ask = TaskAsk(Resources(0, 10))
    out = await place_tasks(store, first, SCOPE, [ask], builder(ask), rng=random.Random(0))
    await second.sync()
    assert instance_arn("a") in second.elsewhere.busy(SCOPE)
    # the only instance with room: taken although another process placed there
    again = await place_tasks(store, second, SCOPE, [ask], builder(ask), rng=random.Random(0))
    assert [t.instance_id for t in again.tasks] == ["a"]
    await first.sync()
    assert instance_arn("a") in first.elsewhere.busy(SCOPE)

    # the first process releases the second's task: a release marks nothing
    found = await read_task(store, SCOPE, again.tasks[0].id)
    assert found is not None
    await write_task(store, SCOPE, found[1], found[0], release=True)
    await second.sync()
    assert instance_arn("a") not in second.elsewhere.busy(SCOPE)
    assert out.tasks
