"""Task use cases: RunTask, StartTask, StopTask, DescribeTasks, ListTasks, and STOPPED-task expiry.

RunTask and StartTask validate the request, build one ``TaskAsk`` per task and hand them to
``placement.commit.place_tasks``, which decides through the scheduler and commits in one
compare-and-swap transaction. RunTask passes its ``placementStrategy`` (random when none is given,
as ECS's RunTask does) and its ``placementConstraints`` merged with the task definition's (at most
10 together; a malformed memberOf expression fails the request before anything is decided); StartTask
names its instances, so neither applies there. The transaction is guarded by the cluster's
revision and, with a ``clientToken``, by the token's document being absent, so one token makes its
tasks exactly once.

Stopping goes through ``domain.task_lifecycle``: StopTask sets desiredStatus STOPPED and moves the
task to STOPPING; the agent stops it and reports STOPPED, and the task's reservation is released in
the transaction that stores STOPPED. A task whose agent can no longer stop it (instance gone, or
never picked up by an agent that is not connected) is stopped at once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import orjson

from dockyard.domain.container_instances import InstanceStatus
from dockyard.domain.errors import ClientError, InvalidParameter, UnsupportedFeature
from dockyard.domain.tags import Tag, parse_tags
from dockyard.domain.task_definitions import TaskDefinition, TaskDefinitionStatus
from dockyard.domain.task_lifecycle import USER_STOP_REASON, Merged, request_stop, stop_now
from dockyard.domain.task_status import StopCode, TaskStatus
from dockyard.domain.tasks import EC2, Task, check_overrides, needs, new_task, task_shape
from dockyard.placement import ids
from dockyard.placement.commit import encode, place_tasks, read_task, write_task
from dockyard.scheduler import (
    RUN_TASK_DEFAULT,
    Failure,
    Placement,
    PlacementConstraint,
    PlacementStrategy,
    TaskAsk,
    parse_constraints,
    parse_strategies,
)
from dockyard.services import keys, refs
from dockyard.services.cluster_state import cluster_cache, scope_of
from dockyard.services.clusters import decode_token, require_active_cluster
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.operations import operation
from dockyard.services.retry import retry_on_conflict
from dockyard.services.task_definitions import resolve_task_definition
from dockyard.services.task_networking import AwsvpcChoice, awsvpc_of, plan_for
from dockyard.store.base import Compare, Conflict, Delete, Put

MAX_COUNT = 10
MAX_DESCRIBE = 100
DEFAULT_MAX_RESULTS = 100
RNG = "placement_rng"
USER_INITIATED = StopCode.USER_INITIATED
NO_INSTANCES = "No Container Instances were found in your cluster."


def _rng(env: Env) -> random.Random:
    rng: random.Random | None = env.extras.get(RNG)
    if rng is None:
        rng = env.extras[RNG] = random.Random()
    return rng


async def _runnable_definition(env: Env, ctx: RequestContext, ref: str) -> TaskDefinition:
    td = await resolve_task_definition(env, ctx, ref)
    if td is None:
        raise ClientError("Unable to find task definition.")
    if td.status is not TaskDefinitionStatus.ACTIVE:
        raise ClientError(
            f"TaskDefinition {td.family_revision} is {td.status.value}; only ACTIVE task definitions run."
        )
    return td


def _check_launch(req: Request) -> None:
    launch_type = req.get("launchType") or EC2
    if launch_type != EC2:
        raise UnsupportedFeature(
            f"Dockyard does not provide the {launch_type} launch type yet; use launchType EC2 with "
            "registered container instances."
        )
    if req.get("capacityProviderStrategy"):
        raise UnsupportedFeature(
            "Dockyard does not support capacity provider strategies yet; use launchType EC2."
        )
    _check_unsupported(req)


def _check_unsupported(req: Request) -> None:
    """What RunTask and StartTask cannot honour yet is refused, never silently ignored."""
    if req.get("enableExecuteCommand"):
        raise UnsupportedFeature("Dockyard does not support ECS Exec (enableExecuteCommand) yet.")
    if req.get("volumeConfigurations"):
        raise UnsupportedFeature("Dockyard does not support volumeConfigurations (EBS volumes) yet.")


def _started_by(req: Request) -> str | None:
    value = req.get("startedBy")
    if value is not None and len(value) > 128:
        raise InvalidParameter("startedBy can be at most 128 characters.")
    return value


def _tags_wire(tags: Sequence[Tag]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags]


# ---- RunTask and StartTask ----------------------------------------------------------------------


@operation("RunTask")
async def run_task(env: Env, ctx: RequestContext, req: Request) -> Response:
    count = req.get("count", 1)
    if not 1 <= count <= MAX_COUNT:
        raise InvalidParameter(f"count must be between 1 and {MAX_COUNT}; got {count}.")
    _check_launch(req)
    strategy = parse_strategies(req.get("placementStrategy")) or RUN_TASK_DEFAULT
    td = await _runnable_definition(env, ctx, req["taskDefinition"])
    constraints = parse_constraints(req.get("placementConstraints"), td.wire.get("placementConstraints"))
    overrides = req.get("overrides") or {}
    check_overrides(td, overrides)
    awsvpc = await awsvpc_of(env, ctx, td, req)
    ask = TaskAsk(needs(td, overrides), td.requires_attributes)
    return await _start(
        env,
        ctx,
        req,
        td,
        overrides,
        [ask] * count,
        token=req.get("clientToken"),
        strategy=strategy,
        constraints=constraints,
        awsvpc=awsvpc,
    )


@operation("StartTask")
async def start_task(env: Env, ctx: RequestContext, req: Request) -> Response:
    wanted = req["containerInstances"]
    if not 1 <= len(wanted) <= MAX_COUNT:
        raise InvalidParameter(f"containerInstances must list 1 to {MAX_COUNT} container instances.")
    _check_unsupported(req)
    td = await _runnable_definition(env, ctx, req["taskDefinition"])
    overrides = req.get("overrides") or {}
    check_overrides(td, overrides)
    cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
    need = needs(td, overrides)
    attrs = td.requires_attributes
    asks = [TaskAsk(need, attrs, instance=refs.instance_arn(ctx, cluster.name, r)) for r in wanted]
    awsvpc = await awsvpc_of(env, ctx, td, req)
    return await _start(env, ctx, req, td, overrides, asks, token=None, awsvpc=awsvpc)


async def _start(
    env: Env,
    ctx: RequestContext,
    req: Request,
    td: TaskDefinition,
    overrides: dict[str, Any],
    asks: list[TaskAsk],
    *,
    token: str | None,
    strategy: tuple[PlacementStrategy, ...] = (),
    constraints: tuple[PlacementConstraint, ...] = (),
    awsvpc: AwsvpcChoice | None = None,
) -> Response:
    group = req.get("group") or f"family:{td.family}"
    started_by = _started_by(req)
    tags = parse_tags(req.get("tags"))
    cache = await cluster_cache(env)
    rng = _rng(env)
    shape = task_shape(td, overrides)  # what every task of this call shares

    async def attempt() -> Response:
        cluster, cluster_kv = await require_active_cluster(env, ctx, req.get("cluster"))
        scope = scope_of(ctx, cluster.name)
        token_key = keys.client_token(scope, token) if token else None
        if token_key is not None:
            known = await env.store.get(token_key)
            if known is not None:
                return await _replay(env, scope, orjson.loads(known.value))
        pinned = any(a.instance is not None for a in asks)
        registered = cache.scope(scope).instances.values()
        if not pinned and not any(e.value.status is not InstanceStatus.INACTIVE for e in registered):
            raise InvalidParameter(NO_INSTANCES)
        task_ids, container_ids = ids.task_ids(len(asks), len(td.container_definitions))
        now = env.clock.time()
        interfaces = await plan_for(env, ctx, scope, awsvpc, task_ids, rng)  # awsvpc: addresses

        def build(index: int, placement: Placement) -> Task:
            view = cache.index(scope).get(placement.instance_arn)  # its attribute map, built once
            if view is not None:
                zone = view.attributes.get("ecs.availability-zone")
            else:
                entry = cache.instance(scope, placement.instance_id)
                zone = entry.value.attribute_map().get("ecs.availability-zone") if entry else None
            task = new_task(
                region=ctx.region,
                account=ctx.account_id,
                cluster=cluster.name,
                task_id=task_ids[index],
                container_ids=container_ids[index],
                td=td,
                overrides=overrides,
                instance_arn=placement.instance_arn,
                instance_id=placement.instance_id,
                group=group,
                started_by=started_by,
                tags=tags,
                now=now,
                availability_zone=zone,
                shape=shape,
            )
            return task if interfaces is None else interfaces.attach(index, placement, task)

        def remember(tasks: list[Task], failures: list[Failure]) -> list[Put]:
            claims = interfaces.puts(tasks) if interfaces is not None else []
            if token_key is None:
                return claims
            doc = {
                "taskIds": [t.id for t in tasks],
                "failures": [f.to_wire() for f in failures],
                "createdAt": now,
            }
            return [Put(token_key, encode(doc)), *claims]

        guards = [Compare.unchanged(cluster_kv, cluster_kv.key)]
        if interfaces is not None:
            guards += interfaces.guards()
        if token_key is not None:
            guards.append(Compare.absent(token_key))
        outcome = await place_tasks(
            env.store,
            cache,
            scope,
            asks,
            build,
            rng=rng,
            guards=guards,
            extra_puts=remember,
            group=group,
            strategy=strategy,
            constraints=constraints,
        )
        return {
            "tasks": [t.to_wire(include_tags=True) for t in outcome.tasks],
            "failures": [f.to_wire() for f in outcome.failures],
        }

    return await retry_on_conflict(attempt)


async def _replay(env: Env, scope: keys.Scope, doc: dict[str, Any]) -> Response:
    """The answer to a clientToken seen before: the tasks it made, as they are now."""
    tasks = []
    for task_id in doc.get("taskIds", ()):
        found = await read_task(env.store, scope, task_id)
        if found is not None:
            tasks.append(found[0].to_wire(include_tags=True))
    return {"tasks": tasks, "failures": list(doc.get("failures", ()))}


# ---- StopTask ----------------------------------------------------------------------------------


@operation("StopTask")
async def stop_task(env: Env, ctx: RequestContext, req: Request) -> Response:
    cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
    scope = scope_of(ctx, cluster.name)
    task_id = refs.task_id(ctx, cluster.name, req["task"])
    reason = req.get("reason")
    if reason is not None and len(reason) > 1024:
        raise InvalidParameter("reason can be at most 1024 characters.")
    cache = await cluster_cache(env)

    async def attempt() -> Task:
        found = await read_task(env.store, scope, task_id) if task_id else None
        if found is None:
            raise InvalidParameter("The referenced task was not found.")
        task, kv = found
        instance = cache.instance(scope, task.instance_id)
        unreachable = instance is None or instance.value.status.value == "INACTIVE"
        never_picked_up = task.last_status is TaskStatus.PROVISIONING and not cache.connected(
            scope, task.instance_id
        )
        now = env.clock.time()
        merged: Merged
        if (unreachable or never_picked_up) and task.desired_status is TaskStatus.RUNNING:
            merged = stop_now(task, reason=reason or USER_STOP_REASON, stop_code=USER_INITIATED, now=now)
        else:
            merged = request_stop(task, reason=reason, stop_code=USER_INITIATED, now=now)
        if merged.changed:
            await write_task(env.store, scope, kv, merged.task, release=merged.released)
        return merged.task

    task = await retry_on_conflict(attempt)
    return {"task": task.to_wire(include_tags=True)}


async def stop_tasks_now(env: Env, scope: keys.Scope, task_ids: Sequence[str], reason: str) -> None:
    """Mark tasks STOPPED without their agent (their instance was deregistered with force)."""
    for task_id in task_ids:

        async def attempt(task_id: str = task_id) -> None:
            found = await read_task(env.store, scope, task_id)
            if found is None:
                return
            task, kv = found
            merged = stop_now(task, reason=reason, stop_code=USER_INITIATED, now=env.clock.time())
            if merged.changed:
                await write_task(env.store, scope, kv, merged.task, release=merged.released)

        await retry_on_conflict(attempt)


# ---- DescribeTasks and ListTasks -----------------------------------------------------------------


@operation("DescribeTasks")
async def describe_tasks(env: Env, ctx: RequestContext, req: Request) -> Response:
    wanted = req["tasks"]
    if not 1 <= len(wanted) <= MAX_DESCRIBE:
        raise InvalidParameter(f"tasks must list 1 to {MAX_DESCRIBE} tasks.")
    include = list(req.get("include") or ())
    for item in include:
        if item != "TAGS":
            raise InvalidParameter(f"Invalid value '{item}' for include; valid values: TAGS.")
    cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
    scope = scope_of(ctx, cluster.name)
    found: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for ref in wanted:
        task_id = refs.task_id(ctx, cluster.name, ref)
        hit = await read_task(env.store, scope, task_id) if task_id else None
        if hit is None:
            failures.append({"arn": refs.task_arn(ctx, cluster.name, ref), "reason": "MISSING"})
        else:
            found.append(hit[0].to_wire(include_tags="TAGS" in include))
    return {"tasks": found, "failures": failures}


@operation("ListTasks")
async def list_tasks(env: Env, ctx: RequestContext, req: Request) -> Response:
    limit = req.get("maxResults") or DEFAULT_MAX_RESULTS
    if not 1 <= limit <= DEFAULT_MAX_RESULTS:
        raise InvalidParameter(f"maxResults must be between 1 and {DEFAULT_MAX_RESULTS}; got {limit}.")
    after = decode_token(req.get("nextToken"))
    desired = req.get("desiredStatus") or "RUNNING"
    cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
    scope = scope_of(ctx, cluster.name)
    instance_id: str | None = None
    if req.get("containerInstance"):
        instance_id = refs.instance_id(ctx, cluster.name, req["containerInstance"]) or "-"
    service_name = req.get("serviceName")  # the service that started the task, not its group
    cache = await cluster_cache(env)

    def wanted(t: Task) -> bool:
        return (
            t.desired_status.name == desired
            and (instance_id is None or t.instance_id == instance_id)
            and (not req.get("family") or t.family == req["family"])
            and (not req.get("startedBy") or t.started_by == req["startedBy"])
            and (not service_name or t.service == service_name)
            and (not req.get("launchType") or t.launch_type == req["launchType"])
            and (after is None or t.id > after)
        )

    matching = sorted((t for t in cache.tasks(scope) if wanted(t)), key=lambda t: t.id)
    page = matching[:limit]
    out: Response = {"taskArns": [t.arn for t in page]}
    if len(matching) > limit:
        out["nextToken"] = refs.encode_token(page[-1].id)
    return out


# ---- retention ----------------------------------------------------------------------------------


async def expire_tasks(env: Env, older_than: float) -> int:
    """Remove STOPPED tasks that stopped before ``older_than`` (found in the cluster cache, not by
    scanning the store), and client tokens made before it."""
    removed = 0
    cache = await cluster_cache(env, sync=False)
    for scope in cache.scopes():
        for entry in cache.task_entries(scope):
            task = entry.value
            if task.stopped and task.stopped_at is not None and task.stopped_at < older_than:
                removed += await _delete_if_unchanged(env, keys.task(scope, task.id), entry.mod_revision)
    start_after: str | None = None
    while True:
        page = await env.store.list(keys.kind_prefix(keys.CLIENT_TOKENS), start_after=start_after, limit=500)
        for kv in page.kvs:
            if orjson.loads(kv.value).get("createdAt", older_than) < older_than:
                removed += await _delete_if_unchanged(env, kv.key, kv.mod_revision)
        if not page.more or not page.kvs:
            return removed
        start_after = page.kvs[-1].key


async def _delete_if_unchanged(env: Env, key: str, mod_revision: int) -> int:
    try:
        await env.store.txn([Compare.mod_revision(key, mod_revision)], deletes=[Delete(key)])
    except Conflict:  # changed meanwhile: the next sweep decides again
        return 0
    return 1
