"""What only the SQLite store promises: durability, group commit, several processes on one file."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.clock import FakeClock
from dockyard.store import sqlite as sqlite_module
from dockyard.store.base import Compare, Conflict, Delete, EventType, Put, StateStore
from dockyard.store.memory import MemoryStore
from dockyard.store.sqlite import SqliteStore
from tests.store.test_conformance import DEADLINE, next_events, put
from tests.store.test_properties import apply_op, history, txn_op

WRITER = str(Path(__file__).with_name("durability_writer.py"))


class HeldCommits:
    """An ``on_commit`` hook that holds the writer thread inside the first commit's hook until
    released, so tests can look at the world between a batch's commit and its answers."""

    def __init__(self, hold: int = 1) -> None:
        self.hold = hold  # the commit to hold (1: the first)
        self.store: SqliteStore | None = None
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[tuple[int, int, int]] = []  # (commit_count, durable_revision, jobs)

    def __call__(self, jobs: int) -> None:
        assert self.store is not None
        self.batches.append((self.store.commit_count, self.store.durable_revision, jobs))
        if len(self.batches) == self.hold:
            self.entered.set()
            self.release.wait(DEADLINE)

    async def wait_until_held(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, DEADLINE), "the first commit never happened"


def held_store(path: Path, hold: int = 1) -> tuple[SqliteStore, HeldCommits]:
    hook = HeldCommits(hold)
    store = SqliteStore(path, FakeClock(), on_commit=hook)
    hook.store = store
    return store, hook


def disk_revision(path: Path) -> int:
    """The revision committed to the file, read by a connection of its own."""
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT revision FROM meta").fetchone()[0])


async def test_callers_are_answered_only_after_their_batch_commits(tmp_path: Path) -> None:
    store, hook = held_store(tmp_path / "state.db")
    acks: list[tuple[int, int, int]] = []  # (txn revision, commit_count, durable_revision) at answer time

    async def caller(i: int) -> None:
        result = await store.txn(puts=[Put(f"/g/{i}", b"x")])
        acks.append((result.revision, store.commit_count, store.durable_revision))

    try:
        callers = [asyncio.ensure_future(caller(i)) for i in range(48)]
        await hook.wait_until_held()
        # The first batch is committed (another connection sees it), yet none of its callers is answered.
        committed = hook.batches[0][1]
        assert committed >= 1 and disk_revision(tmp_path / "state.db") == committed
        for _ in range(20):
            await asyncio.sleep(0)
        assert not any(c.done() for c in callers)
        hook.release.set()
        await asyncio.wait_for(asyncio.gather(*callers), DEADLINE)
    finally:
        hook.release.set()
        await store.close()

    assert sorted(rev for rev, _, _ in acks) == list(range(1, 49))
    for revision, commits_seen, durable_seen in acks:
        assert durable_seen >= revision  # answered only once its revision was committed
        first_commit_with_it = next(n for n, durable, _ in hook.batches if durable >= revision)
        assert commits_seen >= first_commit_with_it
    assert len(hook.batches) < 48 and max(jobs for _, _, jobs in hook.batches) > 1  # group commit happened


async def test_a_failing_transaction_rolls_back_only_itself(tmp_path: Path) -> None:
    store, hook = held_store(tmp_path / "state.db")
    try:
        first = asyncio.ensure_future(store.txn(puts=[Put("/f/taken", b"")]))
        await hook.wait_until_held()  # the writer sits in the first commit's hook: the rest queue up
        bad_value = object()
        jobs = [
            store.txn([Compare.absent("/f/taken")], [Put("/f/never", b"")]),
            store.txn(puts=[Put("/f/partial", b"x"), Put("/f/unbindable", bad_value)]),  # type: ignore[arg-type]
            *(store.txn([Compare.absent(f"/f/{i}")], [Put(f"/f/{i}", b"")]) for i in range(10)),
        ]
        futures = [asyncio.ensure_future(job) for job in jobs]
        for _ in range(5):  # let every caller reach the queue
            await asyncio.sleep(0)
        hook.release.set()
        results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), DEADLINE)
        await first
    finally:
        hook.release.set()
    try:
        assert isinstance(results[0], Conflict)
        assert isinstance(results[1], sqlite3.Error)
        assert all(not isinstance(r, BaseException) for r in results[2:])
        assert await store.get("/f/partial") is None  # its savepoint was rolled back
        assert [kv.key for kv in (await store.list("/f/")).kvs] == sorted(
            ["/f/taken", *(f"/f/{i}" for i in range(10))]
        )
        assert hook.batches[-1][2] == 12  # all in one commit
        assert await store.revision() == 11
    finally:
        await store.close()


def _read_acks(proc: subprocess.Popen[bytes], buffer: bytearray, want: int, deadline: float) -> list[str]:
    """Read ``ACK`` lines from the writer until ``want`` arrived or the deadline passed."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while buffer.count(b"\n") < want and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
    return [
        line.split()[1] for line in bytes(buffer).decode().splitlines(keepends=True) if line.endswith("\n")
    ]


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    buffer = bytearray()
    with subprocess.Popen([sys.executable, WRITER, str(db), "/dur/"], stdout=subprocess.PIPE) as proc:
        try:
            _read_acks(proc, buffer, 2000, time.monotonic() + 30)
            assert proc.poll() is None, "the writer must still be writing when it is killed"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=DEADLINE)
        acked = _read_acks(proc, buffer, sys.maxsize, time.monotonic() + DEADLINE)  # and what it printed last
    assert len(acked) >= 2000

    async def check() -> None:
        store = SqliteStore(db, FakeClock())
        try:
            present = {kv.key for kv in (await store.list("/dur/")).kvs}
            assert not set(acked) - present, "acknowledged writes were lost"
        finally:
            await store.close()

    asyncio.run(check())


async def _run_writer(db: Path, prefix: str, count: int) -> dict[str, int]:
    """Run the writer process for ``count`` keys; its acknowledged keys and their revisions."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, WRITER, str(db), prefix, str(count), stdout=subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode == 0
    return {line.split()[1]: int(line.split()[2]) for line in out.decode().splitlines()}


async def test_watch_sees_writes_of_another_process(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    start = await put(sqlite_store, "/solo/start")
    watch = sqlite_store.watch("/solo/", start + 1)
    pending = asyncio.ensure_future(next_events(watch, 20))
    theirs = await _run_writer(tmp_path / "state.db", "/solo/child-", 20)  # this process writes nothing
    events = await pending
    assert {key: rev for _, key, rev in events} == theirs


async def test_processes_sharing_a_file_share_one_revision_sequence(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    start = await put(sqlite_store, "/mp/start")
    watch = sqlite_store.watch("/mp/", start + 1)
    child = asyncio.ensure_future(_run_writer(tmp_path / "state.db", "/mp/child-", 40))
    ours: list[int] = []
    while not child.done() or len(ours) < 40:  # write all the while the other process writes
        ours.append(await put(sqlite_store, f"/mp/parent-{len(ours)}"))
    theirs = await child
    total = len(ours) + len(theirs)
    events = await next_events(watch, total)
    assert {key for _, key, _ in events} == set(theirs) | {f"/mp/parent-{i}" for i in range(len(ours))}
    assert [rev for _, _, rev in events] == list(range(start + 1, start + 1 + total))  # one counter, no gaps
    assert all(kind is EventType.PUT for kind, _, _ in events)
    assert sorted([*ours, *theirs.values()]) == list(range(start + 1, start + 1 + total))


async def test_two_stores_on_one_file_lose_no_update(tmp_path: Path) -> None:
    a, b = SqliteStore(tmp_path / "state.db"), SqliteStore(tmp_path / "state.db")

    async def increment(store: StateStore, times: int) -> None:
        for _ in range(times):
            while True:
                kv = await store.get("/n")
                try:
                    await store.txn(
                        [Compare.unchanged(kv, "/n")],
                        [Put("/n", str(int(kv.value) + 1 if kv else 1).encode())],
                    )
                    break
                except Conflict:
                    continue

    try:
        await asyncio.gather(*(increment(s, 25) for s in (a, b) for _ in range(4)))
        kv = await a.get("/n")
        assert kv is not None and kv.value == b"200" and kv.version == 200
        assert await b.revision() == await a.revision() == 200
    finally:
        await a.close()
        await b.close()


async def test_reopen_keeps_state_and_restarts_lease_ttls(tmp_path: Path) -> None:
    before = FakeClock()
    before.advance(100)  # a long uptime before the "reboot"
    store = SqliteStore(tmp_path / "state.db", before)
    lease = await store.grant_lease(10)
    await put(store, "/r/leased", b"", lease)
    for i in range(5):
        await put(store, "/r/plain", str(i).encode())
    await store.compact(4)
    await store.close()

    after = FakeClock()  # the monotonic clock restarted at 0
    store = SqliteStore(tmp_path / "state.db", after)
    try:
        assert await store.revision() == 6
        assert await store.compacted_revision() == 4
        kv = await store.get("/r/plain")
        assert kv is not None and (kv.value, kv.version) == (b"4", 5)
        with pytest.raises(Exception, match="compacted"):
            await anext(store.watch("", 3))
        after.advance(9)
        assert await store.get("/r/leased") is not None
        after.advance(2)  # expired 10 s after reopening, not at the old clock's 110
        assert await store.get("/r/leased") is None
        assert await put(store, "/r/next") == 8
    finally:
        await store.close()


OLD_CHANGES_TABLE = """CREATE TABLE changes (rev INTEGER NOT NULL, seq INTEGER NOT NULL, key BLOB NOT NULL,
    type INTEGER NOT NULL, value BLOB NOT NULL DEFAULT x'', create_rev INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0, lease INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (rev, seq))
    WITHOUT ROWID"""


def _changes_sql(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("SELECT sql FROM sqlite_master WHERE name = 'changes'").fetchone()[0])


async def test_a_file_with_the_earlier_change_log_is_upgraded_with_its_history(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path, FakeClock())
    for i in range(4):
        await put(store, f"/u/{i % 2}", b"v" * (1500 + i))
    await store.txn([], [Put("/u/a", b"a"), Put("/u/b", b"b")], [Delete("/u/0")])
    await store.close()
    with sqlite3.connect(path) as conn:  # the layout an earlier version wrote
        conn.execute("ALTER TABLE changes RENAME TO changes_now")
        conn.execute(OLD_CHANGES_TABLE)
        conn.execute("INSERT INTO changes SELECT * FROM changes_now")
        conn.execute("DROP TABLE changes_now")
    assert "WITHOUT ROWID" in _changes_sql(path)

    store = SqliteStore(path, FakeClock())
    try:
        watch = store.watch("/u/", 1)
        events = [await asyncio.wait_for(anext(watch), DEADLINE) for _ in range(7)]
        assert [(e.type, e.kv.key, e.kv.mod_revision, len(e.kv.value)) for e in events] == [
            (EventType.PUT, "/u/0", 1, 1500),
            (EventType.PUT, "/u/1", 2, 1501),
            (EventType.PUT, "/u/0", 3, 1502),
            (EventType.PUT, "/u/1", 4, 1503),
            (EventType.PUT, "/u/a", 5, 1),
            (EventType.PUT, "/u/b", 5, 1),
            (EventType.DELETE, "/u/0", 5, 0),
        ]
        assert await put(store, "/u/c") == 6
    finally:
        await store.close()
    assert "WITHOUT ROWID" not in _changes_sql(path)


async def test_large_values_stay_on_their_pages(tmp_path: Path) -> None:
    """Task documents (~1.2 KB) and allocation records in the change log and ``kv`` need no
    overflow page each (a WITHOUT ROWID change log gave every one a mostly empty page)."""
    path = tmp_path / "state.db"
    store = SqliteStore(path, FakeClock())
    try:
        for i in range(50):
            await put(store, f"/tasks/{i:04d}", b"t" * 1200)
            await put(store, f"/tasks/{i:04d}", b"u" * 1300)
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        try:
            rows = conn.execute(
                "SELECT name, COUNT(*) FROM dbstat WHERE pagetype = 'overflow' GROUP BY name"
            ).fetchall()
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table")
    assert rows == []


# ---- reads: on the caller's thread when bounded, no lease SQL ------------------------------------


async def test_reads_beyond_the_inline_bounds_are_complete(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_INLINE_ROWS", 3)
    monkeypatch.setattr(sqlite_module, "_INLINE_COUNT", 5)
    keys = [f"/big/{i:02d}" for i in range(10)]
    await sqlite_store.txn(puts=[Put(k, k.encode()) for k in keys])
    await put(sqlite_store, "/bigger")
    revision = await sqlite_store.revision()
    for keys_only in (False, True):
        whole = await sqlite_store.list("/big/", keys_only=keys_only)
        assert [kv.key for kv in whole.kvs] == keys and not whole.more and whole.revision == revision
        assert [kv.value for kv in whole.kvs] == [b"" if keys_only else k.encode() for k in keys]
        page = await sqlite_store.list("/big/", start_after="/big/01", limit=7, keys_only=keys_only)
        assert [kv.key for kv in page.kvs] == keys[2:9] and page.more
    assert await sqlite_store.count("/big/") == 10
    assert await sqlite_store.count("/big") == 11


async def test_plain_reads_run_no_lease_sql(sqlite_store: SqliteStore, clock: FakeClock) -> None:
    lease = await sqlite_store.grant_lease(10)
    await put(sqlite_store, "/t/leased", b"", lease)
    await put(sqlite_store, "/t/plain")
    statements: list[str] = []
    sqlite_store._reader().set_trace_callback(statements.append)
    try:
        assert await sqlite_store.get("/t/plain") is not None
        assert len((await sqlite_store.list("/t/")).kvs) == 2
        assert await sqlite_store.count("/t/") == 2
        await sqlite_store.revision()
        assert statements and not [s for s in statements if "leases" in s]
        clock.advance(11)  # the lease is due: the next read has the writer reap it first
        assert await sqlite_store.get("/t/leased") is None
    finally:
        sqlite_store._reader().set_trace_callback(None)


async def test_leases_another_store_granted_still_expire(tmp_path: Path) -> None:
    clock = FakeClock()
    ours = SqliteStore(tmp_path / "state.db", clock, lease_check_interval=0.01)
    theirs = SqliteStore(tmp_path / "state.db", clock)
    try:
        lease = await theirs.grant_lease(10)
        await put(theirs, "/o/leased", b"", lease)
        await theirs.close()  # nobody is left to reap its lease but us
        clock.advance(11)
        deadline = time.monotonic() + DEADLINE
        while await ours.get("/o/leased") is not None:  # our writer's periodic check learns of it
            assert time.monotonic() < deadline, "a lease granted by another store never expired"
            await asyncio.sleep(0.01)
    finally:
        await theirs.close()
        await ours.close()


# ---- one batch, many transactions (jobs.run_txns) -----------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(txn_op, min_size=2, max_size=40))
def test_transactions_run_together_answer_as_if_run_alone(ops: list[tuple[Any, ...]]) -> None:
    """Transactions queued while the writer is busy run as one batch (read at once, decided in
    Python, written with multi-row statements); each must answer, and leave the file, exactly as
    the reference does running them one after another in the same order."""

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            reference = MemoryStore(FakeClock())
            store, hook = held_store(Path(tmp) / "state.db", hold=2)  # the lease's grant is the first
            try:
                lease = await store.grant_lease(100)
                assert lease == await reference.grant_lease(100)
                leased = [("txn", [], [Put("/a/1", b"l", lease)], [])]  # a lease in the batch's rows
                ops_all = [*leased, *ops, ("txn", [], [Put("/b", b"x", lease + 1)], [])]  # and a missing one
                first = asyncio.ensure_future(store.txn(puts=[Put("/~first", b"")]))
                await reference.txn(puts=[Put("/~first", b"")])
                await hook.wait_until_held()  # the writer sits in that commit: the rest queue up
                futures = [asyncio.ensure_future(apply_op(store, op)) for op in ops_all]
                for _ in range(5):  # let every caller reach the queue
                    await asyncio.sleep(0)
                hook.release.set()
                got = await asyncio.wait_for(asyncio.gather(*futures), DEADLINE)
                await first
                submitted = [r for r in got if r not in ("skipped", "ValueError")]  # refused before the queue
                assert hook.batches[2][2] == len(submitted)  # they did run as one batch
                expected = [await apply_op(reference, op) for op in ops_all]
                assert got == expected
                assert await store.list("") == await reference.list("")
                assert await history(store) == await history(reference)
            finally:
                hook.release.set()
                await reference.close()
                await store.close()

    asyncio.run(run())


async def test_the_writer_forgets_what_it_knew_when_another_process_writes(tmp_path: Path) -> None:
    """The writer decides compares from rows it remembers writing; a write by another store on the
    same file must make it read again (else it would accept a compare against a stale revision)."""
    ours = SqliteStore(tmp_path / "state.db", FakeClock())
    theirs = SqliteStore(tmp_path / "state.db", FakeClock())
    try:
        first = await ours.txn(puts=[Put("/k", b"1")])
        assert "/k" in ours._known.kvs  # remembered: the next compare on it reads nothing
        second = await theirs.txn([Compare.mod_revision("/k", first.revision)], [Put("/k", b"2")])
        with pytest.raises(Conflict):
            await ours.txn([Compare.mod_revision("/k", first.revision)], [Put("/k", b"3")])
        third = await ours.txn([Compare.mod_revision("/k", second.revision)], [Put("/k", b"3")])
        kv = await theirs.get("/k")
        assert kv is not None and (kv.value, kv.mod_revision, kv.version) == (b"3", third.revision, 3)
    finally:
        await ours.close()
        await theirs.close()


async def test_watchers_see_each_event_once_in_order_with_another_process_writing(tmp_path: Path) -> None:
    """A watcher takes this process's committed batches from its hub and everything else from the
    change log; interleaved with another process's writes, it must see exactly the history a fresh
    watch (reading it all back from the file) sees."""
    ours = SqliteStore(tmp_path / "state.db", FakeClock(), poll_interval=0.01)
    theirs = SqliteStore(tmp_path / "state.db", FakeClock())
    follower: asyncio.Future[None] | None = None
    try:
        start = await ours.revision() + 1
        live = ours.watch("/w/", start)
        seen: list[tuple[EventType, str, int]] = []

        async def follow() -> None:
            async for event in live:
                seen.append((event.type, event.kv.key, event.kv.mod_revision))

        follower = asyncio.ensure_future(follow())
        await asyncio.sleep(0)

        async def writer(store: SqliteStore, name: str) -> None:
            for i in range(60):
                await asyncio.gather(
                    *(store.txn(puts=[Put(f"/{d}/{name}{i % 7}-{j}", b"v")]) for j, d in enumerate("wxw"))
                )
                if i % 5 == 4:
                    await store.txn(deletes=[Delete(f"/w/{name}{i % 7}-0")])

        await asyncio.gather(writer(ours, "a"), writer(theirs, "b"))
        end = await put(ours, "/w/~end")
        everything: list[tuple[EventType, str, int]] = []
        async for event in ours.watch("/w/", start):  # no batch of ours left at these revisions?
            everything.append((event.type, event.kv.key, event.kv.mod_revision))
            if event.kv.mod_revision == end:
                break
        deadline = time.monotonic() + DEADLINE
        while (not seen or seen[-1][2] != end) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert seen == everything
        assert len(everything) > 200 and any(t is EventType.DELETE for t, _, _ in seen)
        hub = ours._hubs[asyncio.get_running_loop()]
        assert hub.recent, "the watcher never had a batch of ours to take from its hub"
    finally:
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        await ours.close()
        await theirs.close()
