"""The reference StateStore: plain dicts and lists on one asyncio event loop.

Every operation runs its whole critical section synchronously (no ``await`` between reading and
writing), so on a single event loop each operation is atomic without locks. Each operation first
yields to the loop once (``await asyncio.sleep(0)``) so that callers interleave the way they do
against a real backend, which keeps races in calling code visible in tests that use this store.

State:

- ``_kvs``: key -> KeyValue, plus ``_keys``, the same keys kept sorted for ``list``.
- ``_log``: every change (WatchEvent) since the compaction point, in revision order; watches read
  it from their position and then wait on ``_changed``, an Event replaced after every change.
- ``_leases``: lease id -> (ttl, expires_at on the injected monotonic clock, attached keys).
  Expired leases are reaped at the start of every operation and by a background task (started with
  the first lease) every ``lease_check_interval`` seconds, so a FakeClock test advances time and any
  operation performs the expiry. Each expired lease's keys are deleted in one revision.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from dockyard.clock import Clock, SystemClock
from dockyard.store.base import (
    Compacted,
    Compare,
    Conflict,
    Delete,
    EventType,
    KeyValue,
    LeaseNotFound,
    ListResult,
    Put,
    StoreClosed,
    TxnResult,
    WatchEvent,
    check_ops,
)

_Events = list[WatchEvent]  # for annotations inside MemoryStore, where ``list`` names the method


def _successor(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix`` (None: no such bound)."""
    stem = prefix.rstrip("\U0010ffff")
    return stem[:-1] + chr(ord(stem[-1]) + 1) if stem else None


@dataclass
class _Lease:
    ttl: float
    expires_at: float
    keys: set[str] = field(default_factory=set)


class MemoryStore:
    """A StateStore held in process memory. Use one instance from one event loop."""

    def __init__(self, clock: Clock | None = None, *, lease_check_interval: float | None = 0.25) -> None:
        self._clock = clock or SystemClock()
        self._lease_check_interval = lease_check_interval
        self._kvs: dict[str, KeyValue] = {}
        self._keys: list[str] = []
        self._revision = 0
        self._compacted = 0
        self._log: list[WatchEvent] = []
        self._log_revs: list[int] = []  # mod_revision of each entry of _log, for bisect
        self._leases: dict[int, _Lease] = {}
        self._next_lease = 1
        self._changed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    # ---- reads -------------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        await self._enter()
        return self._kvs.get(key)

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
        keys = self._keys
        if start_after is not None and start_after >= prefix:
            i = bisect.bisect_right(keys, start_after)
        else:
            i = bisect.bisect_left(keys, prefix)
        j = i  # the page is keys[i:j]
        while j < len(keys) and keys[j].startswith(prefix) and not (limit and j - i == limit):
            j += 1
        more = j < len(keys) and keys[j].startswith(prefix)
        kvs = [self._kvs[key] for key in keys[i:j]]
        if keys_only:
            kvs = [dataclasses.replace(kv, value=b"") for kv in kvs]
        return ListResult(kvs, self._revision, more)

    async def count(self, prefix: str) -> int:
        await self._enter()
        start = bisect.bisect_left(self._keys, prefix)
        end = _successor(prefix)
        stop = len(self._keys) if end is None else bisect.bisect_left(self._keys, end, lo=start)
        return stop - start

    async def revision(self) -> int:
        await self._enter()
        return self._revision

    async def compacted_revision(self) -> int:
        await self._enter()
        return self._compacted

    # ---- writes ------------------------------------------------------------------------------

    async def txn(
        self,
        compares: Sequence[Compare] = (),
        puts: Sequence[Put] = (),
        deletes: Sequence[Delete] = (),
    ) -> TxnResult:
        check_ops(compares, puts, deletes)
        await self._enter()
        failed = [c.key for c in compares if not c.holds(self._kvs.get(c.key))]
        if failed:
            raise Conflict(failed)
        for p in puts:
            if p.lease and p.lease not in self._leases:
                raise LeaseNotFound(f"lease {p.lease} not found")
        rev = self._revision + 1
        prev: dict[str, KeyValue] = {}
        events: list[WatchEvent] = []
        for p in puts:
            old = self._kvs.get(p.key)
            if old is not None:
                prev[p.key] = old
            kv = KeyValue(
                p.key,
                p.value,
                old.create_revision if old else rev,
                rev,
                old.version + 1 if old else 1,
                p.lease,
            )
            self._set(kv, old)
            events.append(WatchEvent(EventType.PUT, kv))
        for d in deletes:
            old = self._kvs.get(d.key)
            if old is not None:
                prev[d.key] = old
                events.append(self._remove(old, rev))
        if not events:
            return TxnResult(self._revision, prev)
        self._commit(rev, events)
        return TxnResult(rev, prev)

    async def compact(self, revision: int) -> None:
        await self._enter()
        if revision > self._revision:
            raise ValueError(f"cannot compact at {revision}: the store is at revision {self._revision}")
        if revision <= self._compacted:
            return
        cut = bisect.bisect_left(self._log_revs, revision)
        del self._log[:cut]
        del self._log_revs[:cut]
        self._compacted = revision

    # ---- leases ------------------------------------------------------------------------------

    async def grant_lease(self, ttl_seconds: float) -> int:
        if ttl_seconds <= 0:
            raise ValueError("a lease's TTL must be positive")
        await self._enter()
        lease_id = self._next_lease
        self._next_lease += 1
        self._leases[lease_id] = _Lease(ttl_seconds, self._clock.monotonic() + ttl_seconds)
        if self._reaper is None and self._lease_check_interval:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_periodically())
        return lease_id

    async def keepalive(self, lease_id: int) -> None:
        await self._enter()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFound(f"lease {lease_id} not found")
        lease.expires_at = self._clock.monotonic() + lease.ttl

    async def revoke_lease(self, lease_id: int) -> None:
        await self._enter()
        if lease_id not in self._leases:
            raise LeaseNotFound(f"lease {lease_id} not found")
        self._drop_lease(lease_id)

    # ---- watch -------------------------------------------------------------------------------

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[WatchEvent]:
        """Every change under ``prefix`` from ``from_revision`` on (<= 0: from the next revision)."""
        self._check_open()
        start = from_revision if from_revision > 0 else self._revision + 1
        if start < self._compacted:
            raise Compacted(start, self._compacted)
        return self._watch(prefix, start)

    async def _watch(self, prefix: str, next_rev: int) -> AsyncIterator[WatchEvent]:
        while True:
            self._check_open()
            if next_rev < self._compacted:
                raise Compacted(next_rev, self._compacted)
            changed = self._changed
            batch = self._log[bisect.bisect_left(self._log_revs, next_rev) :]
            if not batch:
                await changed.wait()
                continue
            next_rev = self._revision + 1
            for event in batch:
                if event.kv.key.startswith(prefix):
                    yield event

    # ---- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._changed.set()
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)

    # ---- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")

    async def _enter(self) -> None:
        """Start of every operation: let other coroutines run, then reap what expired meanwhile."""
        await asyncio.sleep(0)
        self._check_open()
        self._reap()

    def _set(self, kv: KeyValue, old: KeyValue | None) -> None:
        if old is None:
            bisect.insort(self._keys, kv.key)
        elif old.lease and old.lease != kv.lease:
            self._leases[old.lease].keys.discard(kv.key)
        if kv.lease:
            self._leases[kv.lease].keys.add(kv.key)
        self._kvs[kv.key] = kv

    def _remove(self, old: KeyValue, rev: int) -> WatchEvent:
        del self._kvs[old.key]
        del self._keys[bisect.bisect_left(self._keys, old.key)]
        if old.lease and old.lease in self._leases:
            self._leases[old.lease].keys.discard(old.key)
        return WatchEvent(EventType.DELETE, KeyValue(old.key, b"", 0, rev, 0, 0))

    def _commit(self, rev: int, events: _Events) -> None:
        self._revision = rev
        self._log.extend(events)
        self._log_revs.extend([rev] * len(events))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _drop_lease(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id)
        if not lease.keys:
            return
        rev = self._revision + 1
        self._commit(rev, [self._remove(self._kvs[key], rev) for key in sorted(lease.keys)])

    def _reap(self) -> None:
        now = self._clock.monotonic()
        expired = sorted(
            (lease.expires_at, lid) for lid, lease in self._leases.items() if lease.expires_at <= now
        )
        for _, lease_id in expired:
            self._drop_lease(lease_id)

    async def _reap_periodically(self) -> None:
        assert self._lease_check_interval
        while not self._closed:
            await asyncio.sleep(self._lease_check_interval)
            self._reap()
