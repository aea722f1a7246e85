"""Container instance use cases: register, deregister, describe, list, drain.

``ListContainerInstances(filter=...)`` evaluates ECS's cluster query language
(``scheduler.expression``) against the same instance views placement reads.

Registration writes three documents in one transaction (``placement.keys``): the registration, an
empty allocation record (kept on re-registration) and the liveness key under a fresh lease of
``Settings.agent_timeout_seconds``; then it issues the agent's own credentials
(docs/agent-protocol.md section 1). Status changes write the registration and the allocation
record's status together, so a placement that raced a drain or a deregistration conflicts.

Deregistration follows ECS's ``force`` semantics: refused while tasks that are not STOPPED remain
(the allocation record still reserves for them), unless ``force``; forced, the instance becomes
INACTIVE and its tasks are marked STOPPED at once (the agent, told INACTIVE, stops everything).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import replace
from typing import Any

import orjson

from dockyard.domain import arns
from dockyard.domain.container_instances import (
    Allocation,
    ContainerInstance,
    InstanceStatus,
    parse_attributes,
    parse_identity_document,
    registration,
    with_status,
)
from dockyard.domain.errors import InvalidParameter, ServerError
from dockyard.domain.resources import parse_registered, remaining
from dockyard.domain.tags import parse_tags
from dockyard.domain.task_status import TaskStatus
from dockyard.placement.cache import ClusterCache, Entry
from dockyard.placement.commit import encode
from dockyard.scheduler import expression
from dockyard.services import keys, refs
from dockyard.services.cluster_state import cluster_cache, scope_of
from dockyard.services.clusters import decode_token, require_active_cluster
from dockyard.services.context import CREDENTIALS, CredentialIssuer, Env, Request, RequestContext, Response
from dockyard.services.operations import operation
from dockyard.services.retry import retry_on_conflict
from dockyard.services.tasks import stop_tasks_now
from dockyard.store.base import Compare, Conflict, Delete, KeyValue, Put

MAX_DESCRIBE = 100
MAX_UPDATE = 10
DEFAULT_MAX_RESULTS = 100
FORCED_STOP_REASON = "Task stopped because its container instance was deregistered."


# ---- shared ---------------------------------------------------------------------------------------


def instance_wire(
    cache: ClusterCache, scope: keys.Scope, entry: Entry[ContainerInstance], include_tags: bool = False
) -> dict[str, Any]:
    """DescribeContainerInstances' shape, with remaining resources and counts from the cache."""
    instance = entry.value
    alloc = cache.allocation(scope, instance.id)
    reserved = alloc.value.reserved() if alloc is not None else None
    left = remaining(instance.registered, reserved) if reserved is not None else instance.registered
    statuses = [t.last_status for t in cache.tasks_on(scope, instance.id)]
    return instance.to_wire(
        left=left,
        running=sum(1 for s in statuses if s is TaskStatus.RUNNING),
        pending=sum(1 for s in statuses if s < TaskStatus.RUNNING),
        agent_connected=(
            instance.status is not InstanceStatus.INACTIVE and cache.connected(scope, instance.id)
        ),
        version=entry.version + (alloc.version if alloc is not None else 0),
        include_tags=include_tags,
    )


def _decode(kv: KeyValue) -> ContainerInstance:
    return ContainerInstance.from_document(orjson.loads(kv.value))


def _issuer(env: Env) -> CredentialIssuer:
    issuer: CredentialIssuer | None = env.extras.get(CREDENTIALS)
    if issuer is None:
        raise ServerError("This server cannot issue agent credentials.")
    return issuer


# ---- RegisterContainerInstance --------------------------------------------------------------------


@operation("RegisterContainerInstance")
async def register_container_instance(env: Env, ctx: RequestContext, req: Request) -> Response:
    registered = parse_registered(req.get("totalResources"))
    attributes = parse_attributes(req.get("attributes"))
    identity = parse_identity_document(req.get("instanceIdentityDocument"))
    tags = parse_tags(req.get("tags"))
    ttl = env.settings.agent_timeout_seconds

    async def attempt() -> tuple[keys.Scope, ContainerInstance]:
        cluster, cluster_kv = await require_active_cluster(env, ctx, req.get("cluster"))
        scope = scope_of(ctx, cluster.name)
        previous: ContainerInstance | None = None
        previous_kv: KeyValue | None = None
        known = req.get("containerInstanceArn")
        known_id = refs.instance_id(ctx, cluster.name, known) if known else None
        if known_id is not None:
            previous_kv = await env.store.get(keys.instance(scope, known_id))
            previous = _decode(previous_kv) if previous_kv is not None else None
            if previous is not None and previous.status is InstanceStatus.INACTIVE:
                previous, previous_kv = None, None  # deregistered: register anew
        instance_id = previous.id if previous is not None else uuid.uuid4().hex
        instance = registration(
            arn=arns.container_instance_arn(ctx.region, ctx.account_id, cluster.name, instance_id),
            instance_id=instance_id,
            cluster=cluster.name,
            ec2_instance_id=identity.instance_id
            or (previous.ec2_instance_id if previous is not None else "i-" + secrets.token_hex(9)[:17]),
            registered=registered,
            attributes=attributes,
            version_info=req.get("versionInfo") or {},
            identity=identity,
            tags=tags,
            now=env.clock.time(),
            previous=previous,
        )
        instance_key = keys.instance(scope, instance_id)
        alloc_key = keys.allocation(scope, instance_id)
        compares = [
            Compare.unchanged(cluster_kv, cluster_kv.key),
            Compare.unchanged(previous_kv, instance_key),
        ]
        # the cluster document is rewritten as it is, so a DeleteCluster that counted instances
        # before this registration conflicts and counts again
        puts = [Put(instance_key, encode(instance.to_document())), Put(cluster_kv.key, cluster_kv.value)]
        if previous is None:
            compares.append(Compare.absent(alloc_key))
            puts.append(Put(alloc_key, encode(Allocation().to_document())))
        lease = await env.store.grant_lease(ttl)
        puts.append(Put(keys.liveness(scope, instance_id), b"{}", lease=lease))
        try:
            await env.store.txn(compares, puts)
        except Conflict:
            await env.store.revoke_lease(lease)
            raise
        return scope, instance

    scope, instance = await retry_on_conflict(attempt)
    issued = await _issuer(env).issue("agent", instance.arn)
    cache = await cluster_cache(env)
    entry = cache.instance(scope, instance.id)
    assert entry is not None
    return {
        "containerInstance": instance_wire(cache, scope, entry, include_tags=True),
        "agentCredentials": {
            "accessKeyId": issued.access_key_id,
            "secretAccessKey": issued.secret_access_key,
        },
    }


# ---- DeregisterContainerInstance ------------------------------------------------------------------


@operation("DeregisterContainerInstance")
async def deregister_container_instance(env: Env, ctx: RequestContext, req: Request) -> Response:
    cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
    scope = scope_of(ctx, cluster.name)
    instance_id = refs.instance_id(ctx, cluster.name, req["containerInstance"])
    force = bool(req.get("force"))

    async def attempt() -> tuple[ContainerInstance, list[str]]:
        kv = await env.store.get(keys.instance(scope, instance_id)) if instance_id else None
        if kv is None:
            raise InvalidParameter("Container instance not found.")
        instance = _decode(kv)
        if instance.status is InstanceStatus.INACTIVE:
            return instance, []
        alloc_key = keys.allocation(scope, instance.id)
        alloc_kv = await env.store.get(alloc_key)
        allocation = Allocation.from_document(orjson.loads(alloc_kv.value)) if alloc_kv else Allocation()
        orphans = sorted(allocation.tasks)  # reserved for = not STOPPED yet
        if orphans and not force:
            raise InvalidParameter(
                f"The container instance has {len(orphans)} task(s) that are not stopped; stop them first "
                "or deregister with force."
            )
        gone = with_status(instance, InstanceStatus.INACTIVE, env.clock.time())
        await env.store.txn(
            [Compare.unchanged(kv, kv.key), Compare.unchanged(alloc_kv, alloc_key)],
            [
                Put(kv.key, encode(gone.to_document())),
                Put(alloc_key, encode(Allocation(status=InstanceStatus.INACTIVE).to_document())),
            ],
            [Delete(keys.liveness(scope, instance.id))],
        )
        return gone, orphans

    gone, orphans = await retry_on_conflict(attempt)
    await stop_tasks_now(env, scope, orphans, FORCED_STOP_REASON)
    cache = await cluster_cache(env)
    entry = cache.instance(scope, gone.id)
    assert entry is not None
    return {"containerInstance": instance_wire(cache, scope, entry)}


# ---- DescribeContainerInstances -------------------------------------------------------------------


@operation("DescribeContainerInstances")
async def describe_container_instances(env: Env, ctx: RequestContext, req: Request) -> Response:
    wanted = req["containerInstances"]
    if len(wanted) > MAX_DESCRIBE:
        raise InvalidParameter(f"containerInstances can have at most {MAX_DESCRIBE} items.")
    include_tags = "TAGS" in (req.get("include") or ())
    cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
    scope = scope_of(ctx, cluster.name)
    cache = await cluster_cache(env)
    found: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for ref in wanted:
        instance_id = refs.instance_id(ctx, cluster.name, ref)
        entry = cache.instance(scope, instance_id) if instance_id else None
        if entry is None:
            failures.append({"arn": refs.instance_arn(ctx, cluster.name, ref), "reason": "MISSING"})
        else:
            found.append(instance_wire(cache, scope, entry, include_tags))
    return {"containerInstances": found, "failures": failures}


# ---- ListContainerInstances -----------------------------------------------------------------------


def max_results(req: Request) -> int:
    value = req.get("maxResults")
    if value is None:
        return DEFAULT_MAX_RESULTS
    if not 1 <= value <= DEFAULT_MAX_RESULTS:
        raise InvalidParameter(f"maxResults must be between 1 and {DEFAULT_MAX_RESULTS}; got {value}.")
    return int(value)


@operation("ListContainerInstances")
async def list_container_instances(env: Env, ctx: RequestContext, req: Request) -> Response:
    query = expression.compile(req["filter"]) if req.get("filter") else None
    status = req.get("status")
    limit = max_results(req)
    after = decode_token(req.get("nextToken"))
    cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
    scope = scope_of(ctx, cluster.name)
    cache = await cluster_cache(env)
    index = cache.index(scope)

    def selected(instance: ContainerInstance) -> bool:
        if query is None:
            return True
        view = index.find(instance.id) or cache.view(scope, instance.id)
        return view is not None and query.matches(view)

    matching = sorted(
        (
            e.value
            for e in cache.instances(scope)
            if (e.value.status.value == status if status else e.value.status is not InstanceStatus.INACTIVE)
            and (after is None or e.value.id > after)
            and selected(e.value)
        ),
        key=lambda i: i.id,
    )
    page = matching[:limit]
    out: Response = {"containerInstanceArns": [i.arn for i in page]}
    if len(matching) > limit:
        out["nextToken"] = refs.encode_token(page[-1].id)
    return out


# ---- UpdateContainerInstancesState ----------------------------------------------------------------


@operation("UpdateContainerInstancesState")
async def update_container_instances_state(env: Env, ctx: RequestContext, req: Request) -> Response:
    wanted = req["containerInstances"]
    if len(wanted) > MAX_UPDATE:
        raise InvalidParameter(f"containerInstances can have at most {MAX_UPDATE} items.")
    status = req["status"]
    if status not in (InstanceStatus.ACTIVE, InstanceStatus.DRAINING):
        raise InvalidParameter(f"Invalid status '{status}': use ACTIVE or DRAINING.")
    target = InstanceStatus(status)
    cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
    scope = scope_of(ctx, cluster.name)
    changed: list[str] = []
    failures: list[dict[str, Any]] = []
    for ref in wanted:
        instance_id = refs.instance_id(ctx, cluster.name, ref)
        outcome = await _set_status(env, scope, instance_id, target) if instance_id else "MISSING"
        if outcome is None:
            changed.append(instance_id or "")
        else:
            failures.append({"arn": refs.instance_arn(ctx, cluster.name, ref), "reason": outcome})
    cache = await cluster_cache(env)
    wires = []
    for instance_id in changed:
        entry = cache.instance(scope, instance_id)
        if entry is not None:
            wires.append(instance_wire(cache, scope, entry))
    return {"containerInstances": wires, "failures": failures}


async def _set_status(env: Env, scope: keys.Scope, instance_id: str, target: InstanceStatus) -> str | None:
    """Move one instance to ``target``; the failure reason, or None when done."""

    async def attempt() -> str | None:
        kv = await env.store.get(keys.instance(scope, instance_id))
        if kv is None:
            return "MISSING"
        instance = _decode(kv)
        if instance.status is InstanceStatus.INACTIVE:
            return "INACTIVE"
        if instance.status is target:
            return None
        alloc_key = keys.allocation(scope, instance_id)
        alloc_kv = await env.store.get(alloc_key)
        allocation = Allocation.from_document(orjson.loads(alloc_kv.value)) if alloc_kv else Allocation()
        await env.store.txn(
            [Compare.unchanged(kv, kv.key), Compare.unchanged(alloc_kv, alloc_key)],
            [
                Put(kv.key, encode(with_status(instance, target, 0.0).to_document())),
                Put(alloc_key, encode(replace(allocation, status=target).to_document())),
            ],
        )
        return None

    return await retry_on_conflict(attempt)


# ---- retention ------------------------------------------------------------------------------------


async def expire_instances(env: Env, older_than: float) -> int:
    """Remove INACTIVE instances deregistered before ``older_than``, with their allocation records."""
    removed = 0
    start_after: str | None = None
    while True:
        page = await env.store.list(keys.kind_prefix(keys.INSTANCES), start_after=start_after, limit=500)
        for kv in page.kvs:
            instance = _decode(kv)
            gone_at = instance.deregistered_at
            parsed = keys.parse_scoped(kv.key)
            if (
                parsed is not None
                and instance.status is InstanceStatus.INACTIVE
                and gone_at is not None
                and gone_at < older_than
            ):
                try:
                    await env.store.txn(
                        [Compare.unchanged(kv, kv.key)],
                        deletes=[Delete(kv.key), Delete(keys.allocation(parsed[1], instance.id))],
                    )
                    removed += 1
                except Conflict:
                    pass
        if not page.more or not page.kvs:
            return removed
        start_after = page.kvs[-1].key
