"""A second process writing to a SQLite store, for the durability and multi-process tests.

    python durability_writer.py DB_PATH PREFIX [COUNT]

Runs ``CONCURRENCY`` writers, each creating keys ``PREFIX<writer>-<n>``; prints ``ACK <key> <revision>``
(flushed) only after the store acknowledged the transaction. Stops after COUNT keys, else runs until
killed.
"""

from __future__ import annotations

import asyncio
import sys

from dockyard.store.base import Compare, Put
from dockyard.store.sqlite import SqliteStore

CONCURRENCY = 8


async def main(path: str, prefix: str, count: int | None) -> None:
    store = SqliteStore(path)
    budget = iter(range(count)) if count is not None else None

    async def writer(w: int) -> None:
        n = 0
        while budget is None or next(budget, None) is not None:
            key = f"{prefix}{w}-{n}"
            result = await store.txn([Compare.absent(key)], [Put(key, key.encode())])
            sys.stdout.write(f"ACK {key} {result.revision}\n")
            sys.stdout.flush()
            n += 1

    await asyncio.gather(*(writer(w) for w in range(CONCURRENCY)))
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None))
