"""The embedded StateStore: one SQLite file in WAL mode, durable writes through group commit.

Durability: a write is acknowledged only after the commit that contains it is fsynced
(``synchronous=FULL``), so it survives a machine crash. A single fsync costs a few milliseconds
(~400 commits/s on our machines), so one transaction per commit would cap the control plane there.

Group commit: every write (txn, lease grant/keepalive/revoke, compaction) becomes a job on a queue.
One writer thread with its own connection takes everything queued, opens one ``BEGIN IMMEDIATE``
transaction, runs the jobs (a failed compare or error undoes only that job), commits once (one
fsync for the whole batch), and only then answers each caller through its event loop
(``call_soon_threadsafe``). Callers that arrive while a commit is syncing form the next batch, so
throughput grows with concurrency instead of being capped by the disk's fsync rate.
``commit_count``, ``durable_revision`` and ``on_commit(batch_size)`` let tests observe commits.

The writer competes with the event loop for the GIL: every SQLite statement, and every row a
statement steps over, releases it and must win it back, which under load costs far more than
SQLite's own work (a thread waiting for the GIL gets it after the interpreter's switch interval,
which the server therefore shortens: ``cli/server_cmd.py``). So consecutive transactions run
together (``sqlite_jobs.run_txns``: one read of the keys they touch, compares decided in Python, a
few multi-row writes, one SAVEPOINT; an error under them reruns each alone, as a batch of one, so
only the one at fault fails), and the writer remembers the rows it wrote or read
(``sqlite_jobs.Known``) for as long as the file's revision at the start of a batch is the one it
last committed, i.e. no other process wrote. Lease jobs run alone, each in its own SAVEPOINT;
expired leases are reaped when the first expiry the batch reads has passed.

Revisions are read from the ``meta`` row inside the write transaction, and ``BEGIN IMMEDIATE`` takes
the database's write lock first, so several processes sharing one file keep one correct counter.

Reads use a read connection per thread (WAL readers never block the writer nor each other).
``get``, ``count`` and bounded pages run directly on the caller's thread, which measured several
times cheaper than a hop to a thread pool (and no GIL hand-off between threads). A read whose size is
not known up front (``limit=None`` or above the inline bound) first tries the bound on the caller's
thread and, only when more rows remain, reads again in the default executor, so a large read never
stalls the loop for long and a small one never pays for the hop. Counts cost far less per key than
rows, so their bound is higher. An inline page of more than a few dozen rows yields to the loop once,
so a caller paging through a large prefix lets other requests run between its pages.

Watches read the ``changes`` table (the change log, one row per event, ``(rev, seq)`` ordered).
After each commit the writer wakes this process's watchers and hands them the batch's events when
all of them came from ``run_txns`` (a watcher at that batch takes them instead of reading them back:
each row read gives the GIL away); a per-loop poller also checks the revision every
``poll_interval`` seconds so writes from other processes on the same file reach watchers too, from
the log. ``compact(rev)`` deletes change rows below ``rev``.

Leases live in the ``leases`` table with an expiry on the injected monotonic clock. The writer reaps
expired leases at the start of every batch and every ``lease_check_interval`` seconds. After each
batch it also notes when the first lease in the file expires (``_next_expiry``), so a read compares
one float, runs no lease SQL, and asks the writer to reap only once that time has passed. Leases
granted by another process on the same file are in that figure from this process's next batch or
periodic check on. A monotonic clock does not survive a reboot, so opening a store restarts every
lease's TTL (as etcd does when a new leader takes over).

Keys are stored as UTF-8 BLOBs: byte order equals code point order, and since UTF-8 never contains
0xFF, ``prefix + b"\\xff"`` bounds a prefix range exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard.clock import Clock, SystemClock
from dockyard.store import sqlite_jobs as jobs
from dockyard.store.base import (
    Compacted,
    Compare,
    Delete,
    KeyValue,
    ListResult,
    Put,
    StoreClosed,
    TxnResult,
    WatchEvent,
    check_ops,
)

log = logging.getLogger(__name__)

_MAX_BATCH = 256  # jobs per commit
# Reads up to these sizes run on the caller's thread: at most ~0.7 ms here (~1.4 us a row, values or
# not: SQLite still visits each row for its revisions; ~30 ns a key counted). Beyond them the GIL-free
# part (SQLite's own work) is worth the hop to a thread.
_INLINE_ROWS = 512
_INLINE_COUNT = 20_000
_YIELD_ROWS = 64  # an inline read of more rows than this yields to the event loop once
_WATCH_WINDOW = 256  # revisions a watcher reads per query while catching up
_BUSY_TIMEOUT_S = 10.0


@dataclass(eq=False, slots=True)
class _Job:
    apply: jobs.Apply | jobs.Txn
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


Outcome = tuple[_Job, Any, BaseException | None]  # a job and its result or error
# Aliases for annotations inside SqliteStore, where ``list`` names the method.
_Jobs = list[_Job]
_Outcomes = list[Outcome]
_Events = list[WatchEvent]
_Results = list[TxnResult | Exception]


@dataclass(frozen=True, slots=True)
class _Committed:
    """The events of one batch this process committed: every revision from ``first`` to ``last``."""

    first: int
    last: int
    events: _Events


_RECENT = 64  # batches a hub keeps for its watchers


class _Hub:
    """Wakes the watchers of one event loop when the store's revision moves, and keeps the events
    of the last ``_RECENT`` batches this process committed (``recent``, by first revision), so a
    watcher that is at such a batch takes its events from here instead of reading them back from
    the change log: a read steps SQLite once per row and gives the GIL away at every step."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()
        self.seen = 0
        self.watchers = 0
        self.poller: asyncio.Task[None] | None = None
        self.recent: dict[int, _Committed] = {}

    def notify(self, revision: int, committed: _Committed | None = None) -> None:
        if committed is not None and self.watchers:
            self.recent[committed.first] = committed
            if len(self.recent) > _RECENT:
                del self.recent[next(iter(self.recent))]
        if revision > self.seen:
            self.seen = revision
            self.wake()

    def wake(self) -> None:
        event, self.event = self.event, asyncio.Event()
        event.set()


class SqliteStore:
    """A StateStore in one SQLite file (see the module docstring for the design)."""

    def __init__(
        self,
        path: str | Path,
        clock: Clock | None = None,
        *,
        poll_interval: float = 0.05,
        lease_check_interval: float | None = 0.25,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._path = str(path)
        self._clock = clock or SystemClock()
        self._poll_interval = poll_interval
        self._lease_check_interval = lease_check_interval
        self.on_commit = on_commit  # called on the writer thread after each commit, with its job count
        self.commit_count = 0  # commits (fsyncs) done by this store's writer
        self.durable_revision = 0  # highest revision this store's writer has committed
        self._closed = False
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # (C: no Python-level locking)
        self._local = threading.local()
        self._readers: set[sqlite3.Connection] = set()
        self._hubs: dict[asyncio.AbstractEventLoop, _Hub] = {}
        self._lock = threading.Lock()  # guards _readers and _hubs
        self._next_expiry = math.inf  # when the first lease expires (set by _init_file and the writer)
        self._known = jobs.Known()  # the writer's: rows it knows without reading them
        # the compaction point as last seen (own compactions at once, other processes' by the next
        # read of ``meta``, at least every ``poll_interval`` while anyone watches): a watcher taking
        # a batch's events from its hub checks it, as a read of the change log would
        self._compacted = 0
        self._init_file()
        self._writer = threading.Thread(
            target=self._write_loop, name=f"sqlite-writer {self._path}", daemon=True
        )
        self._writer.start()

    # ---- reads -------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        await self._enter()
        row = self._reader().execute(jobs.SELECT_KV, (key.encode(),)).fetchone()
        return None if row is None else KeyValue(key, *row)

    async def list(
        self,
        prefix: str,
        *,
        start_after: str | None = None,
        limit: int | None = None,
        keys_only: bool = False,
    ) -> ListResult:
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        await self._enter()
        bounded = limit is not None and 0 < limit <= _INLINE_ROWS
        page = self._list(prefix, start_after, limit if bounded else _INLINE_ROWS, keys_only)
        if not bounded and page.more:  # more than the bound: read it all on a thread
            return await asyncio.to_thread(self._list, prefix, start_after, limit, keys_only)
        if len(page.kvs) > _YIELD_ROWS:
            await asyncio.sleep(0)  # so a caller paging through many rows lets the loop run between pages
        return page

    async def count(self, prefix: str) -> int:
        await self._enter()
        n = self._count(prefix, _INLINE_COUNT + 1)
        if n <= _INLINE_COUNT:
            return n
        return await asyncio.to_thread(self._count, prefix, -1)

    async def revision(self) -> int:
        await self._enter()
        return int(self._meta()[0])

    async def compacted_revision(self) -> int:
        self._check_open()
        return int(self._meta()[1])

    # ---- writes ------------------------------------------------------------------------------

    async def txn(
        self,
        compares: Sequence[Compare] = (),
        puts: Sequence[Put] = (),
        deletes: Sequence[Delete] = (),
    ) -> TxnResult:
        check_ops(compares, puts, deletes)
        result: TxnResult = await self._submit(jobs.Txn(tuple(compares), tuple(puts), tuple(deletes)))
        return result

    async def compact(self, revision: int) -> None:
        await self._submit(functools.partial(jobs.compact, revision))
        self._compacted = max(self._compacted, revision)

    # ---- leases ------------------------------------------------------------------------------

    async def grant_lease(self, ttl_seconds: float) -> int:
        if ttl_seconds <= 0:
            raise ValueError("a lease's TTL must be positive")
        lease_id: int = await self._submit(functools.partial(jobs.grant, ttl_seconds))
        return lease_id

    async def keepalive(self, lease_id: int) -> None:
        await self._submit(functools.partial(jobs.keepalive, lease_id))

    async def revoke_lease(self, lease_id: int) -> None:
        await self._submit(functools.partial(jobs.revoke, lease_id))

    # ---- watch -------------------------------------------------------------------------------

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[WatchEvent]:
        """Every change under ``prefix`` from ``from_revision`` on (<= 0: from the next revision)."""
        self._check_open()
        revision, compacted = self._meta()
        start = from_revision if from_revision > 0 else revision + 1
        if start < compacted:
            raise Compacted(start, compacted)
        return self._watch(prefix, start)

    async def _watch(self, prefix: str, next_rev: int) -> AsyncIterator[WatchEvent]:
        hub = self._join_hub()
        try:
            while True:
                self._check_open()
                wake = hub.event  # taken before reading, so a commit after the read still wakes us
                committed = hub.recent.get(next_rev)
                if committed is not None:  # a batch of ours: its events without reading them back
                    if next_rev < self._compacted:
                        raise Compacted(next_rev, self._compacted)
                    for event in committed.events:
                        if event.kv.key.startswith(prefix):
                            yield event
                    next_rev = committed.last + 1
                    caught_up = next_rev > hub.seen
                else:
                    events, next_rev, caught_up = self._read_changes(prefix, next_rev)
                    for event in events:
                        yield event
                if caught_up:
                    await wake.wait()
        finally:
            hub.watchers -= 1

    def _read_changes(self, prefix: str, next_rev: int) -> tuple[_Events, int, bool]:
        """Events in one window of revisions from ``next_rev``; the next position; caught up?"""
        lo = prefix.encode()
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            revision, compacted = conn.execute(jobs.SELECT_META).fetchone()
            self._compacted = max(self._compacted, compacted)
            if next_rev < compacted:
                raise Compacted(next_rev, compacted)
            last = min(revision, next_rev + _WATCH_WINDOW - 1)
            rows = conn.execute(jobs.SELECT_CHANGES, (next_rev, last, lo, _end(lo))).fetchall()
        finally:
            conn.execute("COMMIT")
        events = [
            WatchEvent(
                jobs.EVENT_TYPES[kind],
                KeyValue(key.decode(), value, create_rev, rev, version, lease),
            )
            for rev, key, kind, value, create_rev, version, lease in rows
        ]
        return events, max(next_rev, last + 1), last >= revision

    def _join_hub(self) -> _Hub:
        loop = asyncio.get_running_loop()
        with self._lock:
            hub = self._hubs.get(loop)
            if hub is None:
                hub = self._hubs[loop] = _Hub(loop)
        hub.watchers += 1
        if hub.poller is None:
            hub.poller = loop.create_task(self._poll(hub))
        return hub

    async def _poll(self, hub: _Hub) -> None:
        """Wake watchers when another process (or connection) moved the revision."""
        try:
            while hub.watchers > 0 and not self._closed:
                await asyncio.sleep(self._poll_interval)
                with contextlib.suppress(sqlite3.Error):
                    hub.notify(int(self._meta()[0]))
        finally:
            hub.poller = None

    # ---- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        await asyncio.to_thread(self._writer.join)
        leftovers: _Outcomes = []
        with contextlib.suppress(queue.Empty):
            while True:
                job = self._queue.get_nowait()
                if job is not None:
                    leftovers.append((job, None, StoreClosed("the store is closed")))
        _answer(leftovers, None, None, None)
        with self._lock:
            hubs = list(self._hubs.values())
            readers, self._readers = self._readers, set()
        for hub in hubs:
            with contextlib.suppress(RuntimeError):
                hub.loop.call_soon_threadsafe(hub.wake)
            if hub.poller is not None and hub.loop is asyncio.get_running_loop():
                hub.poller.cancel()
        for conn in readers:
            conn.close()

    # ---- internals: connections and reads ----------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _init_file(self) -> None:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"{self._path}: cannot switch to WAL mode (got {mode})")
            conn.execute("BEGIN IMMEDIATE")
            for statement in jobs.SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            jobs.upgrade(conn)
            # Restart every lease's TTL: expiries on the monotonic clock of an earlier boot are meaningless.
            conn.execute("UPDATE leases SET expires_at = ? + ttl", (self._clock.monotonic(),))
            self._next_expiry = jobs.next_expiry(conn)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self._check_open()
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._readers.add(conn)
        return conn

    def _meta(self) -> tuple[int, int]:
        revision, compacted = self._reader().execute(jobs.SELECT_META).fetchone()
        self._compacted = max(self._compacted, compacted)
        return int(revision), int(compacted)

    async def _enter(self) -> None:
        """Start of a read: fail when closed; have the writer reap leases that have expired."""
        self._check_open()
        if self._clock.monotonic() >= self._next_expiry:
            await self._submit(jobs.nothing)  # every batch reaps expired leases first

    def _list(self, prefix: str, start_after: str | None, limit: int | None, keys_only: bool) -> ListResult:
        lo, lower, hi = prefix.encode(), ">=", _end(prefix.encode())
        if start_after is not None and start_after >= prefix:
            lo, lower = start_after.encode(), ">"
        value = "x''" if keys_only else "value"
        sql = jobs.SELECT_RANGE.format(
            value=value, lower=lower, limit=f"LIMIT {int(limit) + 1}" if limit else ""
        )
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            (revision,) = conn.execute(jobs.SELECT_REVISION).fetchone()
            rows = conn.execute(sql, (lo, hi)).fetchall()
        finally:
            conn.execute("COMMIT")
        more = limit is not None and 0 < limit < len(rows)
        return ListResult(
            [KeyValue(k.decode(), v, c, m, n, lease) for k, v, c, m, n, lease in rows[: limit or None]],
            revision,
            more,
        )

    def _count(self, prefix: str, limit: int) -> int:
        """Keys under ``prefix``, counting at most ``limit`` of them (-1: all)."""
        lo = prefix.encode()
        (n,) = self._reader().execute(jobs.COUNT_RANGE, (lo, _end(lo), limit)).fetchone()
        return int(n)

    # ---- internals: the writer ---------------------------------------------------------------

    async def _submit(self, apply: jobs.Apply | jobs.Txn) -> Any:
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Job(apply, future, loop))
        return await future

    def _write_loop(self) -> None:
        conn = self._connect()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self._lease_check_interval)
                except queue.Empty:
                    self._reap_if_due(conn)
                    continue
                queued: _Jobs = []
                while item is not None:  # take everything queued, up to a full batch
                    queued.append(item)
                    if len(queued) == _MAX_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if queued:
                    self._commit_batch(conn, queued)
                if item is None:
                    return
        finally:
            conn.close()

    def _reap_if_due(self, conn: sqlite3.Connection) -> None:
        try:
            due = conn.execute(jobs.LEASE_DUE, (self._clock.monotonic(),)).fetchone()
            if not due:  # also learn of leases other processes granted or kept alive meanwhile
                self._next_expiry = jobs.next_expiry(conn)
        except sqlite3.Error:
            log.exception("checking lease expiry failed")
            return
        if due:
            self._commit_batch(conn, [])  # every batch reaps expired leases first

    def _commit_batch(self, conn: sqlite3.Connection, queued: _Jobs) -> None:
        """Run ``queued`` in one transaction and commit once; then answer. Consecutive ``Txn`` jobs
        run together (``jobs.run_txns``) in one savepoint; any other job in a savepoint of its own."""
        outcomes: _Outcomes = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            start, first_expiry = conn.execute(jobs.SELECT_REVISION_AND_EXPIRY).fetchone()
            self._known.valid_at(start)  # (forgets everything if another process wrote meanwhile)
            batch = jobs.Batch(start, self._clock.monotonic())
            leases_moved = first_expiry is not None and first_expiry <= batch.now
            if leases_moved:
                self._known.forget()  # reaping deletes the leases' keys
                batch.complete = False
                jobs.reap(conn, batch)
            together: _Jobs = []
            for job in queued:
                if isinstance(job.apply, jobs.Txn):
                    together.append(job)
                    continue
                self._run_together(conn, batch, together, outcomes)
                together = []
                leases_moved = True  # grants, keepalives, revokes: the first expiry may move
                self._run_alone(conn, batch, job, outcomes)
            self._run_together(conn, batch, together, outcomes)
            if batch.revision != start:
                conn.execute("UPDATE meta SET revision = ?", (batch.revision,))
            if leases_moved:
                next_expiry = jobs.next_expiry(conn)
            else:
                next_expiry = math.inf if first_expiry is None else float(first_expiry)
            conn.execute("COMMIT")
        except Exception as exc:
            self._known.forget()
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._deliver([(job, None, exc) for job in queued], None, None)
            return
        self._known.committed(batch.revision)
        self._next_expiry = next_expiry
        self.commit_count += 1
        self.durable_revision = max(self.durable_revision, batch.revision)
        if self.on_commit is not None:
            try:
                self.on_commit(len(queued))
            except Exception:
                log.exception("on_commit hook failed")
        if batch.revision == start:
            self._deliver(outcomes, None, None)
        else:
            whole = batch.complete and len(batch.events) > 0
            committed = _Committed(start + 1, batch.revision, batch.events) if whole else None
            self._deliver(outcomes, batch.revision, committed)

    def _run_alone(self, conn: sqlite3.Connection, batch: jobs.Batch, job: _Job, outcomes: _Outcomes) -> None:
        """A job other than a ``Txn`` (leases, compaction), in a savepoint of its own."""
        assert not isinstance(job.apply, jobs.Txn)
        if getattr(job.apply, "func", job.apply) not in jobs.KEEPS_KV:
            self._known.forget()
            batch.complete = False  # it may write rows whose events run_txns does not know
        before = batch.revision
        conn.execute("SAVEPOINT job")
        try:
            outcomes.append((job, job.apply(conn, batch), None))
        except Exception as exc:
            conn.execute("ROLLBACK TO job")
            batch.revision = before
            outcomes.append((job, None, exc))
        conn.execute("RELEASE job")

    def _run_together(
        self, conn: sqlite3.Connection, batch: jobs.Batch, txns: _Jobs, outcomes: _Outcomes
    ) -> None:
        """Run ``Txn`` jobs with ``jobs.run_txns``. If it fails under them (SQLite cannot say whose
        rows it failed on), run each alone, so only the job at fault fails."""
        if not txns:
            return
        try:
            results = self._txns(conn, batch, txns)
        except Exception as exc:
            if len(txns) == 1:
                outcomes.append((txns[0], None, exc))
                return
            log.warning("%d transactions failed together; running them one by one", len(txns))
            for job in txns:
                self._run_together(conn, batch, [job], outcomes)
            return
        for job, result in zip(txns, results, strict=True):
            if isinstance(result, Exception):
                outcomes.append((job, None, result))
            else:
                outcomes.append((job, result, None))

    def _txns(self, conn: sqlite3.Connection, batch: jobs.Batch, txns: _Jobs) -> _Results:
        """``jobs.run_txns`` in a savepoint; on an error, everything it did is undone (rows,
        revision, events, what the writer remembers) before the error is raised again."""
        before, known_events = batch.revision, len(batch.events)
        conn.execute("SAVEPOINT txns")
        try:
            results = jobs.run_txns(
                conn, batch, [j.apply for j in txns if isinstance(j.apply, jobs.Txn)], self._known
            )
        except Exception:
            self._known.forget()
            conn.execute("ROLLBACK TO txns")
            conn.execute("RELEASE txns")
            batch.revision = before
            del batch.events[known_events:]
            raise
        conn.execute("RELEASE txns")
        return results

    def _deliver(self, outcomes: _Outcomes, revision: int | None, committed: _Committed | None) -> None:
        """Answer callers, one callback per event loop, and wake that loop's watchers (handing them
        ``committed``, the batch's events, when the batch wrote nothing but those)."""
        by_loop: dict[asyncio.AbstractEventLoop, _Outcomes] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        with self._lock:
            hubs = dict(self._hubs) if revision is not None else {}
        for loop in by_loop.keys() | hubs.keys():
            try:
                loop.call_soon_threadsafe(_answer, by_loop.get(loop, []), hubs.get(loop), revision, committed)
            except RuntimeError:  # that loop is closed: nobody is waiting there any more
                with self._lock:
                    self._hubs.pop(loop, None)


def _answer(
    outcomes: _Outcomes, hub: _Hub | None, revision: int | None, committed: _Committed | None
) -> None:
    """On the callers' loop: settle their futures, then wake the loop's watchers."""
    for job, result, exc in outcomes:
        if job.future.done():  # the caller was cancelled
            continue
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)
    if hub is not None and revision is not None:
        hub.notify(revision, committed)


def _end(prefix: bytes) -> bytes:
    """The smallest key above every key that starts with ``prefix`` (UTF-8 never contains 0xFF)."""
    return prefix + b"\xff"
