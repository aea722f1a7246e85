"""Where task definitions live in the store, and how to read them (see ``task_definitions``).

The family record (``TaskDefinitionFamily``) at ``keys.taskdef_family`` and one document per
revision at ``keys.taskdef``. Listing revisions by status reads the family record's counts first and
the revision documents only when the counts do not settle it.

``read_revision(..., shared=True)`` and ``read_family(..., shared=True)`` (RunTask, services, the
agents' Poll: callers that only read the result) keep decoded revisions and family records in
``Env.extras``: the document is still read from the store every time, so a revision's status
(deregistration), its existence (deletion) and the family's latest ACTIVE revision are always
current, and only decoding is skipped when the stored bytes equal the ones decoded before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import orjson

from dockyard.domain.task_definitions import TaskDefinition, TaskDefinitionFamily, TaskDefinitionStatus
from dockyard.services import keys
from dockyard.services.context import Env
from dockyard.store.base import KeyValue

PAGE = 256  # documents read per store call when scanning
ACTIVE = TaskDefinitionStatus.ACTIVE
DECODED = "taskdef_decoded"  # Env.extras: revision key -> (document bytes, their TaskDefinition)
RECORDS = "taskdef_records_decoded"  # Env.extras: family record key -> (bytes, TaskDefinitionFamily)
MAX_DECODED = 1024  # revisions (family records) kept decoded; the lot is dropped when full

_T = TypeVar("_T")


def read_record(kv: KeyValue | None, family: str) -> TaskDefinitionFamily:
    return (
        TaskDefinitionFamily(family)
        if kv is None
        else TaskDefinitionFamily.from_document(orjson.loads(kv.value), family)
    )


def encode_record(record: TaskDefinitionFamily) -> bytes:
    return orjson.dumps(record.to_document())


def encode(td: TaskDefinition) -> bytes:
    return orjson.dumps(td.to_document())


def decode(kv: KeyValue) -> TaskDefinition:
    return TaskDefinition.from_wire(orjson.loads(kv.value))


async def read_family(
    env: Env, account: str, region: str, family: str, *, shared: bool = False
) -> tuple[TaskDefinitionFamily, KeyValue | None]:
    """The family's record (an empty one when it has none) and its document; ``shared`` as
    ``read_revision`` has it."""
    kv = await env.store.get(keys.taskdef_family(account, region, family))
    if kv is None or not shared:
        return read_record(kv, family), kv
    return _shared(env, RECORDS, kv, lambda kv: read_record(kv, family)), kv


async def read_revision(
    env: Env, account: str, region: str, family: str, revision: int, *, shared: bool = False
) -> tuple[TaskDefinition, KeyValue] | None:
    """The revision's definition and document; with ``shared``, a definition decoded earlier from
    the same bytes may be returned (the caller must not change it: see the module docstring)."""
    kv = await env.store.get(keys.taskdef(account, region, family, revision))
    if kv is None:
        return None
    if not shared:
        return decode(kv), kv
    return _shared(env, DECODED, kv, decode), kv


def _shared(env: Env, kept: str, kv: KeyValue, decoded: Callable[[KeyValue], _T]) -> _T:
    """``decoded(kv)``, or what it gave for these same bytes of ``kv.key`` before (kept in
    ``env.extras[kept]``)."""
    known: dict[str, tuple[bytes, _T]] = env.extras.setdefault(kept, {})
    hit = known.get(kv.key)
    if hit is not None and hit[0] == kv.value:
        return hit[1]
    value = decoded(kv)
    if len(known) >= MAX_DECODED:
        known.clear()
    known[kv.key] = (kv.value, value)
    return value


async def families(env: Env, account: str, region: str, prefix: str = "") -> list[TaskDefinitionFamily]:
    """Every family record whose name starts with ``prefix``, sorted by name."""
    out: list[TaskDefinitionFamily] = []
    start_after: str | None = None
    while True:
        page = await env.store.list(
            keys.taskdef_families_prefix(account, region) + prefix, start_after=start_after, limit=PAGE
        )
        out.extend(read_record(kv, kv.key.rsplit("/", 1)[-1]) for kv in page.kvs)
        if not page.more or not page.kvs:
            break
        start_after = page.kvs[-1].key
    return sorted(out, key=lambda f: f.name)


def revision_of(key: str) -> int:
    return int(key.rsplit("/", 1)[-1])


def status_of(kv: KeyValue) -> str:
    return str(orjson.loads(kv.value).get("status"))


async def revisions(
    env: Env,
    account: str,
    region: str,
    family: TaskDefinitionFamily,
    status: str,
    *,
    after: int | None,
    descending: bool,
    want: int,
) -> list[int]:
    """Up to ``want`` of the family's revisions in ``status``, in listing order, past ``after``."""
    if (status == ACTIVE and family.active == 0) or (status != ACTIVE and family.all_active):
        return []
    if status == ACTIVE and family.every_revision_active:  # 1..lastRevision: nothing to read
        last = family.last_revision
        if descending:
            top = last if after is None else min(last, after - 1)
            return list(range(top, max(top - want, 0), -1))
        low = 1 if after is None else max(1, after + 1)
        return list(range(low, min(last, low + want - 1) + 1))
    keys_only = status == ACTIVE and family.all_active  # every stored revision is ACTIVE
    prefix = keys.taskdefs_prefix(account, region, family.name)
    start_after = None
    if after is not None and not descending:
        start_after = keys.taskdef(account, region, family.name, after)
    found: list[int] = []
    while True:  # the store pages upwards only: a descending listing reads up to ``after``
        page = await env.store.list(prefix, start_after=start_after, limit=PAGE, keys_only=keys_only)
        for kv in page.kvs:
            revision = revision_of(kv.key)
            if descending and after is not None and revision >= after:
                return found[::-1][:want]
            if keys_only or status_of(kv) == status:
                found.append(revision)
        if not descending and len(found) >= want:
            return found[:want]
        if not page.more or not page.kvs:
            return found[::-1][:want] if descending else found
        start_after = page.kvs[-1].key


async def active_below(env: Env, account: str, region: str, family: str, revision: int) -> int | None:
    """The highest ACTIVE revision below ``revision``, probing downwards (usually the next one down).

    Consistent with the family record read before it: every change of a revision's ACTIVE status
    also writes the record, which the caller's transaction compares.
    """
    for candidate in range(revision - 1, 0, -1):
        kv = await env.store.get(keys.taskdef(account, region, family, candidate))
        if kv is not None and status_of(kv) == ACTIVE:
            return candidate
    return None
