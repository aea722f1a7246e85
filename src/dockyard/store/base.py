"""The StateStore contract: etcd v3 semantics, so SQLite, memory and etcd backends are interchangeable.

- Every write advances one global ``revision``; each key remembers ``create_revision``,
  ``mod_revision`` and ``version`` (number of writes since it was created).
- ``txn(compares, puts, deletes)`` applies atomically only if every compare holds, else raises
  ``Conflict`` (naming the keys whose compare failed). At most ``MAX_TXN_OPS`` operations.
- ``list(prefix)`` pages in key order and returns the revision it read at, so a caller can
  ``watch(prefix, from_revision=result.revision + 1)`` with no gap.
- ``count(prefix)`` is how many keys ``list(prefix)`` would return, without reading them (etcd's
  ``count_only`` range).
- ``watch`` yields every change at or after ``from_revision`` in revision order; a revision older
  than the compaction point raises ``Compacted`` and the caller re-lists. ``from_revision <= 0``
  watches from the next revision (etcd's default).
- ``compact(rev)`` drops the history of revisions below ``rev`` (as etcd does: ``rev`` itself stays
  watchable) and ``compacted_revision()`` then returns ``rev``; compacting beyond the current
  revision raises ValueError, compacting below the compaction point does nothing.
- Leases: keys written with a lease are deleted (with DELETE events) when the lease expires or is
  revoked; ``keepalive`` renews the TTL.

Exceptions::

    StoreError
     ├── Conflict           a compare failed; re-read, re-decide, retry
     ├── Compacted          watch/list from a revision that was compacted away; re-list
     ├── TxnTooLarge        more than MAX_TXN_OPS operations
     ├── LeaseNotFound      keepalive/put on an expired or unknown lease
     └── StoreClosed        the store was closed
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable

MAX_TXN_OPS = 128


class StoreError(Exception):
    """Base class of store errors."""


class Conflict(StoreError):
    """A transaction's compare failed."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self.keys = tuple(keys)
        super().__init__(f"compare failed on {', '.join(self.keys) or 'a key'}")


class Compacted(StoreError):
    """The requested revision has been compacted away."""

    def __init__(self, requested: int, compacted: int) -> None:
        self.requested = requested
        self.compacted = compacted
        super().__init__(f"revision {requested} is compacted (compacted up to {compacted})")


class TxnTooLarge(StoreError):
    """A transaction has more operations than the store allows."""


class LeaseNotFound(StoreError):
    """The lease does not exist (expired, revoked or never granted)."""


class StoreClosed(StoreError):
    """The store was closed."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class CompareTarget(Enum):
    MOD = "mod"  # the key's mod_revision equals value (0 means: the key is absent)
    VERSION = "version"  # the key's version equals value (0 means: the key is absent)
    ABSENT = "absent"  # the key does not exist (create-only)


@dataclass(frozen=True, slots=True)
class Compare:
    key: str
    target: CompareTarget
    value: int = 0

    @staticmethod
    def mod_revision(key: str, revision: int) -> Compare:
        """Holds when the key's mod_revision equals ``revision`` (0: the key is absent)."""
        return Compare(key, CompareTarget.MOD, revision)

    @staticmethod
    def absent(key: str) -> Compare:
        return Compare(key, CompareTarget.ABSENT, 0)

    @staticmethod
    def unchanged(kv: KeyValue | None, key: str) -> Compare:
        """Holds when ``key`` is still as ``kv`` read it (absent if kv is None)."""
        return Compare(key, CompareTarget.MOD, kv.mod_revision if kv else 0)

    def holds(self, current: KeyValue | None) -> bool:
        if self.target is CompareTarget.ABSENT:
            return current is None
        if self.target is CompareTarget.MOD:
            return (current.mod_revision if current else 0) == self.value
        return (current.version if current else 0) == self.value


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


class EventType(Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    kv: KeyValue  # for DELETE: value is b"" and mod_revision is the deletion's revision


@dataclass(frozen=True, slots=True)
class ListResult:
    kvs: list[KeyValue]
    revision: int  # the store revision the list read at
    more: bool = False  # True when ``limit`` cut the page; continue with start_after=kvs[-1].key


@dataclass(frozen=True, slots=True)
class TxnResult:
    revision: int  # the revision this transaction created (the current one if it wrote nothing)
    prev: dict[str, KeyValue] = field(default_factory=dict)


def check_ops(compares: Sequence[Compare], puts: Sequence[Put], deletes: Sequence[Delete]) -> None:
    """Validate a transaction's size and shape the way etcd does."""
    n = len(compares) + len(puts) + len(deletes)
    if n > MAX_TXN_OPS:
        raise TxnTooLarge(f"transaction has {n} operations; at most {MAX_TXN_OPS} are allowed")
    written = [p.key for p in puts] + [d.key for d in deletes]
    if len(written) != len(set(written)):
        raise ValueError("a key may be written at most once per transaction")


def prefix_end(prefix: str) -> str:
    """The smallest key greater than every key that starts with ``prefix``."""
    return prefix + "\U0010ffff"


@runtime_checkable
class StateStore(Protocol):
    """Versioned key-value documents with compare-and-swap transactions and watches."""

    async def get(self, key: str) -> KeyValue | None: ...

    async def list(
        self,
        prefix: str,
        *,
        start_after: str | None = None,
        limit: int | None = None,
        keys_only: bool = False,
    ) -> ListResult: ...

    async def count(self, prefix: str) -> int: ...

    async def txn(
        self,
        compares: Sequence[Compare] = (),
        puts: Sequence[Put] = (),
        deletes: Sequence[Delete] = (),
    ) -> TxnResult: ...

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[WatchEvent]: ...

    async def revision(self) -> int: ...

    async def grant_lease(self, ttl_seconds: float) -> int: ...

    async def keepalive(self, lease_id: int) -> None: ...

    async def revoke_lease(self, lease_id: int) -> None: ...

    async def compact(self, revision: int) -> None: ...

    async def compacted_revision(self) -> int: ...

    async def close(self) -> None: ...
