"""The StateStore contract, run against every backend (see conftest.BACKENDS).

Revisions are asserted relative to the store's starting revision, so the suite also fits a backend
(such as etcd) whose empty store is not at revision 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.clock import FakeClock, SystemClock
from dockyard.store import open_store
from dockyard.store.base import (
    MAX_TXN_OPS,
    Compacted,
    Compare,
    CompareTarget,
    Conflict,
    Delete,
    EventType,
    KeyValue,
    LeaseNotFound,
    Put,
    StateStore,
    StoreClosed,
    TxnTooLarge,
    WatchEvent,
)
from tests.store.conftest import make_store

DEADLINE = 5.0  # seconds; generous, only reached when something is broken


async def put(store: StateStore, key: str, value: bytes = b"v", lease: int = 0) -> int:
    return (await store.txn(puts=[Put(key, value, lease)])).revision


async def next_events(watch: AsyncIterator[WatchEvent], n: int) -> list[tuple[EventType, str, int]]:
    """The next ``n`` events as (type, key, mod_revision), or fail at the deadline."""
    events = []
    for _ in range(n):
        event = await asyncio.wait_for(anext(watch), DEADLINE)
        events.append((event.type, event.kv.key, event.kv.mod_revision))
    return events


# ---- get, put, revisions ---------------------------------------------------------------------


async def test_put_get_and_per_key_revisions(store: StateStore) -> None:
    r0 = await store.revision()
    assert await store.get("/a") is None
    r1 = await put(store, "/a", b"one")
    assert r1 == r0 + 1
    assert await store.get("/a") == KeyValue("/a", b"one", r1, r1, 1)
    r2 = await put(store, "/b")
    r3 = await put(store, "/a", b"two")
    assert (r2, r3) == (r0 + 2, r0 + 3)
    assert await store.get("/a") == KeyValue("/a", b"two", r1, r3, 2)
    assert await store.revision() == r3


async def test_delete_then_recreate_starts_a_new_generation(store: StateStore) -> None:
    await put(store, "/k")
    await put(store, "/k")
    r = (await store.txn(deletes=[Delete("/k")])).revision
    assert await store.get("/k") is None
    assert await store.revision() == r
    r2 = await put(store, "/k", b"again")
    assert await store.get("/k") == KeyValue("/k", b"again", r2, r2, 1)


async def test_txn_applies_all_ops_at_one_revision_and_returns_prev(store: StateStore) -> None:
    await put(store, "/x", b"old-x")
    await put(store, "/y", b"old-y")
    before_x, before_y = await store.get("/x"), await store.get("/y")
    result = await store.txn(puts=[Put("/x", b"new"), Put("/z", b"z")], deletes=[Delete("/y")])
    assert result.prev == {"/x": before_x, "/y": before_y}
    x, z = await store.get("/x"), await store.get("/z")
    assert x is not None and z is not None
    assert x.mod_revision == z.mod_revision == result.revision
    assert await store.get("/y") is None


async def test_txn_that_changes_nothing_keeps_the_revision(store: StateStore) -> None:
    await put(store, "/a")
    r = await store.revision()
    kv = await store.get("/a")
    assert (await store.txn(compares=[Compare.unchanged(kv, "/a")])).revision == r
    assert (await store.txn(deletes=[Delete("/missing")])).revision == r
    assert (await store.txn()).revision == r
    assert await store.revision() == r


async def test_values_are_binary_and_keys_unicode(store: StateStore) -> None:
    value = bytes(range(256)) * 40
    await put(store, "/ünï/☃/key with spaces%_", value)
    kv = await store.get("/ünï/☃/key with spaces%_")
    assert kv is not None and kv.value == value


# ---- compares and conflicts ----------------------------------------------------------------------


async def test_compare_mod_revision(store: StateStore) -> None:
    r = await put(store, "/a")
    await store.txn([Compare.mod_revision("/a", r)], [Put("/a", b"2")])
    with pytest.raises(Conflict) as info:
        await store.txn([Compare.mod_revision("/a", r)], [Put("/a", b"3")])
    assert info.value.keys == ("/a",)
    kv = await store.get("/a")
    assert kv is not None and kv.value == b"2"


async def test_compare_mod_zero_and_absent_mean_create_only(store: StateStore) -> None:
    await store.txn([Compare.absent("/n")], [Put("/n", b"1")])
    with pytest.raises(Conflict):
        await store.txn([Compare.absent("/n")], [Put("/n", b"2")])
    with pytest.raises(Conflict):
        await store.txn([Compare.mod_revision("/n", 0)], [Put("/n", b"2")])
    await store.txn([Compare.mod_revision("/m", 0)], [Put("/m", b"1")])
    assert await store.get("/m") is not None


async def test_compare_version(store: StateStore) -> None:
    await put(store, "/v")
    await put(store, "/v")
    with pytest.raises(Conflict):
        await store.txn([Compare("/v", CompareTarget.VERSION, 1)], [Put("/v", b"x")])
    await store.txn([Compare("/v", CompareTarget.VERSION, 2)], [Put("/v", b"x")])
    await store.txn([Compare("/w", CompareTarget.VERSION, 0)], [Put("/w", b"x")])
    kv = await store.get("/v")
    assert kv is not None and kv.version == 3


async def test_conflict_names_every_failed_key_and_writes_nothing(store: StateStore) -> None:
    ra = await put(store, "/a")
    await put(store, "/b")
    await put(store, "/c")
    r = await store.revision()
    with pytest.raises(Conflict) as info:
        await store.txn(
            [Compare.absent("/c"), Compare.mod_revision("/a", ra), Compare.absent("/b")],
            [Put("/a", b"changed"), Put("/new", b"n")],
            [Delete("/b")],
        )
    assert info.value.keys == ("/c", "/b")
    assert await store.revision() == r
    assert await store.get("/new") is None
    assert await store.get("/b") is not None


async def test_txn_size_limit(store: StateStore) -> None:
    puts = [Put(f"/k/{i:03d}", b"") for i in range(MAX_TXN_OPS)]
    await store.txn(puts=puts)
    with pytest.raises(TxnTooLarge):
        await store.txn(compares=[Compare.absent("/z")], puts=puts)
    with pytest.raises(ValueError):
        await store.txn(puts=[Put("/d", b"")], deletes=[Delete("/d")])
    assert len((await store.list("/k/")).kvs) == MAX_TXN_OPS


# ---- list ----------------------------------------------------------------------------------------


async def test_list_prefix_order_and_revision(store: StateStore) -> None:
    for key in ["/p/b", "/p/a", "/p/c/d", "/pa", "/o", "/p"]:
        await put(store, key, key.encode())
    result = await store.list("/p/")
    assert [kv.key for kv in result.kvs] == ["/p/a", "/p/b", "/p/c/d"]
    assert [kv.value for kv in result.kvs] == [b"/p/a", b"/p/b", b"/p/c/d"]
    assert result.revision == await store.revision()
    assert result.more is False
    assert [kv.key for kv in (await store.list("")).kvs] == ["/o", "/p", "/p/a", "/p/b", "/p/c/d", "/pa"]
    assert (await store.list("/nothing/")).kvs == []


async def test_list_pages_with_start_after_and_limit(store: StateStore) -> None:
    keys = [f"/page/{i:02d}" for i in range(10)]
    await store.txn(puts=[Put(k, b"x") for k in keys])
    await put(store, "/pagez")
    seen: list[str] = []
    start_after = None
    pages = 0
    while True:
        page = await store.list("/page/", start_after=start_after, limit=3)
        seen += [kv.key for kv in page.kvs]
        pages += 1
        if not page.more:
            break
        start_after = page.kvs[-1].key
    assert seen == keys
    assert pages == 4
    exact = await store.list("/page/", limit=10)
    assert len(exact.kvs) == 10 and exact.more is False
    assert (await store.list("/page/", start_after="/a", limit=2)).kvs[0].key == "/page/00"
    assert (await store.list("/page/", start_after="/page/09")).kvs == []


async def test_list_keys_only(store: StateStore) -> None:
    r = await put(store, "/ko/a", b"big value")
    (kv,) = (await store.list("/ko/", keys_only=True)).kvs
    assert kv == KeyValue("/ko/a", b"", r, r, 1)


async def test_count(store: StateStore, clock: FakeClock) -> None:
    for key in ["/p/b", "/p/a", "/p/c/d", "/pa", "/o", "/p", "/p\U0010ffffz", "/ü/1", "/ü/2"]:
        await put(store, key, b"value")
    assert await store.count("/p/") == 3
    assert await store.count("/p") == 6
    assert await store.count("/ü/") == 2
    assert await store.count("") == 9
    assert await store.count("/nothing/") == 0
    await store.txn(deletes=[Delete("/p/a")])
    assert await store.count("/p/") == 2
    lease = await store.grant_lease(5)
    await put(store, "/p/leased", b"", lease)
    assert await store.count("/p/") == 3
    clock.advance(6)
    assert await store.count("/p/") == 2  # counting reaps what expired, like every read


# ---- watch ---------------------------------------------------------------------------------------


async def test_watch_replays_history_in_revision_order_then_goes_live(store: StateStore) -> None:
    r0 = await store.revision()
    await put(store, "/w/a")
    await store.txn(puts=[Put("/w/b", b"1"), Put("/other", b"1")], deletes=[Delete("/w/a")])
    watch = store.watch("/w/", r0 + 1)
    assert await next_events(watch, 3) == [
        (EventType.PUT, "/w/a", r0 + 1),
        (EventType.PUT, "/w/b", r0 + 2),
        (EventType.DELETE, "/w/a", r0 + 2),
    ]
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)
    r = await put(store, "/w/c", b"live")
    event = await asyncio.wait_for(pending, DEADLINE)
    assert event == WatchEvent(EventType.PUT, KeyValue("/w/c", b"live", r, r, 1))


async def test_delete_event_shape(store: StateStore) -> None:
    await put(store, "/d/k", b"value")
    r = (await store.txn(deletes=[Delete("/d/k")])).revision
    watch = store.watch("/d/", r)
    event = await asyncio.wait_for(anext(watch), DEADLINE)
    assert event == WatchEvent(EventType.DELETE, KeyValue("/d/k", b"", 0, r, 0))


async def test_list_then_watch_has_no_gap(store: StateStore) -> None:
    await put(store, "/lw/a")
    listed = await store.list("/lw/")
    await put(store, "/lw/b")  # lands between the list and the watch
    watch = store.watch("/lw/", listed.revision + 1)
    assert [key for _, key, _ in await next_events(watch, 1)] == ["/lw/b"]


async def test_watch_from_zero_starts_at_the_next_revision(store: StateStore) -> None:
    await put(store, "/z/old")
    watch = store.watch("/z/", 0)
    r = await put(store, "/z/new")
    assert await next_events(watch, 1) == [(EventType.PUT, "/z/new", r)]


async def test_many_watchers_each_see_every_event(store: StateStore) -> None:
    r0 = await store.revision()
    watches = [store.watch("/m/", r0 + 1) for _ in range(5)]
    collected = [asyncio.ensure_future(next_events(w, 20)) for w in watches]
    for i in range(20):
        await put(store, f"/m/{i}")
    expected = [(EventType.PUT, f"/m/{i}", r0 + 1 + i) for i in range(20)]
    assert await asyncio.gather(*collected) == [expected] * 5


# ---- compaction ----------------------------------------------------------------------------------


async def test_compaction_drops_older_history(store: StateStore) -> None:
    r0 = await store.revision()
    for i in range(5):
        await put(store, "/c/k", str(i).encode())
    await store.compact(r0 + 3)
    assert await store.compacted_revision() == r0 + 3
    with pytest.raises(Compacted) as info:
        async for _ in store.watch("/c/", r0 + 2):
            pass
    assert (info.value.requested, info.value.compacted) == (r0 + 2, r0 + 3)
    assert [r for _, _, r in await next_events(store.watch("/c/", r0 + 3), 3)] == [r0 + 3, r0 + 4, r0 + 5]
    await store.compact(r0 + 1)  # older than the compaction point: nothing to do
    assert await store.compacted_revision() == r0 + 3
    with pytest.raises(ValueError):
        await store.compact(r0 + 100)
    kv = await store.get("/c/k")  # compaction never touches current values
    assert kv is not None and kv.value == b"4" and kv.version == 5


async def test_a_watcher_left_behind_by_compaction_gets_compacted(store: StateStore) -> None:
    r0 = await put(store, "/lag/a")
    watch = store.watch("/lag/", r0)
    assert len(await next_events(watch, 1)) == 1
    await put(store, "/lag/b")
    r = await put(store, "/lag/c")
    await store.compact(r)
    with pytest.raises(Compacted):
        await asyncio.wait_for(anext(watch), DEADLINE)


# ---- leases --------------------------------------------------------------------------------------


async def test_lease_expiry_deletes_its_keys_in_one_revision(store: StateStore, clock: FakeClock) -> None:
    lease = await store.grant_lease(10)
    await put(store, "/l/a", b"a", lease)
    await put(store, "/l/b", b"b", lease)
    await put(store, "/l/keep", b"k")
    r = await store.revision()
    watch = store.watch("/l/", r + 1)
    clock.advance(9)
    assert await store.get("/l/a") is not None
    clock.advance(1.5)
    assert await store.get("/l/a") is None  # any operation reaps what expired
    assert await store.get("/l/b") is None
    assert await store.get("/l/keep") is not None
    assert await store.revision() == r + 1
    assert await next_events(watch, 2) == [
        (EventType.DELETE, "/l/a", r + 1),
        (EventType.DELETE, "/l/b", r + 1),
    ]
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease)
    with pytest.raises(LeaseNotFound):
        await put(store, "/l/late", b"", lease)


async def test_keepalive_extends_a_lease(store: StateStore, clock: FakeClock) -> None:
    lease = await store.grant_lease(5)
    await put(store, "/ka", b"", lease)
    for _ in range(4):
        clock.advance(4)
        await store.keepalive(lease)
    assert await store.get("/ka") is not None
    clock.advance(5)
    assert await store.get("/ka") is None


async def test_revoke_deletes_keys_and_forgets_the_lease(store: StateStore) -> None:
    lease = await store.grant_lease(60)
    empty = await store.grant_lease(60)
    await put(store, "/rv/a", b"", lease)
    r = await store.revision()
    await store.revoke_lease(lease)
    assert await store.get("/rv/a") is None
    assert await store.revision() == r + 1
    await store.revoke_lease(empty)  # no keys: nothing changes
    assert await store.revision() == r + 1
    for call in (store.keepalive, store.revoke_lease):
        with pytest.raises(LeaseNotFound):
            await call(lease)


async def test_put_with_unknown_lease_fails_and_put_without_lease_detaches(
    store: StateStore, clock: FakeClock
) -> None:
    with pytest.raises(LeaseNotFound):
        await put(store, "/u", b"", 987654321)
    assert await store.get("/u") is None
    lease = await store.grant_lease(1)
    await put(store, "/u", b"leased", lease)
    kv = await store.get("/u")
    assert kv is not None and kv.lease == lease
    await put(store, "/u", b"free")
    clock.advance(2)
    kv = await store.get("/u")
    assert kv is not None and kv.value == b"free" and kv.lease == 0


async def test_leases_expire_in_the_background(backend: str, tmp_path: Path) -> None:
    store = make_store(backend, tmp_path, SystemClock(), lease_check_interval=0.02)
    try:
        lease = await store.grant_lease(0.1)
        r = await put(store, "/bg", b"", lease)
        watch = store.watch("/bg", r + 1)  # only a watch is waiting: no operation triggers expiry
        assert await next_events(watch, 1) == [(EventType.DELETE, "/bg", r + 1)]
    finally:
        await store.close()


# ---- lifecycle -----------------------------------------------------------------------------------


async def test_closed_store_refuses_work_and_ends_watches(store: StateStore) -> None:
    r = await put(store, "/x")
    watch = store.watch("/x", r + 1)
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)
    await store.close()
    with pytest.raises(StoreClosed):
        await asyncio.wait_for(pending, DEADLINE)
    with pytest.raises(StoreClosed):
        await store.get("/x")
    with pytest.raises(StoreClosed):
        await put(store, "/y")
    await store.close()  # idempotent


async def test_open_store_by_url(tmp_path: Path) -> None:
    for url in ("memory://", f"sqlite:///{tmp_path}/sub/dir/state.db"):
        store = open_store(url)
        assert isinstance(store, StateStore)
        await put(store, "/k")
        await store.close()
    for bad in ("etcd2://x", "sqlite://relative/path.db", "sqlite:///", "nonsense"):
        with pytest.raises(ValueError):
            open_store(bad)
