"""The SQLite store's file format and the jobs its writer thread runs (see ``sqlite`` for the design).

Schema: ``meta`` (the global revision and the compaction point), ``kv`` (current values),
``changes`` (the change log watches read, one row per event in ``(rev, seq)`` order) and ``leases``
(TTL and expiry on the injected monotonic clock).

A job is ``apply(conn, batch) -> result``: it runs inside the writer's ``BEGIN IMMEDIATE``
transaction (in a savepoint of its own) and advances ``batch.revision`` when it writes.

A ``Txn`` job runs together with the other transactions of its batch (``run_txns``): their
keys are read with one query, their compares are checked in Python against what the transactions
before them wrote, and what they write is stored with a few multi-row statements. Every statement
(and every row it steps over) gives up the GIL and must win it back from the event loop's thread,
which under load costs far more than SQLite's own work, so a batch of a hundred transactions
that took several hundred statements takes about ten.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from dockyard.store.base import (
    Compare,
    Conflict,
    Delete,
    EventType,
    KeyValue,
    LeaseNotFound,
    Put,
    TxnResult,
    WatchEvent,
)

# The change log is a rowid table (rows appended in (rev, seq) order, found by its primary-key
# index): a row keeps its value on its own b-tree page. Files made before had it WITHOUT ROWID,
# whose index b-tree keeps at most ~1,000 bytes of a row on the page with 4 KiB pages and spills
# the rest of every larger value (a task document is ~1.2 KB) into an overflow page of its own,
# mostly empty: half of what each commit wrote. ``upgrade`` rebuilds such a table.
CHANGES_TABLE = """CREATE TABLE IF NOT EXISTS changes (rev INTEGER NOT NULL, seq INTEGER NOT NULL,
    key BLOB NOT NULL, type INTEGER NOT NULL, value BLOB NOT NULL DEFAULT x'',
    create_rev INTEGER NOT NULL DEFAULT 0, version INTEGER NOT NULL DEFAULT 0,
    lease INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (rev, seq))"""
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL,
    compacted INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (id, revision, compacted) VALUES (0, 0, 0);
CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease != 0;
-- the change log: one row per event, in (rev, seq) order, type 0 for PUT and 1 for DELETE
{CHANGES_TABLE};
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL,
    expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at);
"""

_CHANGES_COLUMNS = "rev, seq, key, type, value, create_rev, version, lease"

EVENT_TYPES = {0: EventType.PUT, 1: EventType.DELETE}  # changes.type


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a file made by an earlier version to this schema (inside the caller's write transaction)."""
    (sql,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'changes'"
    ).fetchone()
    if "WITHOUT ROWID" in sql.upper():
        conn.execute("ALTER TABLE changes RENAME TO changes_before")
        conn.execute(CHANGES_TABLE)
        conn.execute(
            f"INSERT INTO changes ({_CHANGES_COLUMNS}) SELECT {_CHANGES_COLUMNS} FROM changes_before"
            " ORDER BY rev, seq"
        )
        conn.execute("DROP TABLE changes_before")


# ---- SQL ----------------------------------------------------------------------------------------

SELECT_META = "SELECT revision, compacted FROM meta"
SELECT_REVISION = "SELECT revision FROM meta"
SELECT_REVISION_AND_EXPIRY = "SELECT revision, (SELECT MIN(expires_at) FROM leases) FROM meta"
SELECT_KV = "SELECT value, create_rev, mod_rev, version, lease FROM kv WHERE key = ?"
_SELECT_KVS = "SELECT key, value, create_rev, mod_rev, version, lease FROM kv WHERE key IN ({marks})"
SELECT_RANGE = (
    "SELECT key, {value}, create_rev, mod_rev, version, lease FROM kv"
    " WHERE key {lower} ? AND key < ? ORDER BY key {limit}"
)
# counts at most ``limit`` keys (-1: all), so a bounded count can stay on the caller's thread
COUNT_RANGE = "SELECT COUNT(*) FROM (SELECT 1 FROM kv WHERE key >= ? AND key < ? LIMIT ?)"
SELECT_CHANGES = (
    "SELECT rev, key, type, value, create_rev, version, lease FROM changes"
    " WHERE rev >= ? AND rev <= ? AND key >= ? AND key < ? ORDER BY rev, seq"
)
LEASE_DUE = "SELECT 1 FROM leases WHERE expires_at <= ? LIMIT 1"
NEXT_EXPIRY = "SELECT MIN(expires_at) FROM leases"
# multi-row writes (``run_txns`` appends the parameter groups); a key's row is updated where it is
# (a REPLACE would delete it and append a new row, dirtying one more table page and its ``kv``
# index entry's page per write)
_UPSERT_KV_MANY = "INSERT INTO kv (key, value, create_rev, mod_rev, version, lease) VALUES "
_UPSERT_KV_SET = (
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, create_rev = excluded.create_rev,"
    " mod_rev = excluded.mod_rev, version = excluded.version, lease = excluded.lease"
)
_LOG_PUT_MANY = "INSERT INTO changes (rev, seq, key, type, value, create_rev, version, lease) VALUES "
_LOG_DELETE_MANY = "INSERT INTO changes (rev, seq, key, type) VALUES "
_LOG_DELETE = _LOG_DELETE_MANY + "(?, ?, ?, 1)"
_LEASED_KEYS = "FROM kv WHERE lease = ? AND lease != 0"  # the != 0 lets SQLite use the partial index
_KEYS_PER_READ = 512  # keys per ``IN (...)`` read
_ROWS_PER_STATEMENT = 64  # rows per multi-row statement: 64 * 7 parameters, well under SQLite's limit


def next_expiry(conn: sqlite3.Connection) -> float:
    """When the first lease in the file expires (infinity when there is none)."""
    (first,) = conn.execute(NEXT_EXPIRY).fetchone()
    return math.inf if first is None else float(first)


# ---- jobs: run on the writer thread inside the batch transaction --------------------------------


@dataclass
class Batch:
    """The state of the write transaction the writer is building. ``events``: the change events
    ``run_txns`` wrote, in order; ``complete`` while they are all the batch's events (a job that
    writes outside ``run_txns`` clears it)."""

    revision: int
    now: float
    events: list[WatchEvent] = field(default_factory=list)
    complete: bool = True


Apply = Callable[[sqlite3.Connection, Batch], Any]


def nothing(conn: sqlite3.Connection, batch: Batch) -> None:
    """A job that only makes the writer run a batch (which reaps expired leases first)."""


def _read(conn: sqlite3.Connection, key: str) -> KeyValue | None:
    row = conn.execute(SELECT_KV, (key.encode(),)).fetchone()
    return None if row is None else KeyValue(key, *row)


def _read_many(conn: sqlite3.Connection, keys: list[str]) -> dict[str, KeyValue | None]:
    """``keys`` as they are now (None: absent), read with one query (a statement per key costs
    more than the rows)."""
    found: dict[str, KeyValue | None] = dict.fromkeys(keys)
    if len(keys) == 1:
        found[keys[0]] = _read(conn, keys[0])
        return found
    for start in range(0, len(keys), _KEYS_PER_READ):
        chunk = keys[start : start + _KEYS_PER_READ]
        sql = _SELECT_KVS.format(marks=",".join("?" * len(chunk)))
        for key, *row in conn.execute(sql, [k.encode() for k in chunk]):
            name = key.decode()
            found[name] = KeyValue(name, *row)
    return found


@dataclass(frozen=True, slots=True)
class Txn:
    """A compare-and-swap transaction as a writer job, run by ``run_txns`` (with the other
    transactions of its batch, or alone)."""

    compares: tuple[Compare, ...]
    puts: tuple[Put, ...]
    deletes: tuple[Delete, ...]


def _chunks(rows: Sequence[Any]) -> Iterator[tuple[int, Sequence[Any]]]:
    for i in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[i : i + _ROWS_PER_STATEMENT]
        yield len(chunk), chunk


@lru_cache(maxsize=64)
def _multi_row(statement: str, row: str, n: int, tail: str) -> str:
    """``statement`` followed by ``n`` copies of the parameter group ``row``, then ``tail``."""
    return statement + ",".join([row] * n) + tail


def _insert(
    conn: sqlite3.Connection, statement: str, row: str, rows: Sequence[tuple[Any, ...]], tail: str = ""
) -> None:
    for n, chunk in _chunks(rows):
        conn.execute(_multi_row(statement, row, n, tail), [value for r in chunk for value in r])


class Known:
    """The rows of recently written or read keys, as the writer last saw them: valid only while no
    other connection writes the file, which the writer checks at the start of every batch
    (``valid_at``: the file's revision must be the one it last committed or saw). Reading a row
    steps SQLite once per row, and each step gives up the GIL, so a key ``run_txns`` finds here
    costs no step at all. The ``limit`` most recently written or read keys are kept."""

    def __init__(self, limit: int = 16_384) -> None:
        self.limit = limit
        self.revision = -1  # the file's revision these rows are valid at (-1: nothing known)
        self.kvs: dict[str, KeyValue] = {}

    def valid_at(self, revision: int) -> None:
        """The file is at ``revision`` before this writer wrote anything: forget what another
        process may have changed."""
        if revision != self.revision:
            self.kvs.clear()
        self.revision = revision

    def committed(self, revision: int) -> None:
        """This writer committed what it remembered, up to ``revision``."""
        self.revision = revision

    def forget(self) -> None:
        self.kvs.clear()
        self.revision = -1

    def remember(self, key: str, kv: KeyValue | None) -> None:
        self.kvs.pop(key, None)  # to the end: the most recent
        if kv is not None:
            self.kvs[key] = kv
        while len(self.kvs) > self.limit:
            del self.kvs[next(iter(self.kvs))]


def run_txns(
    conn: sqlite3.Connection, batch: Batch, txns: Sequence[Txn], known: Known
) -> list[TxnResult | Exception]:
    """Run ``txns`` in order as if each ran alone: each one's result, or the ``Conflict``
    or ``LeaseNotFound`` that refused it (a refused transaction writes nothing).

    The keys they touch are read at once (those ``known`` does not hold, with one query); each
    transaction is then decided against that state as the transactions before it left it, and the
    rows are written at the end: each key's final state, and every transaction's change-log rows
    (whose events it also appends to ``batch.events``, as a watch would read them back).
    An SQLite error leaves the rows half written: the caller rolls back to a savepoint it took
    before, and forgets ``known``."""
    touched = dict.fromkeys(
        key
        for t in txns
        for key in [*(c.key for c in t.compares), *(p.key for p in t.puts), *(d.key for d in t.deletes)]
    )
    state: dict[str, KeyValue | None] = {}
    unknown = []
    for key in touched:
        kv = known.kvs.get(key)
        if kv is None:
            unknown.append(key)
        else:
            state[key] = kv
    for key, found in _read_many(conn, unknown).items():
        state[key] = found
        if found is not None:
            known.remember(key, found)
    leases = {p.lease for t in txns for p in t.puts if p.lease}
    live = _live_leases(conn, leases) if leases else set()
    results: list[TxnResult | Exception] = []
    final: dict[str, KeyValue | None] = {}  # the keys written, as the last transaction left them
    log_puts: list[tuple[int, int, bytes, bytes, int, int, int]] = []
    log_deletes: list[tuple[int, int, bytes]] = []
    events = batch.events
    for t in txns:
        failed = [c.key for c in t.compares if not c.holds(state[c.key])]
        if failed:
            results.append(Conflict(failed))
            continue
        missing = next((p.lease for p in t.puts if p.lease and p.lease not in live), None)
        if missing is not None:
            results.append(LeaseNotFound(f"lease {missing} not found"))
            continue
        rev = batch.revision + 1
        prev: dict[str, KeyValue] = {}
        for seq, p in enumerate(t.puts):
            old = state[p.key]
            if old is None:
                create, version = rev, 1
            else:
                prev[p.key] = old
                create, version = old.create_revision, old.version + 1
            state[p.key] = final[p.key] = kv = KeyValue(p.key, p.value, create, rev, version, p.lease)
            log_puts.append((rev, seq, p.key.encode(), p.value, create, version, p.lease))
            events.append(WatchEvent(EventType.PUT, kv))
        seq = len(t.puts)
        for d in t.deletes:
            old = state[d.key]
            if old is not None:
                prev[d.key] = old
                state[d.key] = final[d.key] = None
                log_deletes.append((rev, seq, d.key.encode()))
                events.append(WatchEvent(EventType.DELETE, KeyValue(d.key, b"", 0, rev, 0, 0)))
                seq += 1
        if seq == 0:  # wrote nothing: no new revision
            results.append(TxnResult(batch.revision, prev))
            continue
        batch.revision = rev
        results.append(TxnResult(rev, prev))
    kept = [
        (key.encode(), kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
        for key, kv in final.items()
        if kv is not None
    ]
    gone = [key.encode() for key, kv in final.items() if kv is None]
    for n, chunk in _chunks(gone):
        conn.execute(f"DELETE FROM kv WHERE key IN ({','.join('?' * n)})", chunk)
    _insert(conn, _UPSERT_KV_MANY, "(?, ?, ?, ?, ?, ?)", kept, _UPSERT_KV_SET)
    _insert(conn, _LOG_PUT_MANY, "(?, ?, ?, 0, ?, ?, ?, ?)", log_puts)
    _insert(conn, _LOG_DELETE_MANY, "(?, ?, ?, 1)", log_deletes)
    for key, kv in final.items():
        known.remember(key, kv)
    return results


def _live_leases(conn: sqlite3.Connection, leases: set[int]) -> set[int]:
    ids = sorted(leases)
    live: set[int] = set()
    for n, chunk in _chunks(ids):
        sql = f"SELECT id FROM leases WHERE id IN ({','.join('?' * n)})"
        live.update(lease for (lease,) in conn.execute(sql, chunk))
    return live


def compact(revision: int, conn: sqlite3.Connection, batch: Batch) -> None:
    if revision > batch.revision:
        raise ValueError(f"cannot compact at {revision}: the store is at revision {batch.revision}")
    (compacted,) = conn.execute("SELECT compacted FROM meta").fetchone()
    if revision <= compacted:
        return
    conn.execute("DELETE FROM changes WHERE rev < ?", (revision,))
    conn.execute("UPDATE meta SET compacted = ?", (revision,))


def grant(ttl: float, conn: sqlite3.Connection, batch: Batch) -> int:
    cursor = conn.execute("INSERT INTO leases (ttl, expires_at) VALUES (?, ?)", (ttl, batch.now + ttl))
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def keepalive(lease_id: int, conn: sqlite3.Connection, batch: Batch) -> None:
    cursor = conn.execute("UPDATE leases SET expires_at = ? + ttl WHERE id = ?", (batch.now, lease_id))
    if cursor.rowcount == 0:
        raise LeaseNotFound(f"lease {lease_id} not found")


def revoke(lease_id: int, conn: sqlite3.Connection, batch: Batch) -> None:
    if conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease_id,)).fetchone() is None:
        raise LeaseNotFound(f"lease {lease_id} not found")
    _drop_lease(conn, batch, lease_id)


def _drop_lease(conn: sqlite3.Connection, batch: Batch, lease_id: int) -> None:
    """Delete the lease and, in one new revision, every key attached to it."""
    keys = [key for (key,) in conn.execute(f"SELECT key {_LEASED_KEYS} ORDER BY key", (lease_id,))]
    conn.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
    if keys:
        rev = batch.revision + 1
        conn.execute(f"DELETE {_LEASED_KEYS}", (lease_id,))
        conn.executemany(_LOG_DELETE, [(rev, seq, key) for seq, key in enumerate(keys)])
        batch.revision = rev


def reap(conn: sqlite3.Connection, batch: Batch) -> None:
    """Drop every lease that has expired by ``batch.now``, oldest expiry first."""
    expired = conn.execute(
        "SELECT id FROM leases WHERE expires_at <= ? ORDER BY expires_at, id", (batch.now,)
    )
    for (lease_id,) in expired.fetchall():
        _drop_lease(conn, batch, lease_id)


# the jobs that never change the kv table (any other job may, outside ``run_txns``' knowledge)
KEEPS_KV: frozenset[Callable[..., Any]] = frozenset({nothing, compact, grant, keepalive})
