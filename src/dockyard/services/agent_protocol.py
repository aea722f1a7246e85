"""The agent's side of the control plane (docs/agent-protocol.md).

- ``DockyardAgentV1.Poll``: the instance's whole desired set and the revision it reflects, answered
  at once when newer than the agent's ``knownRevision``, else when it changes, else after the wait.
  Each task definition the set uses is in the answer once (``taskDefinitions``), not in every task.
  It reads the cluster cache and waits on the cache's per-instance event; every Poll keeps the
  instance's liveness lease alive. The wait is capped at half the agent timeout, so a long-poll
  never outlives the lease it renews (the agent simply polls again). A Poll may carry ``reports``:
  they are applied first, exactly as a Report's, and their results come back with the answer.
- ``DockyardAgentV1.Report``: batched per-task reports, each with its sequence, applied by
  ``agent_reports`` (one compare-and-swap transaction per chunk of tasks, re-read and re-merged
  only where it conflicted; a report that brings a task to STOPPED releases its reservation in the
  same transaction). The answer carries the instance's desired-set revision.
- ECS's ``SubmitTaskStateChange``, ``SubmitContainerStateChange`` (unsequenced reports) and
  ``DiscoverPollEndpoint``.

Every operation acts for one container instance: an agent principal may act only for its own
(``Principal.instance_arn``), else ``AccessDeniedException``; the admin may act for any.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import compress
from operator import is_not
from typing import Any

import orjson

from dockyard.domain import arns
from dockyard.domain.container_instances import InstanceStatus
from dockyard.domain.errors import AccessDenied, InvalidParameter
from dockyard.domain.task_lifecycle import TaskReport, in_desired_set
from dockyard.domain.tasks import Task
from dockyard.placement.cache import ClusterCache, Entry
from dockyard.placement.change_event import ChangeEvent
from dockyard.placement.commit import read_task
from dockyard.services import keys
from dockyard.services.agent_reports import MISSING, Item, apply_reports, apply_reports_at
from dockyard.services.agent_wire import (
    agent_task,
    from_container_state_change,
    from_task_state_change,
    parse_poll,
    parse_reports,
    text,
)
from dockyard.services.cluster_state import cluster_cache
from dockyard.services.clusters import DEFAULT_CLUSTER
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.operations import operation
from dockyard.services.task_definitions import resolve_task_definition
from dockyard.store.base import Compare, Conflict, LeaseNotFound, Put

POLL = "DockyardAgentV1.Poll"
REPORT = "DockyardAgentV1.Report"
AGENT = "agent"
ADMIN = "admin"
RENEWED = "liveness_renewed"
TASK_DEFINITIONS = "agent_task_definitions"
TASK_DEFINITION_CACHE_SIZE = 1024
ANSWERS = "agent_poll_answers"
WAITING = "agent_polls_waiting"
MAX_ANSWERS = 65_536  # instances whose last answer is kept (more: start again)


# ---- who acts for what ----------------------------------------------------------------------------


def _deny(ctx: RequestContext, what: str) -> AccessDenied:
    return AccessDenied(f"User: {ctx.principal.access_key_id} is not authorized to act for {what[:300]}")


def acting_for(ctx: RequestContext, instance_arn: str, cluster_ref: str | None) -> tuple[keys.Scope, str]:
    """The scope and id of the instance ``instance_arn``, if the caller may act for it."""
    principal = ctx.principal
    if principal.kind == AGENT and principal.instance_arn != instance_arn:
        raise _deny(ctx, instance_arn)
    if principal.kind not in (AGENT, ADMIN):
        raise _deny(ctx, instance_arn)
    region, account, cluster, instance_id = _instance_arn_parts(instance_arn)
    if (region, account) != (ctx.region, ctx.account_id):
        raise _deny(ctx, instance_arn)
    if cluster_ref and _cluster_name(cluster_ref) != cluster:
        raise InvalidParameter("The container instance does not belong to the given cluster.")
    return keys.Scope(ctx.account_id, ctx.region, cluster), instance_id


@lru_cache(maxsize=4096)
def _instance_arn_parts(instance_arn: str) -> tuple[str, str, str, str]:
    """(region, account, cluster, id) of a container instance ARN (every Poll parses its own)."""
    parsed = arns.parse_container_instance(instance_arn)
    if parsed.arn is None or parsed.cluster is None:
        raise InvalidParameter("containerInstanceArn must be a container instance ARN with its cluster.")
    return parsed.arn.region, parsed.arn.account, parsed.cluster, parsed.id


@lru_cache(maxsize=1024)
def _cluster_name(cluster_ref: str) -> str:
    return arns.cluster_name(cluster_ref)


def _check_task_owner(ctx: RequestContext, task: Task) -> None:
    if ctx.principal.kind == AGENT and ctx.principal.instance_arn != task.container_instance_arn:
        raise _deny(ctx, task.arn)


# ---- Poll -----------------------------------------------------------------------------------------


@operation(POLL)
async def poll(env: Env, ctx: RequestContext, req: Request) -> Response:
    instance_arn = text(req, "containerInstanceArn", required=True)
    assert instance_arn is not None
    scope, instance_id = acting_for(ctx, instance_arn, text(req, "cluster"))
    asked = parse_poll(req)
    reports = parse_reports(req, required=False)
    cache = await cluster_cache(env, sync=False)
    results, written = await _apply(env, ctx, cache, scope, instance_id, reports) if reports else (None, 0)
    # read-your-writes: the poll must see every write committed before the call, i.e. the cache must
    # have applied ``since``: the store's revision, or the one the reports just wrote (every earlier
    # write is below it). Only what the poll acts on needs that: its answer, a renewal, an instance
    # that looks inactive. Until then its reads may lag, which can only make it wait where it would
    # answer, and whatever it missed sets the instance's change event once applied (a write of the
    # instance or a change of its desired set does). So a long-poll usually finds the wait passed.
    since = written or await env.store.revision()
    entry = cache.instance(scope, instance_id)
    renew = _renewal_due(env, cache, scope, instance_id)
    if cache.applied_revision < since and (
        renew or entry is None or entry.value.status is InstanceStatus.INACTIVE
    ):
        await cache.wait_applied(since)
        entry = cache.instance(scope, instance_id)
        renew = _renewal_due(env, cache, scope, instance_id)
    if entry is None or entry.value.status is InstanceStatus.INACTIVE:
        _answers(env, cache).pop((scope, instance_id), None)
        revision = cache.desired_revision(scope, instance_id)
        inactive = {"revision": revision, "instanceStatus": InstanceStatus.INACTIVE.value}
        return _with_results({**inactive, "tasks": [], "taskDefinitions": {}}, results)
    if renew:
        await _renew_liveness(env, cache, scope, instance_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(asked.wait_seconds, env.settings.agent_timeout_seconds / 2)
    while True:
        changed = cache.change_event(scope, instance_id)
        left = deadline - loop.time()
        news = cache.desired_revision(scope, instance_id) > asked.known_revision
        if news or left <= 0 or env.stopping.is_set():
            break
        await _wait_change(env, changed, left)
    await cache.wait_applied(since)
    revision, tasks, definitions = await _desired(env, ctx, cache, scope, instance_id)
    entry = cache.instance(scope, instance_id)
    status = entry.value.status if entry is not None else InstanceStatus.INACTIVE
    answer = {"revision": revision, "instanceStatus": status.value, "tasks": tasks}
    return _with_results({**answer, "taskDefinitions": definitions}, results)


def _with_results(answer: dict[str, Any], results: list[dict[str, Any]] | None) -> dict[str, Any]:
    if results is not None:
        answer["results"] = results
    return answer


def _renewed(env: Env) -> dict[tuple[keys.Scope, str], float]:
    """When each instance's liveness was last renewed (event loop time)."""
    renewed: dict[tuple[keys.Scope, str], float] | None = env.extras.get(RENEWED)
    if renewed is None:
        renewed = env.extras[RENEWED] = {}
    return renewed


def _renewal_due(env: Env, cache: ClusterCache, scope: keys.Scope, instance_id: str) -> bool:
    """Whether the instance's liveness needs a renewal: none known, or the last one a quarter TTL ago."""
    ttl = env.settings.agent_timeout_seconds
    if cache.lease_of(scope, instance_id) is None:
        return True
    return asyncio.get_running_loop().time() - _renewed(env).get((scope, instance_id), -ttl) >= ttl / 4


async def _renew_liveness(env: Env, cache: ClusterCache, scope: keys.Scope, instance_id: str) -> None:
    """Keep the instance's liveness lease alive (``_renewal_due`` says when), or grant a new one."""
    ttl = env.settings.agent_timeout_seconds
    now = asyncio.get_running_loop().time()
    lease = cache.lease_of(scope, instance_id)
    try:
        if lease is None:
            raise LeaseNotFound("no liveness key")
        await env.store.keepalive(lease)
    except LeaseNotFound:
        instance_key = keys.instance(scope, instance_id)
        kv = await env.store.get(instance_key)
        if kv is None:
            return
        lease = await env.store.grant_lease(ttl)
        try:
            alive = Put(keys.liveness(scope, instance_id), b"{}", lease=lease)
            await env.store.txn([Compare.unchanged(kv, instance_key)], [alive])
        except Conflict:  # the registration changed meanwhile (e.g. deregistered): the next poll decides
            await env.store.revoke_lease(lease)
            return
    _renewed(env)[(scope, instance_id)] = now


@dataclass
class _Answer:
    """An instance's desired set as its last Poll answer showed it, kept so that the next answer
    neither sorts nor filters the instance's tasks again, nor serializes a task whose stored version
    it already serialized (every answer repeats the whole set; the api layer embeds the bytes).

    ``ids``: the tasks on the instance, sorted, as of desired-set ``revision`` when the cache held
    ``members`` tasks there. A task enters the set only with a new desired-set revision (and never
    comes back once out of it), so while both still hold, the set is ``ids`` minus those that left:
    per task, the cache entry last seen and its ``AgentTask`` bytes (None: not in the set)."""

    revision: int
    members: int
    ids: list[str]
    entries: list[Entry[Task] | None]
    wire: list[orjson.Fragment | None]


def _answers(env: Env, cache: ClusterCache) -> dict[tuple[keys.Scope, str], _Answer]:
    known: tuple[ClusterCache, dict[tuple[keys.Scope, str], _Answer]] | None = env.extras.get(ANSWERS)
    if known is None or known[0] is not cache or len(known[1]) > MAX_ANSWERS:
        known = env.extras[ANSWERS] = (cache, {})
    return known[1]


async def _desired(
    env: Env, ctx: RequestContext, cache: ClusterCache, scope: keys.Scope, instance_id: str
) -> tuple[int, list[orjson.Fragment], dict[str, orjson.Fragment | None]]:
    """The instance's desired-set revision, its ``AgentTask``s, sorted by task id (what
    ``ClusterCache.desired`` lists), each serialized once per stored version of the task, and the
    task definitions they use, by ARN (None: that revision no longer exists)."""
    st = cache.scope(scope)
    revision = st.desired_revision.get(instance_id, 0)
    on = st.tasks_by_instance.get(instance_id, ())
    answers = _answers(env, cache)
    key = (scope, instance_id)
    last = answers.get(key)
    if last is None or last.revision != revision or last.members != len(on):
        ids = sorted(on)
        answer = _Answer(revision, len(on), ids, [None] * len(ids), [None] * len(ids))
        if last is not None:  # keep the bytes of the tasks that did not change
            kept = dict(zip(last.ids, zip(last.entries, last.wire, strict=True), strict=True))
            for i, task_id in enumerate(ids):
                answer.entries[i], answer.wire[i] = kept.get(task_id, (None, None))
        answers[key] = last = answer
    entries = list(map(st.tasks.get, last.ids))
    for i in compress(range(len(entries)), map(is_not, entries, last.entries)):  # the tasks that changed
        entry, wire = entries[i], None
        if entry is not None and entry.value.instance_id == instance_id and in_desired_set(entry.value):
            wire = orjson.Fragment(orjson.dumps(agent_task(entry.value)))
        last.entries[i], last.wire[i] = entry, wire
    tasks = [w for w in last.wire if w is not None]
    # the ARNs of the definitions they use, each once, read before the awaits (a concurrent poll of
    # the instance may change ``last`` meanwhile)
    used = {e.value.task_definition_arn: None for e in compress(last.entries, last.wire) if e is not None}
    return revision, tasks, {arn: await _task_definition(env, ctx, arn) for arn in used}


async def _task_definition(env: Env, ctx: RequestContext, arn: str) -> orjson.Fragment | None:
    """A task definition's wire object by ARN, serialized (revisions never change what the agent
    reads); None when it no longer exists, which is never kept (asked again by the next answer)."""
    known: OrderedDict[str, orjson.Fragment] = env.extras.setdefault(TASK_DEFINITIONS, OrderedDict())
    hit = known.get(arn)
    if hit is not None:
        known.move_to_end(arn)
        return hit
    td = await resolve_task_definition(env, ctx, arn)
    if td is None:
        return None
    known[arn] = wire = orjson.Fragment(orjson.dumps(td.to_wire()))
    while len(known) > TASK_DEFINITION_CACHE_SIZE:
        known.popitem(last=False)
    return wire


# ---- Report ---------------------------------------------------------------------------------------


@operation(REPORT)
async def report(env: Env, ctx: RequestContext, req: Request) -> Response:
    instance_arn = text(req, "containerInstanceArn", required=True)
    assert instance_arn is not None
    scope, instance_id = acting_for(ctx, instance_arn, text(req, "cluster"))
    cache = await cluster_cache(env, sync=False)
    results, _ = await _apply(env, ctx, cache, scope, instance_id, parse_reports(req))
    return {"results": results, "revision": cache.desired_revision(scope, instance_id)}


async def _apply(
    env: Env,
    ctx: RequestContext,
    cache: ClusterCache,
    scope: keys.Scope,
    instance_id: str,
    reports: list[tuple[str, TaskReport]],
) -> tuple[list[dict[str, Any]], int]:
    """Apply one instance's reports (``agent_reports``); the per-report results, in request order,
    and the highest store revision their writes created (0: nothing written).

    Every task must be the instance's before anything is applied (else AccessDenied)."""
    items: list[Item] = []
    for task_arn, rep in reports:
        task_id = _task_id_in(scope, task_arn)
        known = cache.task(scope, task_id) if task_id else None
        if known is None and task_id:
            found = await read_task(env.store, scope, task_id)
            known = found[0] if found else None
        if known is not None and known.instance_id != instance_id:
            raise _deny(ctx, task_arn)
        items.append((task_id if known is not None else None, rep))
    outcomes, written = await apply_reports_at(
        env, cache, scope, instance_id, items, check=partial(_check_task_owner, ctx)
    )
    results = []
    for (task_arn, _), outcome in zip(reports, outcomes, strict=True):
        result: dict[str, Any] = {"taskArn": task_arn, "accepted": outcome is None}
        if outcome is not None:
            result["reason"] = outcome
        results.append(result)
    return results, written


def _task_id_in(scope: keys.Scope, task_arn: str) -> str | None:
    """The id of the task ``task_arn`` names if it can be a task of ``scope``'s cluster, else None."""
    prefix = _task_arn_prefix(scope)
    if prefix and task_arn.startswith(prefix):  # the usual form, without building the parsed ARN
        task_id = task_arn[len(prefix) :]
        if task_id and "/" not in task_id:
            return task_id
    try:
        parsed = arns.parse_task(task_arn)
    except InvalidParameter:
        return None
    if parsed.cluster not in (None, scope.cluster):
        return None
    return parsed.id


@lru_cache(maxsize=1024)
def _task_arn_prefix(scope: keys.Scope) -> str | None:
    """``arn:aws:ecs:<region>:<account>:task/<cluster>/``: what ``arns.parse_task`` reads as a task
    of ``scope`` when the rest is one non-empty id (None when the scope's parts could confuse that)."""
    if ":" in scope.region + scope.account or "/" in scope.cluster:
        return None
    return arns.task_arn(scope.region, scope.account, scope.cluster, "")


# ---- ECS agent operations -------------------------------------------------------------------------


def _task_scope(ctx: RequestContext, req: Request) -> tuple[keys.Scope, str]:
    ref = req.get("task")
    if not ref:
        raise InvalidParameter("Missing required parameter task.")
    parsed = arns.parse_task(ref)
    cluster = parsed.cluster or arns.cluster_name(req.get("cluster") or DEFAULT_CLUSTER)
    return keys.Scope(ctx.account_id, ctx.region, cluster), parsed.id


async def _submit(env: Env, ctx: RequestContext, req: Request, rep: TaskReport) -> Response:
    """ECS's unsequenced state changes: one report, merged the same way as a Report's."""
    scope, task_id = _task_scope(ctx, req)
    cache = await cluster_cache(env, sync=False)
    known = cache.task(scope, task_id)
    if known is None:
        found = await read_task(env.store, scope, task_id)
        known = found[0] if found else None
    if known is None:
        raise InvalidParameter("The referenced task was not found.")
    _check_task_owner(ctx, known)
    check = partial(_check_task_owner, ctx)
    [outcome] = await apply_reports(env, cache, scope, known.instance_id, [(task_id, rep)], check)
    if outcome == MISSING:
        raise InvalidParameter("The referenced task was not found.")
    return {"acknowledgment": "ACK"}


@operation("SubmitTaskStateChange")
async def submit_task_state_change(env: Env, ctx: RequestContext, req: Request) -> Response:
    return await _submit(env, ctx, req, from_task_state_change(req))


@operation("SubmitContainerStateChange")
async def submit_container_state_change(env: Env, ctx: RequestContext, req: Request) -> Response:
    if not req.get("containerName"):
        raise InvalidParameter("Missing required parameter containerName.")
    return await _submit(env, ctx, req, from_container_state_change(req))


@operation("DiscoverPollEndpoint")
async def discover_poll_endpoint(env: Env, ctx: RequestContext, req: Request) -> Response:
    if req.get("containerInstance"):
        ref = req["containerInstance"]
        cluster = arns.cluster_name(req.get("cluster") or DEFAULT_CLUSTER)
        if not arns.is_arn(ref):
            ref = arns.container_instance_arn(ctx.region, ctx.account_id, cluster, ref)
        acting_for(ctx, ref, None)
    endpoint = env.settings.endpoint
    return {"endpoint": endpoint, "telemetryEndpoint": endpoint, "serviceConnectEndpoint": endpoint}


async def _wait_change(env: Env, changed: ChangeEvent, timeout: float) -> None:
    """Wait until ``changed`` is set (the instance's desired set moved, or the server is stopping)
    or ``timeout`` passes (``ChangeEvent.wait`` keeps the deadline: no ``asyncio.timeout``).

    Only the instance's own event is awaited: a thousand long-polls all waiting on ``env.stopping``
    as well would make every answer pay for removing its waiter from that event's long queue.
    Instead one task per server sets the events of the polls still waiting when it stops."""
    waiting = _waiting(env)
    waiting.add(changed)
    try:
        await changed.wait(timeout)
    finally:
        waiting.discard(changed)


def _waiting(env: Env) -> set[ChangeEvent]:
    loop = asyncio.get_running_loop()
    known: tuple[asyncio.AbstractEventLoop, set[ChangeEvent], asyncio.Task[None]] | None = env.extras.get(
        WAITING
    )
    if known is None or known[0] is not loop:
        events: set[ChangeEvent] = set()
        known = (loop, events, loop.create_task(_wake_at_stop(env, events), name="agent-polls-stop"))
        env.extras[WAITING] = known
    return known[1]


async def _wake_at_stop(env: Env, events: set[ChangeEvent]) -> None:
    await env.stopping.wait()
    for event in list(events):
        event.set()
