"""Properties of every backend under concurrency and random use.

- No lost update: many coroutines doing read-modify-write with retry-on-conflict on a few hot
  counters end with every increment counted.
- Differential: hypothesis draws random sequences of transactions, gets and lists; the SQLite store
  must answer exactly like the memory store (the reference backend), including which compares fail.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.clock import FakeClock
from dockyard.store.base import (
    Compare,
    CompareTarget,
    Conflict,
    Delete,
    Put,
    StateStore,
    StoreError,
    WatchEvent,
)
from dockyard.store.memory import MemoryStore
from dockyard.store.sqlite import SqliteStore
from tests.store.conftest import make_store

COUNTERS = 4
WORKERS = 16
INCREMENTS = 25


async def _increment(store: StateStore, key: str, rng: random.Random) -> int:
    """Add one to the counter at ``key``; return how many conflicts it took."""
    conflicts = 0
    while True:
        kv = await store.get(key)
        for _ in range(rng.randrange(3)):  # vary the interleaving of readers and writers
            await asyncio.sleep(0)
        value = int(kv.value) + 1 if kv else 1
        try:
            await store.txn([Compare.unchanged(kv, key)], [Put(key, str(value).encode())])
            return conflicts
        except Conflict as conflict:
            assert conflict.keys == (key,)
            conflicts += 1


async def test_concurrent_read_modify_write_loses_no_update(backend: str, tmp_path: Path) -> None:
    store = make_store(backend, tmp_path, FakeClock())
    rng = random.Random(1234)
    plan = [[rng.randrange(COUNTERS) for _ in range(INCREMENTS)] for _ in range(WORKERS)]

    async def worker(counters: list[int], seed: int) -> int:
        wrng = random.Random(seed)
        return sum([await _increment(store, f"/counter/{c}", wrng) for c in counters])

    try:
        conflicts = await asyncio.gather(*(worker(p, i) for i, p in enumerate(plan)))
        for c in range(COUNTERS):
            kv = await store.get(f"/counter/{c}")
            expected = sum(p.count(c) for p in plan)
            assert kv is not None and int(kv.value) == expected
            assert kv.version == expected
        assert sum(conflicts) > 0, "the test must actually make writers collide"
    finally:
        await store.close()


# ---- differential: SQLite against the reference --------------------------------------------------

KEYS = ["/a", "/a/1", "/a/2", "/b", "/b/1", "/ab"]
PREFIXES = ["", "/a", "/a/", "/b/", "/c"]

keys = st.sampled_from(KEYS)
compare = st.builds(
    lambda key, target, value: Compare(key, target, 0 if target is CompareTarget.ABSENT else value),
    keys,
    st.sampled_from(list(CompareTarget)),
    st.integers(0, 6),
)
txn_op = st.tuples(
    st.just("txn"),
    st.lists(compare, max_size=3),
    st.lists(st.builds(Put, keys, st.binary(max_size=4)), max_size=3, unique_by=lambda p: p.key),
    st.lists(st.builds(Delete, keys), max_size=2, unique_by=lambda d: d.key),
)
read = st.one_of(
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("list"), st.sampled_from(PREFIXES), st.sampled_from([None, *KEYS]), st.integers(0, 3)),
    st.tuples(st.just("count"), st.sampled_from(PREFIXES)),
)
compact = st.tuples(st.just("compact"), st.integers(0, 3))
operations = st.lists(st.one_of(txn_op, txn_op, read, compact), min_size=1, max_size=25)


async def apply_op(store: StateStore, op: tuple[Any, ...]) -> object:
    try:
        match op:
            case ("txn", compares, puts, deletes):
                if {p.key for p in puts} & {d.key for d in deletes}:
                    return "skipped"
                return await store.txn(compares, puts, deletes)
            case ("get", key):
                return await store.get(key)
            case ("list", prefix, start_after, limit):
                return await store.list(prefix, start_after=start_after, limit=limit)
            case ("count", prefix):
                return await store.count(prefix)
            case ("compact", back):
                await store.compact(max(0, await store.revision() - back))
                return await store.compacted_revision()
    except Conflict as conflict:
        return ("Conflict", conflict.keys)
    except (StoreError, ValueError) as error:
        return type(error).__name__
    raise AssertionError(op)


async def history(store: StateStore) -> list[WatchEvent]:
    """Every event the store still remembers (a final marker write tells where history ends)."""
    start = max(await store.compacted_revision(), 1)
    end = (await store.txn(puts=[Put("/~end", b"")])).revision
    events: list[WatchEvent] = []
    async for event in store.watch("", start):
        if event.kv.mod_revision == end:
            return events
        events.append(event)
    raise AssertionError("the watch ended")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_sqlite_answers_like_the_reference(ops: list[tuple[Any, ...]]) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            reference, sqlite = MemoryStore(FakeClock()), SqliteStore(Path(tmp) / "s.db", FakeClock())
            try:
                for op in ops:
                    assert await apply_op(sqlite, op) == await apply_op(reference, op), op
                assert await sqlite.list("") == await reference.list("")
                assert await history(sqlite) == await history(reference)
            finally:
                await reference.close()
                await sqlite.close()

    asyncio.run(run())
