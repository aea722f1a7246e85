"""The watch-fed cluster cache against the reference store."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from dockyard.domain.container_instances import InstanceStatus
from dockyard.placement import keys
from dockyard.placement.cache import ClusterCache, registered_instances
from dockyard.store.base import Compacted, Delete, Put
from dockyard.store.memory import MemoryStore
from tests.placement.factories import SCOPE, add_instance


@pytest.fixture
async def store():
    s = MemoryStore()
    yield s
    await s.close()


async def started(store) -> ClusterCache:  # type: ignore[no-untyped-def]
    cache = ClusterCache(store)
    cache.start()
    await cache.ready()
    return cache


async def test_lists_then_follows_the_watch(store):
    await add_instance(store, "a")
    cache = await started(store)
    try:
        assert [e.value.id for e in cache.instances(SCOPE)] == ["a"]
        assert cache.connected(SCOPE, "a")
        await add_instance(store, "b", connected=False)
        await cache.sync()
        assert sorted(e.value.id for e in cache.instances(SCOPE)) == ["a", "b"]
        assert not cache.connected(SCOPE, "b")
        assert registered_instances(cache, SCOPE) == 2
        await store.txn(deletes=[Delete(keys.liveness(SCOPE, "a"))])
        await cache.sync()
        assert not cache.connected(SCOPE, "a")
    finally:
        await cache.close()


async def test_desired_revision_moves_with_the_instance_and_its_tasks_and_wakes_waiters(store):
    instance = await add_instance(store, "a")
    cache = await started(store)
    try:
        before, tasks = cache.desired(SCOPE, "a")
        assert before > 0 and tasks == []
        event = cache.change_event(SCOPE, "a")
        drained = instance.__class__(**{**instance.__dict__, "status": InstanceStatus.DRAINING})
        result = await store.txn([], [Put(keys.instance(SCOPE, "a"), orjson.dumps(drained.to_document()))])
        await asyncio.wait_for(event.wait(), 5)
        assert cache.desired(SCOPE, "a")[0] == result.revision > before
        # an allocation change is not part of the desired set
        await store.txn([], [Put(keys.allocation(SCOPE, "a"), b'{"status": "DRAINING", "tasks": {}}')])
        await cache.sync()
        assert cache.desired(SCOPE, "a")[0] == result.revision
    finally:
        await cache.close()


class CompactingStore(MemoryStore):
    """Fails the first watch with Compacted, as a watch that fell behind compaction would."""

    watches = 0

    def watch(self, prefix, from_revision):  # type: ignore[no-untyped-def]
        self.watches += 1
        if self.watches == 1:
            raise Compacted(from_revision, from_revision + 1)
        return super().watch(prefix, from_revision)


async def test_relists_after_compaction():
    store = CompactingStore()
    try:
        await add_instance(store, "a")
        cache = await started(store)
        await add_instance(store, "b")
        await cache.sync()
        assert store.watches == 2
        assert sorted(e.value.id for e in cache.instances(SCOPE)) == ["a", "b"]
        await cache.close()
    finally:
        await store.close()


async def test_replayed_stale_events_are_ignored(store):
    await add_instance(store, "a")
    cache = await started(store)
    try:
        entry = cache.instance(SCOPE, "a")
        assert entry is not None
        from dockyard.store.base import EventType, KeyValue, WatchEvent

        # an event older than what the list showed changes nothing
        old = KeyValue(keys.instance(SCOPE, "a"), b"{}", 1, entry.mod_revision - 1, 1)
        cache.apply(WatchEvent(EventType.PUT, old))
        cache.apply(WatchEvent(EventType.DELETE, KeyValue(old.key, b"", 0, entry.mod_revision - 1, 0)))
        assert cache.instance(SCOPE, "a") is entry
    finally:
        await cache.close()


async def test_wait_applied_times_out_or_is_cancelled_and_later_waits_still_wake(store):
    cache = await started(store)
    try:
        beyond = cache.applied_revision + 10
        with pytest.raises(TimeoutError, match=f"revision {beyond}"):
            await cache.wait_applied(beyond, timeout=0.01)
        waiting = asyncio.ensure_future(cache.wait_applied(beyond))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        woken = asyncio.ensure_future(cache.wait_applied(cache.applied_revision + 1))
        await add_instance(store, "a")
        await asyncio.wait_for(woken, 5)
        await cache.sync()
    finally:
        await cache.close()
