"""Durable write and read throughput of a StateStore; prints its figures.

    .venv/bin/python bench/store_commit.py [--url memory://] [--callers 16] [--seconds 3] [--slow-sync 0.0025]

Writers: ``--callers`` coroutines each commit compare-and-swap transactions (compare the key's
mod_revision, put a new value) on keys of their own, so nothing conflicts and every transaction is a
real durable write. Readers: the same number of coroutines doing ``get`` of existing keys.

For context it first measures plain SQLite (WAL, ``synchronous=FULL``, one transaction per commit) on
the same disk. ``--slow-sync S`` holds the SQLite writer S seconds after each commit, to model a disk
whose fsync is slower than this one's (ARCHITECTURE.md measured ~400 commits/s, i.e. ~2.5 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time

from dockyard.store import open_store
from dockyard.store.base import Compare, Put, StateStore
from dockyard.store.sqlite import SqliteStore


def _plain_commits_per_second(directory: str, seconds: float = 1.0) -> float:
    conn = sqlite3.connect(os.path.join(directory, "plain.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 200,))
        conn.execute("COMMIT")
        n += 1
    conn.close()
    return n / (time.perf_counter() - start)


async def _writer(store: StateStore, key: str, deadline: float) -> int:
    done = 0
    mod = 0
    while time.perf_counter() < deadline:
        result = await store.txn([Compare.mod_revision(key, mod)], [Put(key, b"x" * 200)])
        mod = result.revision
        done += 1
    return done


async def _reader(store: StateStore, key: str, deadline: float) -> int:
    done = 0
    while time.perf_counter() < deadline:
        for _ in range(100):
            await store.get(key)
        done += 100
    return done


async def _run(url: str, callers: int, seconds: float, slow_sync: float) -> None:
    store = open_store(url)
    if slow_sync and isinstance(store, SqliteStore):
        store.on_commit = lambda _jobs: time.sleep(slow_sync)
    commits_before = getattr(store, "commit_count", None)
    keys = [f"/bench/{os.getpid()}/{i}" for i in range(callers)]
    start = time.perf_counter()
    counts = await asyncio.gather(*(_writer(store, k, start + seconds) for k in keys))
    elapsed = time.perf_counter() - start
    txns = sum(counts)
    kind = "durable txn/s" if commits_before is not None else "txn/s (memory, not durable)"
    line = f"writes: {txns / elapsed:,.0f} {kind} ({callers} callers, {txns} txns in {elapsed:.1f} s)"
    if commits_before is not None:
        commits = getattr(store, "commit_count", 0) - commits_before
        line += f", {commits / elapsed:,.0f} commits/s, {txns / max(commits, 1):.1f} txns per commit"
    print(line)

    start = time.perf_counter()
    counts = await asyncio.gather(*(_reader(store, k, start + seconds) for k in keys))
    elapsed = time.perf_counter() - start
    print(f"reads:  {sum(counts) / elapsed:,.0f} gets/s ({callers} callers)")

    start = time.perf_counter()
    pages = 0
    while time.perf_counter() < start + seconds:
        await store.list("/bench/", limit=16)
        pages += 1
    print(f"lists:  {pages / (time.perf_counter() - start):,.0f} pages/s of 16 keys")
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="store URL (default: a fresh SQLite file in a temporary directory)")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--slow-sync", type=float, default=0.0, help="extra seconds per SQLite commit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"plain SQLite, one txn per commit (synchronous=FULL): {_plain_commits_per_second(tmp):,.0f}/s")
        url = args.url or f"sqlite:///{tmp}/bench.db"
        print(
            f"store: {url}"
            + (f", slow sync +{args.slow_sync * 1000:g} ms per commit" if args.slow_sync else "")
        )
        asyncio.run(_run(url, args.callers, args.seconds, args.slow_sync))


if __name__ == "__main__":
    main()
