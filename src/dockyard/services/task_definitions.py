"""Task definition use cases: validate -> read -> decide (domain) -> commit (compare-and-swap).

Two kinds of documents (see ``keys``):

- the family record ``/taskdef-families/<account>/<region>/<family>``::

      {"family": F, "lastRevision": N, "activeRevisions": [..], "storedRevisions": M}

  ``lastRevision`` is the revision counter: registration bumps it with compare-and-swap and creates
  the revision's document with ``Compare.absent`` in the same transaction, so concurrent
  registrations get distinct consecutive revisions and a revision is never reused, even after its
  document is deleted (the record itself is never deleted). ``activeRevisions`` lets
  DescribeTaskDefinition resolve "the latest ACTIVE revision" and ListTaskDefinitions list ACTIVE
  ones without reading every revision; ``storedRevisions`` (documents not yet removed) tells
  ListTaskDefinitionFamilies whether the family still exists. Register, deregister and expiry change
  the record and the revision document in one transaction, comparing both.
- the revision document ``/taskdefs/<account>/<region>/<family>/<revision:010d>``: the TaskDefinition
  wire JSON plus its tags.

Lifecycle: ACTIVE -> DeregisterTaskDefinition -> INACTIVE -> DeleteTaskDefinitions ->
DELETE_IN_PROGRESS -> ``expire_task_definitions`` (the retention loop) removes the document.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from dockyard.domain import arns
from dockyard.domain.errors import ClientError, InvalidParameter, ResourceNotFound
from dockyard.domain.tags import Tag, merge_tags, parse_tags, remove_tags, tags_to_wire
from dockyard.domain.task_definition_rules import draft
from dockyard.domain.task_definitions import (
    TaskDefinition,
    TaskDefinitionStatus,
    delete_requested,
    deregistered,
    registered,
    retagged,
)
from dockyard.services import keys
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.operations import operation
from dockyard.services.retry import retry_on_conflict
from dockyard.store.base import Compare, Delete, KeyValue, Put

DEFAULT_MAX_RESULTS = 100
MAX_DELETE = 10
TAGS = "TAGS"

ACTIVE = TaskDefinitionStatus.ACTIVE
INACTIVE = TaskDefinitionStatus.INACTIVE
DELETE_IN_PROGRESS = TaskDefinitionStatus.DELETE_IN_PROGRESS


# ---- documents -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilyRecord:
    """The revision counter and index of one family (see the module docstring)."""

    family: str
    last_revision: int = 0
    active: tuple[int, ...] = ()
    stored: int = 0

    @staticmethod
    def read(kv: KeyValue | None, family: str) -> FamilyRecord:
        if kv is None:
            return FamilyRecord(family)
        doc = orjson.loads(kv.value)
        return FamilyRecord(
            family=doc.get("family", family),
            last_revision=int(doc.get("lastRevision", 0)),
            active=tuple(doc.get("activeRevisions", ())),
            stored=int(doc.get("storedRevisions", 0)),
        )

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "family": self.family,
                "lastRevision": self.last_revision,
                "activeRevisions": list(self.active),
                "storedRevisions": self.stored,
            }
        )

    @property
    def latest_active(self) -> int | None:
        return max(self.active) if self.active else None


def _encode(td: TaskDefinition) -> bytes:
    return orjson.dumps(td.to_document())


def _decode(kv: KeyValue) -> TaskDefinition:
    return TaskDefinition.from_wire(orjson.loads(kv.value))


def _registered_by(ctx: RequestContext) -> str:
    return f"arn:aws:iam::{ctx.account_id}:root"


# ---- reads ---------------------------------------------------------------------------------------


async def _read_family(
    env: Env, account: str, region: str, family: str
) -> tuple[FamilyRecord, KeyValue | None]:
    kv = await env.store.get(keys.taskdef_family(account, region, family))
    return FamilyRecord.read(kv, family), kv


async def _read_revision(
    env: Env, account: str, region: str, family: str, revision: int
) -> tuple[TaskDefinition, KeyValue] | None:
    kv = await env.store.get(keys.taskdef(account, region, family, revision))
    return (_decode(kv), kv) if kv is not None else None


def _in_scope(ctx: RequestContext, ref: arns.TaskDefinitionRef) -> bool:
    return ref.arn is None or (ref.arn.region == ctx.region and ref.arn.account == ctx.account_id)


async def read_task_definition(
    env: Env, ctx: RequestContext, ref: str
) -> tuple[TaskDefinition, KeyValue] | None:
    """The definition that ``ref`` names (family = latest ACTIVE revision, family:revision or ARN)."""
    parsed = arns.parse_task_definition(ref)
    if not _in_scope(ctx, parsed):
        return None
    revision = parsed.revision
    if revision is None:
        family, _ = await _read_family(env, ctx.account_id, ctx.region, parsed.family)
        revision = family.latest_active
        if revision is None:
            return None
    return await _read_revision(env, ctx.account_id, ctx.region, parsed.family, revision)


async def resolve_task_definition(env: Env, ctx: RequestContext, ref: str) -> TaskDefinition | None:
    """For RunTask and services: the definition ``ref`` names, in any status (None if missing)."""
    found = await read_task_definition(env, ctx, ref)
    return found[0] if found is not None else None


# ---- RegisterTaskDefinition ----------------------------------------------------------------------


@operation("RegisterTaskDefinition")
async def register_task_definition(env: Env, ctx: RequestContext, req: Request) -> Response:
    proposed = draft(req)
    account, region = ctx.account_id, ctx.region
    family_key = keys.taskdef_family(account, region, proposed.family)

    async def attempt() -> TaskDefinition:
        family, family_kv = await _read_family(env, account, region, proposed.family)
        revision = family.last_revision + 1
        td = registered(
            proposed,
            arn=arns.task_definition_arn(region, account, proposed.family, revision),
            revision=revision,
            now=env.clock.time(),
            registered_by=_registered_by(ctx),
        )
        updated = replace(
            family, last_revision=revision, active=(*family.active, revision), stored=family.stored + 1
        )
        revision_key = keys.taskdef(account, region, proposed.family, revision)
        await env.store.txn(
            [Compare.unchanged(family_kv, family_key), Compare.absent(revision_key)],
            puts=[Put(family_key, updated.encode()), Put(revision_key, _encode(td))],
        )
        return td

    td = await retry_on_conflict(attempt)
    return {"taskDefinition": td.to_wire(), "tags": tags_to_wire(td.tags)}


# ---- DescribeTaskDefinition ----------------------------------------------------------------------


@operation("DescribeTaskDefinition")
async def describe_task_definition(env: Env, ctx: RequestContext, req: Request) -> Response:
    include = list(req.get("include") or ())
    for item in include:
        if item != TAGS:
            raise InvalidParameter(f"Invalid value '{item}' for include; valid values: {TAGS}.")
    found = await read_task_definition(env, ctx, req["taskDefinition"])
    if found is None:
        raise ClientError("Unable to describe task definition.")
    td = found[0]
    out: Response = {"taskDefinition": td.to_wire()}
    if TAGS in include:
        out["tags"] = tags_to_wire(td.tags)
    return out


# ---- listing -------------------------------------------------------------------------------------


def _max_results(req: Request) -> int:
    value = req.get("maxResults")
    if value is None:
        return DEFAULT_MAX_RESULTS
    if not isinstance(value, int) or not 1 <= value <= DEFAULT_MAX_RESULTS:
        raise InvalidParameter(f"maxResults must be between 1 and {DEFAULT_MAX_RESULTS}; got {value}.")
    return value


def _encode_token(position: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(position))).decode().rstrip("=")


def _decode_token(token: str | None, shape: Sequence[type]) -> list[Any] | None:
    """The position a nextToken carries, checked against ``shape`` (the types of its items)."""
    if not token:
        return None
    try:
        position = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        position = None
    if (
        not isinstance(position, list)
        or len(position) != len(shape)
        or not all(type(p) is t for p, t in zip(position, shape, strict=True))
    ):
        raise InvalidParameter("Invalid nextToken.")
    return position


def _check_status(value: Any, allowed: Iterable[str]) -> None:
    options = list(allowed)
    if value not in options:
        raise InvalidParameter(f"Invalid value '{value}' for status; valid values: {', '.join(options)}.")


async def _families(env: Env, account: str, region: str, prefix: str = "") -> list[FamilyRecord]:
    """Every family record whose name starts with ``prefix``, sorted by name."""
    out: list[FamilyRecord] = []
    start_after: str | None = None
    while True:
        page = await env.store.list(
            keys.taskdef_families_prefix(account, region) + prefix, start_after=start_after, limit=500
        )
        out.extend(FamilyRecord.read(kv, kv.key.rsplit("/", 1)[-1]) for kv in page.kvs)
        if not page.more or not page.kvs:
            break
        start_after = page.kvs[-1].key
    return sorted(out, key=lambda f: f.family)


async def _stored_revisions(env: Env, account: str, region: str, family: str) -> list[TaskDefinition]:
    out: list[TaskDefinition] = []
    start_after: str | None = None
    while True:
        page = await env.store.list(
            keys.taskdefs_prefix(account, region, family), start_after=start_after, limit=500
        )
        out.extend(_decode(kv) for kv in page.kvs)
        if not page.more or not page.kvs:
            return out
        start_after = page.kvs[-1].key


async def _revisions(env: Env, account: str, region: str, family: FamilyRecord, status: str) -> list[int]:
    """The family's revisions in ``status``, ascending."""
    if status == ACTIVE:
        return sorted(family.active)
    if family.stored <= len(family.active):  # nothing but ACTIVE revisions left
        return []
    stored = await _stored_revisions(env, account, region, family.family)
    return sorted(td.revision for td in stored if td.status == status)


def _not_after(revision: int, last: int, descending: bool) -> bool:
    """Whether ``revision`` was already listed on an earlier page that ended at ``last``."""
    return revision >= last if descending else revision <= last


@operation("ListTaskDefinitions")
async def list_task_definitions(env: Env, ctx: RequestContext, req: Request) -> Response:
    status = req.get("status") or ACTIVE
    _check_status(status, [s.value for s in TaskDefinitionStatus])
    sort = req.get("sort") or "ASC"
    if sort not in ("ASC", "DESC"):
        raise InvalidParameter(f"Invalid value '{sort}' for sort; valid values: ASC, DESC.")
    descending = sort == "DESC"
    limit = _max_results(req)
    after = _decode_token(req.get("nextToken"), (str, int))
    account, region = ctx.account_id, ctx.region

    # familyPrefix names one whole family here (unlike ListTaskDefinitionFamilies)
    if req.get("familyPrefix"):
        family, kv = await _read_family(env, account, region, req["familyPrefix"])
        families = [family] if kv is not None else []
    else:
        families = await _families(env, account, region)

    found: list[tuple[str, int]] = []
    for family in sorted(families, key=lambda f: f.family, reverse=descending):
        name = family.family
        if after is not None and (name < after[0] if not descending else name > after[0]):
            continue
        revisions = await _revisions(env, account, region, family, status)
        for revision in reversed(revisions) if descending else revisions:
            if after is not None and name == after[0] and _not_after(revision, after[1], descending):
                continue
            found.append((name, revision))
            if len(found) > limit:
                break
        if len(found) > limit:
            break

    page = found[:limit]
    out: Response = {"taskDefinitionArns": [arns.task_definition_arn(region, account, f, r) for f, r in page]}
    if len(found) > limit:
        out["nextToken"] = _encode_token(page[-1])
    return out


@operation("ListTaskDefinitionFamilies")
async def list_task_definition_families(env: Env, ctx: RequestContext, req: Request) -> Response:
    status = req.get("status") or "ALL"
    _check_status(status, ["ACTIVE", "INACTIVE", "ALL"])
    limit = _max_results(req)
    after = _decode_token(req.get("nextToken"), (str,))

    def wanted(f: FamilyRecord) -> bool:
        if after is not None and f.family <= after[0]:
            return False
        if status == "ACTIVE":
            return bool(f.active)
        if status == "INACTIVE":
            return not f.active and f.stored > 0
        return f.stored > 0

    families = await _families(env, ctx.account_id, ctx.region, req.get("familyPrefix") or "")
    names = [f.family for f in families if wanted(f)]
    out: Response = {"families": names[:limit]}
    if len(names) > limit:
        out["nextToken"] = _encode_token([names[limit - 1]])
    return out


# ---- DeregisterTaskDefinition and DeleteTaskDefinitions ------------------------------------------


def _with_revision(ref: str) -> arns.TaskDefinitionRef:
    parsed = arns.parse_task_definition(ref)
    if parsed.revision is None:
        raise ClientError(
            f"A revision is required: use '{parsed.family}:<revision>' or the task definition's full ARN."
        )
    return parsed


@operation("DeregisterTaskDefinition")
async def deregister_task_definition(env: Env, ctx: RequestContext, req: Request) -> Response:
    parsed = _with_revision(req["taskDefinition"])
    assert parsed.revision is not None
    revision = parsed.revision
    account, region = ctx.account_id, ctx.region
    family_key = keys.taskdef_family(account, region, parsed.family)

    async def attempt() -> TaskDefinition:
        found = (
            await _read_revision(env, account, region, parsed.family, revision)
            if _in_scope(ctx, parsed)
            else None
        )
        if found is None:
            raise ClientError("The specified task definition does not exist.")
        td, kv = found
        if td.status is DELETE_IN_PROGRESS:
            raise ClientError(
                f"Task definition {td.family_revision} is being deleted and cannot be deregistered."
            )
        if td.status is INACTIVE:
            return td
        family, family_kv = await _read_family(env, account, region, parsed.family)
        updated = replace(family, active=tuple(r for r in family.active if r != revision))
        inactive = deregistered(td, env.clock.time())
        await env.store.txn(
            [Compare.unchanged(kv, kv.key), Compare.unchanged(family_kv, family_key)],
            puts=[Put(kv.key, _encode(inactive)), Put(family_key, updated.encode())],
        )
        return inactive

    td = await retry_on_conflict(attempt)
    return {"taskDefinition": td.to_wire()}


@operation("DeleteTaskDefinitions")
async def delete_task_definitions(env: Env, ctx: RequestContext, req: Request) -> Response:
    refs = list(dict.fromkeys(req["taskDefinitions"]))
    if not 1 <= len(req["taskDefinitions"]) <= MAX_DELETE:
        raise InvalidParameter(f"taskDefinitions must list 1 to {MAX_DELETE} task definitions.")
    deleted: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for ref in refs:
        try:
            td = await _delete_one(env, ctx, ref)
        except ClientError as e:
            failures.append({"arn": _arn_of(ctx, ref), "reason": e.message})
            continue
        deleted.append(td.to_wire())
    return {"taskDefinitions": deleted, "failures": failures}


def _arn_of(ctx: RequestContext, ref: str) -> str:
    """The ARN a failure reports for ``ref`` (as given when it is already an ARN)."""
    if arns.is_arn(ref):
        return ref
    return arns.resource_arn(ctx.region, ctx.account_id, f"{arns.TASK_DEFINITION}/{ref}")


async def _delete_one(env: Env, ctx: RequestContext, ref: str) -> TaskDefinition:
    try:
        parsed = _with_revision(ref)
    except InvalidParameter as e:
        raise ClientError(e.message) from e
    assert parsed.revision is not None
    revision = parsed.revision

    async def attempt() -> TaskDefinition:
        found = (
            await _read_revision(env, ctx.account_id, ctx.region, parsed.family, revision)
            if _in_scope(ctx, parsed)
            else None
        )
        if found is None:
            raise ClientError("The specified task definition does not exist.")
        td, kv = found
        if td.status is ACTIVE:
            raise ClientError(
                f"Task definition {td.family_revision} is ACTIVE; deregister it before deleting it."
            )
        if td.status is DELETE_IN_PROGRESS:
            return td
        deleting = delete_requested(td, env.clock.time())
        await env.store.txn([Compare.unchanged(kv, kv.key)], puts=[Put(kv.key, _encode(deleting))])
        return deleting

    return await retry_on_conflict(attempt)


# ---- retention -----------------------------------------------------------------------------------


async def expire_task_definitions(
    env: Env, older_than: float, account: str | None = None, region: str | None = None
) -> int:
    """Remove DELETE_IN_PROGRESS revisions whose deletion was requested before ``older_than``.

    Scans one account and region, or every scope when ``account`` is None. Family records stay,
    so removed revisions are never reused. Returns how many revisions were removed.
    """
    prefix = keys.taskdefs_prefix(account, region) if account is not None else keys.taskdefs_prefix()
    removed = 0
    start_after: str | None = None
    while True:
        page = await env.store.list(prefix, start_after=start_after, limit=500)
        for kv in page.kvs:
            td = _decode(kv)
            if _expired(td, older_than) and await _remove(env, kv.key, older_than):
                removed += 1
        if not page.more or not page.kvs:
            return removed
        start_after = page.kvs[-1].key


def _expired(td: TaskDefinition, older_than: float) -> bool:
    return (
        td.status is DELETE_IN_PROGRESS
        and td.delete_requested_at is not None
        and td.delete_requested_at < older_than
    )


async def _remove(env: Env, key: str, older_than: float) -> bool:
    # /taskdefs/<account>/<region>/<family>/<revision>
    _, _, account, region, family, _ = key.split("/")
    family_key = keys.taskdef_family(account, region, family)

    async def attempt() -> bool:
        kv = await env.store.get(key)
        if kv is None or not _expired(_decode(kv), older_than):
            return False
        family_kv = await env.store.get(family_key)
        if family_kv is None:  # no record to keep in step (should not happen)
            await env.store.txn([Compare.unchanged(kv, key)], deletes=[Delete(key)])
            return True
        record = FamilyRecord.read(family_kv, family)
        updated = replace(record, stored=max(0, record.stored - 1))
        await env.store.txn(
            [Compare.unchanged(kv, key), Compare.unchanged(family_kv, family_key)],
            puts=[Put(family_key, updated.encode())],
            deletes=[Delete(key)],
        )
        return True

    return await retry_on_conflict(attempt)


# ---- tags (TagResource, UntagResource, ListTagsForResource) ---------------------------------------


async def _tagged_revision(env: Env, ctx: RequestContext, arn: str) -> tuple[TaskDefinition, KeyValue]:
    parsed = arns.parse_task_definition(arn)
    found = None
    if parsed.revision is not None and _in_scope(ctx, parsed):
        found = await _read_revision(env, ctx.account_id, ctx.region, parsed.family, parsed.revision)
    if found is None:
        raise ResourceNotFound("The specified task definition does not exist.")
    return found


async def retag_task_definition(
    env: Env, ctx: RequestContext, arn: str, change: Callable[[tuple[Tag, ...]], tuple[Tag, ...]]
) -> tuple[Tag, ...]:
    """Apply ``change`` to the tags of the revision that ``arn`` names; the new tags."""

    async def attempt() -> tuple[Tag, ...]:
        td, kv = await _tagged_revision(env, ctx, arn)
        tags = change(td.tags)
        await env.store.txn([Compare.unchanged(kv, kv.key)], puts=[Put(kv.key, _encode(retagged(td, tags)))])
        return tags

    return await retry_on_conflict(attempt)


async def task_definition_tags(env: Env, ctx: RequestContext, arn: str) -> tuple[Tag, ...]:
    td, _ = await _tagged_revision(env, ctx, arn)
    return td.tags


async def tag_task_definition(
    env: Env, ctx: RequestContext, arn: str, tags: Sequence[Mapping[str, Any]]
) -> None:
    added = parse_tags(tags)
    await retag_task_definition(env, ctx, arn, lambda current: merge_tags(current, added))


async def untag_task_definition(env: Env, ctx: RequestContext, arn: str, tag_keys: Sequence[str]) -> None:
    await retag_task_definition(env, ctx, arn, lambda current: remove_tags(current, tag_keys))


async def list_task_definition_tags(env: Env, ctx: RequestContext, arn: str) -> list[dict[str, str]]:
    return tags_to_wire(await task_definition_tags(env, ctx, arn))
