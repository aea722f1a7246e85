"""Task definition use cases: validate -> read -> decide (domain) -> commit (compare-and-swap).

Two kinds of documents (see ``keys``):

- the family record ``/taskdef-families/<account>/<region>/<family>`` (``TaskDefinitionFamily``),
  the same few fields however many revisions the family has::

      {"family": F, "lastRevision": N, "activeCount": A, "storedRevisions": S,
       "latestActiveRevision": L}

  ``lastRevision`` is the revision counter: registration bumps it with compare-and-swap and creates
  the revisions' documents with ``Compare.absent`` in the same transaction, so concurrent
  registrations get distinct consecutive revisions and a revision is never reused, even after its
  document is deleted (the record itself is never deleted). ``latestActiveRevision`` is what a bare
  family name resolves to; ``activeCount`` and ``storedRevisions`` (documents not yet removed) tell
  ListTaskDefinitionFamilies which families to show and let ListTaskDefinitions skip reading
  revision documents when their statuses follow from the counts (every revision ACTIVE, or none).
  Every change of a revision's ACTIVE status or existence (register, deregister, expiry) changes the
  record and the revision document in one transaction, comparing both.
- the revision document ``/taskdefs/<account>/<region>/<family>/<revision:010d>``: the TaskDefinition
  wire JSON plus its tags; listing by status reads these when the counts do not settle it.

Registration throughput: concurrent RegisterTaskDefinition calls of one family in this process are
coalesced (``coalescing.Coalescer``): one transaction registers a batch of consecutive revisions with
one compare on the family record (chunked to the store's operation limit), instead of each call
racing the others for the record and retrying. Across processes the compare still decides; a
conflict re-reads and retries the whole batch.

Lifecycle: ACTIVE -> DeregisterTaskDefinition -> INACTIVE -> DeleteTaskDefinitions ->
DELETE_IN_PROGRESS -> ``expire_task_definitions`` (the retention loop) removes the document.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
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
from dockyard.services import taskdef_documents as docs
from dockyard.services.coalescing import Coalescer
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.operations import operation
from dockyard.services.retry import retry_on_conflict
from dockyard.store.base import MAX_TXN_OPS, Compare, Delete, KeyValue, Put, prefix_end

DEFAULT_MAX_RESULTS = 100
MAX_DELETE = 10
TAGS = "TAGS"
# one registration is two operations (the revision's absent compare and put), besides the
# family record's compare and put
MAX_BATCH = (MAX_TXN_OPS - 2) // 2
REGISTRATIONS = "taskdef_registrations"  # Env.extras: this process's registration coalescer

ACTIVE = TaskDefinitionStatus.ACTIVE
INACTIVE = TaskDefinitionStatus.INACTIVE
DELETE_IN_PROGRESS = TaskDefinitionStatus.DELETE_IN_PROGRESS


def _registered_by(ctx: RequestContext) -> str:
    return f"arn:aws:iam::{ctx.account_id}:root"


# ---- reads ---------------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _parsed_ref(ref: str) -> arns.TaskDefinitionRef:
    """``arns.parse_task_definition(ref)``, parsed once per ref (RunTask names the same few again
    and again; the result is frozen); a malformed ref raises every time, as parsing it does."""
    return arns.parse_task_definition(ref)


def _in_scope(ctx: RequestContext, ref: arns.TaskDefinitionRef) -> bool:
    return ref.arn is None or (ref.arn.region == ctx.region and ref.arn.account == ctx.account_id)


async def read_task_definition(
    env: Env, ctx: RequestContext, ref: str, *, shared: bool = False
) -> tuple[TaskDefinition, KeyValue] | None:
    """The definition that ``ref`` names (family = latest ACTIVE revision, family:revision or ARN);
    ``shared`` as ``taskdef_documents.read_revision`` has it (for the family record too)."""
    parsed = _parsed_ref(ref)
    if not _in_scope(ctx, parsed):
        return None
    revision = parsed.revision
    if revision is None:
        family, _ = await docs.read_family(env, ctx.account_id, ctx.region, parsed.family, shared=shared)
        revision = family.latest_active
        if revision is None:
            return None
    return await docs.read_revision(env, ctx.account_id, ctx.region, parsed.family, revision, shared=shared)


async def resolve_task_definition(env: Env, ctx: RequestContext, ref: str) -> TaskDefinition | None:
    """For RunTask and services: the definition ``ref`` names, in any status (None if missing);
    read from the store each time (the family record too, for a bare family name), possibly decoded
    earlier (callers only read it)."""
    found = await read_task_definition(env, ctx, ref, shared=True)
    return found[0] if found is not None else None


# ---- RegisterTaskDefinition ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Registration:
    proposed: TaskDefinition
    registered_by: str


_Family = tuple[str, str, str]  # account, region, family


@operation("RegisterTaskDefinition")
async def register_task_definition(env: Env, ctx: RequestContext, req: Request) -> Response:
    proposed = draft(req)
    registrations = env.extras.get(REGISTRATIONS)
    if registrations is None:
        registrations = env.extras[REGISTRATIONS] = _registrations(env)
    td: TaskDefinition = await registrations.submit(
        (ctx.account_id, ctx.region, proposed.family), _Registration(proposed, _registered_by(ctx))
    )
    return {"taskDefinition": td.to_wire(), "tags": tags_to_wire(td.tags)}


def _registrations(env: Env) -> Coalescer[_Family, _Registration, TaskDefinition]:
    async def commit(family: _Family, batch: Sequence[_Registration]) -> list[TaskDefinition]:
        return await retry_on_conflict(lambda: _register(env, family, batch))

    return Coalescer(commit, max_batch=MAX_BATCH)


async def _register(env: Env, family: _Family, batch: Sequence[_Registration]) -> list[TaskDefinition]:
    """Register ``batch`` as consecutive revisions of ``family`` in one transaction."""
    account, region, name = family
    record, record_kv = await docs.read_family(env, account, region, name)
    updated, revisions = record.registered(len(batch))
    now = env.clock.time()
    tds = [
        registered(
            r.proposed,
            arn=arns.task_definition_arn(region, account, name, revision),
            revision=revision,
            now=now,
            registered_by=r.registered_by,
        )
        for r, revision in zip(batch, revisions, strict=True)
    ]
    record_key = keys.taskdef_family(account, region, name)
    revision_keys = [keys.taskdef(account, region, name, revision) for revision in revisions]
    await env.store.txn(
        [Compare.unchanged(record_kv, record_key), *(Compare.absent(key) for key in revision_keys)],
        puts=[
            Put(record_key, docs.encode_record(updated)),
            *(Put(key, docs.encode(td)) for key, td in zip(revision_keys, tds, strict=True)),
        ],
    )
    return tds


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
        family, kv = await docs.read_family(env, account, region, req["familyPrefix"])
        families = [family] if kv is not None else []
    else:
        families = await docs.families(env, account, region)

    found: list[tuple[str, int]] = []  # one more than a page tells whether there is a next one
    for family in reversed(families) if descending else families:
        name = family.name
        if after is not None and (name < after[0] if not descending else name > after[0]):
            continue
        revisions = await docs.revisions(
            env,
            account,
            region,
            family,
            status,
            after=after[1] if after is not None and name == after[0] else None,
            descending=descending,
            want=limit + 1 - len(found),
        )
        found.extend((name, revision) for revision in revisions)
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
    families = await docs.families(env, ctx.account_id, ctx.region, req.get("familyPrefix") or "")
    names = [f.name for f in families if f.listed(status) and (after is None or f.name > after[0])]
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
            await docs.read_revision(env, account, region, parsed.family, revision)
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
        family, family_kv = await docs.read_family(env, account, region, parsed.family)
        next_latest = None
        if family.needs_new_latest(revision):
            next_latest = await docs.active_below(env, account, region, parsed.family, revision)
        updated = family.deregistered(revision, next_latest)
        inactive = deregistered(td, env.clock.time())
        await env.store.txn(
            [Compare.unchanged(kv, kv.key), Compare.unchanged(family_kv, family_key)],
            puts=[Put(kv.key, docs.encode(inactive)), Put(family_key, docs.encode_record(updated))],
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
            await docs.read_revision(env, ctx.account_id, ctx.region, parsed.family, revision)
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
        await env.store.txn([Compare.unchanged(kv, kv.key)], puts=[Put(kv.key, docs.encode(deleting))])
        return deleting

    return await retry_on_conflict(attempt)


# ---- retention -----------------------------------------------------------------------------------


async def expire_task_definitions(
    env: Env, older_than: float, account: str | None = None, region: str | None = None
) -> int:
    """Remove DELETE_IN_PROGRESS revisions whose deletion was requested before ``older_than``.

    Scans one account and region, or every scope when ``account`` is None, family by family: a
    family whose record says every stored revision is ACTIVE is skipped without reading its
    revisions. Family records stay, so removed revisions are never reused. Returns how many
    revisions were removed.
    """
    prefix = keys.taskdefs_prefix(account, region) if account is not None else keys.taskdefs_prefix()
    removed = 0
    start_after: str | None = None
    while True:  # one family at a time: its first revision's key names it
        first = await env.store.list(prefix, start_after=start_after, limit=1, keys_only=True)
        if not first.kvs:
            return removed
        # /taskdefs/<account>/<region>/<family>/<revision>
        _, _, scope_account, scope_region, family, _ = first.kvs[0].key.split("/")
        record_kv = await env.store.get(keys.taskdef_family(scope_account, scope_region, family))
        family_prefix = keys.taskdefs_prefix(scope_account, scope_region, family)
        if record_kv is None or not docs.read_record(record_kv, family).all_active:
            removed += await _expire_family(env, family_prefix, older_than)
        start_after = prefix_end(family_prefix)


async def _expire_family(env: Env, family_prefix: str, older_than: float) -> int:
    removed = 0
    start_after: str | None = None
    while True:
        page = await env.store.list(family_prefix, start_after=start_after, limit=docs.PAGE)
        for kv in page.kvs:
            if _expired(orjson.loads(kv.value), older_than) and await _remove(env, kv.key, older_than):
                removed += 1
        if not page.more or not page.kvs:
            return removed
        start_after = page.kvs[-1].key


def _expired(doc: Mapping[str, Any], older_than: float) -> bool:
    """Whether a revision document is DELETE_IN_PROGRESS since before ``older_than``."""
    at = doc.get("deleteRequestedAt")
    return doc.get("status") == DELETE_IN_PROGRESS and at is not None and float(at) < older_than


async def _remove(env: Env, key: str, older_than: float) -> bool:
    # /taskdefs/<account>/<region>/<family>/<revision>
    _, _, account, region, family, _ = key.split("/")
    family_key = keys.taskdef_family(account, region, family)

    async def attempt() -> bool:
        kv = await env.store.get(key)
        if kv is None or not _expired(orjson.loads(kv.value), older_than):
            return False
        family_kv = await env.store.get(family_key)
        if family_kv is None:  # no record to keep in step (should not happen)
            await env.store.txn([Compare.unchanged(kv, key)], deletes=[Delete(key)])
            return True
        updated = docs.read_record(family_kv, family).removed()
        await env.store.txn(
            [Compare.unchanged(kv, key), Compare.unchanged(family_kv, family_key)],
            puts=[Put(family_key, docs.encode_record(updated))],
            deletes=[Delete(key)],
        )
        return True

    return await retry_on_conflict(attempt)


# ---- tags (TagResource, UntagResource, ListTagsForResource) ---------------------------------------


async def _tagged_revision(env: Env, ctx: RequestContext, arn: str) -> tuple[TaskDefinition, KeyValue]:
    parsed = arns.parse_task_definition(arn)
    found = None
    if parsed.revision is not None and _in_scope(ctx, parsed):
        found = await docs.read_revision(env, ctx.account_id, ctx.region, parsed.family, parsed.revision)
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
        await env.store.txn(
            [Compare.unchanged(kv, kv.key)], puts=[Put(kv.key, docs.encode(retagged(td, tags)))]
        )
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
