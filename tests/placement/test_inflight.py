"""In-flight decisions: busy instances, adaptive placement slots, stats."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from dockyard.domain.resources import Resources
from dockyard.placement.cache import ClusterCache
from dockyard.placement.commit import place_tasks
from dockyard.placement.inflight import GROWTH, InFlight, PlacementStats, Slots
from dockyard.scheduler import TaskAsk
from dockyard.store.memory import MemoryStore
from tests.placement.factories import SCOPE, add_instance, builder


def test_busy_counts_other_decisions_only():
    inflight = InFlight()
    inflight.mark(SCOPE, ["a", "b"])
    inflight.mark(SCOPE, ["b"])
    assert inflight.busy(SCOPE) == {"a", "b"}
    assert inflight.busy(SCOPE, mine=["b"]) == {"a", "b"}  # someone else holds b too
    assert inflight.busy(SCOPE, mine=["a"]) == {"b"}
    inflight.unmark(SCOPE, ["a", "b"])
    assert inflight.busy(SCOPE) == {"b"}
    inflight.unmark(SCOPE, ["b"])
    assert inflight.busy(SCOPE) == frozenset()


async def test_slots_halve_on_conflicts_and_grow_back():
    slots = Slots(high=8)
    assert slots.limit == 8
    slots.conflicted()
    slots.conflicted()
    assert slots.limit == 2
    for _ in range(10):
        slots.conflicted()
    assert slots.limit == 1
    for _ in range(GROWTH):
        slots.committed()
    assert slots.limit == 2
    for _ in range(GROWTH * 2 * 20):
        slots.committed()
    assert slots.limit == 8  # never above high


async def test_slots_admit_at_most_limit_and_survive_cancellation():
    slots = Slots(high=2)
    inside = 0
    peak = 0
    release = asyncio.Event()

    async def worker() -> None:
        nonlocal inside, peak
        async with slots:
            inside += 1
            peak = max(peak, inside)
            await release.wait()
            inside -= 1

    workers = [asyncio.create_task(worker()) for _ in range(6)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert inside == 2 and slots.in_use == 2
    workers[-1].cancel()  # a waiter gives up: its place is not leaked
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*workers, return_exceptions=True)
    assert peak == 2 and slots.in_use == 0
    slots.conflicted()
    async with slots:
        assert slots.in_use == 1


def test_stats_line():
    stats = PlacementStats(attempts=10, commits=9, conflicts=1, placed=90)
    assert stats.line() == (
        "placement stats: attempts=10 commits=9 conflicts=1 guard_conflicts=0 placed=90 conflict_rate=0.1000"
    )


@pytest.fixture
async def env():
    store = MemoryStore()
    cache = ClusterCache(store)
    cache.start()
    await cache.ready()
    yield store, cache
    await cache.close()
    await store.close()


async def test_concurrent_placers_in_one_process_avoid_each_other(env, caplog):  # type: ignore[no-untyped-def]
    """With room everywhere, 16 concurrent decisions never collide: each sees the others' commits
    in flight as busy and takes another instance."""
    store, cache = env
    for i in range(40):
        await add_instance(store, f"i{i}", memory=10_000)
    await cache.sync()
    ask = TaskAsk(Resources(0, 10))
    caplog.set_level(logging.INFO, logger="dockyard.placement")

    async def placer(n: int) -> int:
        outcome = await place_tasks(store, cache, SCOPE, [ask], builder(ask), rng=random.Random(n))
        return outcome.conflicts

    conflicts = await asyncio.gather(*(placer(n) for n in range(16)))
    assert sum(conflicts) == 0 and cache.stats.conflicts == 0
    assert cache.stats.commits == cache.stats.attempts == 16 and cache.stats.placed == 16
    assert cache.inflight.busy(SCOPE) == frozenset()  # every mark released once applied
    assert "placement stats: attempts=" in caplog.text
