"""The SQLite store's file format and the jobs its writer thread runs (see ``sqlite`` for the design).

Schema: ``meta`` (the global revision and the compaction point), ``kv`` (current values),
``changes`` (the change log watches read, one row per event in ``(rev, seq)`` order) and ``leases``
(TTL and expiry on the injected monotonic clock).

A job is ``apply(conn, batch) -> result``: it runs inside the writer's ``BEGIN IMMEDIATE``
transaction (in a savepoint of its own) and advances ``batch.revision`` when it writes.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
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
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL,
    compacted INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (id, revision, compacted) VALUES (0, 0, 0);
CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease != 0;
-- the change log: one row per event, in (rev, seq) order, type 0 for PUT and 1 for DELETE
CREATE TABLE IF NOT EXISTS changes (rev INTEGER NOT NULL, seq INTEGER NOT NULL, key BLOB NOT NULL,
    type INTEGER NOT NULL, value BLOB NOT NULL DEFAULT x'', create_rev INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0, lease INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (rev, seq))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL,
    expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at);
"""

EVENT_TYPES = {0: EventType.PUT, 1: EventType.DELETE}  # changes.type

# ---- SQL ----------------------------------------------------------------------------------------

SELECT_META = "SELECT revision, compacted FROM meta"
SELECT_REVISION = "SELECT revision FROM meta"
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
_UPSERT_KV = (
    "INSERT OR REPLACE INTO kv (key, value, create_rev, mod_rev, version, lease) VALUES (?, ?, ?, ?, ?, ?)"
)
_LOG_PUT = (
    "INSERT INTO changes (rev, seq, key, type, value, create_rev, version, lease)"
    " VALUES (?, ?, ?, 0, ?, ?, ?, ?)"
)
_LOG_DELETE = "INSERT INTO changes (rev, seq, key, type) VALUES (?, ?, ?, 1)"
_LEASED_KEYS = "FROM kv WHERE lease = ? AND lease != 0"  # the != 0 lets SQLite use the partial index


def next_expiry(conn: sqlite3.Connection) -> float:
    """When the first lease in the file expires (infinity when there is none)."""
    (first,) = conn.execute(NEXT_EXPIRY).fetchone()
    return math.inf if first is None else float(first)


# ---- jobs: run on the writer thread inside the batch transaction --------------------------------


@dataclass
class Batch:
    """The state of the write transaction the writer is building."""

    revision: int
    now: float


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
    elif keys:
        sql = _SELECT_KVS.format(marks=",".join("?" * len(keys)))
        for key, *row in conn.execute(sql, [k.encode() for k in keys]):
            name = key.decode()
            found[name] = KeyValue(name, *row)
    return found


def txn(
    compares: tuple[Compare, ...],
    puts: tuple[Put, ...],
    deletes: tuple[Delete, ...],
    conn: sqlite3.Connection,
    batch: Batch,
) -> TxnResult:
    # every key the transaction compares or writes, read at once (written keys are distinct)
    touched = [c.key for c in compares] + [p.key for p in puts] + [d.key for d in deletes]
    current = _read_many(conn, list(dict.fromkeys(touched)))
    read = current.__getitem__
    failed = [c.key for c in compares if not c.holds(read(c.key))]
    if failed:
        raise Conflict(failed)
    for lease in {p.lease for p in puts if p.lease}:
        if conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None:
            raise LeaseNotFound(f"lease {lease} not found")
    rev = batch.revision + 1
    prev: dict[str, KeyValue] = {}
    rows: list[tuple[bytes, bytes, int, int, int, int]] = []  # kv rows
    log: list[tuple[int, int, bytes, bytes, int, int, int]] = []  # their change-log rows
    for seq, p in enumerate(puts):
        old = read(p.key)
        create, version = (rev, 1) if old is None else (old.create_revision, old.version + 1)
        if old is not None:
            prev[p.key] = old
        key = p.key.encode()
        rows.append((key, p.value, create, rev, version, p.lease))
        log.append((rev, seq, key, p.value, create, version, p.lease))
    gone: list[bytes] = []
    for d in deletes:
        old = read(d.key)
        if old is not None:
            prev[d.key] = old
            gone.append(d.key.encode())
    if not rows and not gone:
        return TxnResult(batch.revision, prev)
    if rows:
        conn.executemany(_UPSERT_KV, rows)
        conn.executemany(_LOG_PUT, log)
    if gone:
        conn.executemany("DELETE FROM kv WHERE key = ?", [(key,) for key in gone])
        conn.executemany(_LOG_DELETE, [(rev, len(rows) + i, key) for i, key in enumerate(gone)])
    batch.revision = rev
    return TxnResult(rev, prev)


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
