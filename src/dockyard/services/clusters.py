"""Cluster use cases: validate -> read -> decide (domain) -> commit (compare-and-swap)."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import orjson

from dockyard.domain.arns import cluster_arn
from dockyard.domain.arns import cluster_name as cluster_name_of
from dockyard.domain.clusters import (
    ACTIVE,
    INACTIVE,
    Cluster,
    ClusterCounts,
    check_cluster_name,
    deactivate,
    merge_settings,
    parse_settings,
)
from dockyard.domain.errors import (
    ClusterContainsContainerInstances,
    ClusterContainsServices,
    ClusterContainsTasks,
    ClusterNotFound,
    InvalidParameter,
)
from dockyard.domain.tags import parse_tags
from dockyard.domain.task_status import TaskStatus
from dockyard.placement.cache import registered_instances
from dockyard.services import keys
from dockyard.services.cluster_state import cluster_cache, scope_of
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.operations import operation
from dockyard.services.retry import retry_on_conflict
from dockyard.store.base import Compare, Conflict, Delete, KeyValue, Put

DEFAULT_CLUSTER = "default"


def encode(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


async def read_cluster(env: Env, ctx: RequestContext, ref: str) -> tuple[Cluster, KeyValue] | None:
    name = cluster_name_of(ref)
    kv = await env.store.get(keys.cluster(ctx.account_id, ctx.region, name))
    if kv is None:
        return None
    return Cluster.from_document(orjson.loads(kv.value)), kv


async def require_active_cluster(env: Env, ctx: RequestContext, ref: str | None) -> tuple[Cluster, KeyValue]:
    """The ACTIVE cluster named by ``ref`` (default: "default"), or ClusterNotFoundException."""
    found = await read_cluster(env, ctx, ref or DEFAULT_CLUSTER)
    if found is None or found[0].status != ACTIVE:
        raise ClusterNotFound("Cluster not found.")
    return found


PENDING_STATUSES = (TaskStatus.PROVISIONING, TaskStatus.PENDING, TaskStatus.ACTIVATING)


async def count_cluster(env: Env, ctx: RequestContext, name: str) -> ClusterCounts:
    """Counts derived from the watch-fed cluster cache (no counters a writer would contend on).

    pendingTasksCount counts tasks not yet RUNNING (PROVISIONING, PENDING, ACTIVATING).
    """
    cache = await cluster_cache(env)
    scope = scope_of(ctx, name)
    statuses = cache.task_counts(scope)
    active, draining = await _count_services(env, ctx, name)
    return ClusterCounts(
        registered_container_instances=registered_instances(cache, scope),
        running_tasks=statuses[TaskStatus.RUNNING],
        pending_tasks=sum(statuses[s] for s in PENDING_STATUSES),
        active_services=active,
        draining_services=draining,
    )


async def _count_services(env: Env, ctx: RequestContext, name: str) -> tuple[int, int]:
    """(ACTIVE, DRAINING) services of the cluster; INACTIVE ones (deleted) do not count."""
    active = draining = 0
    prefix = keys.services_prefix(ctx.account_id, ctx.region, name)
    start_after: str | None = None
    while True:
        page = await env.store.list(prefix, start_after=start_after, limit=200)
        for kv in page.kvs:
            status = orjson.loads(kv.value).get("status")
            active += status == ACTIVE
            draining += status == "DRAINING"
        if not page.more or not page.kvs:
            return active, draining
        start_after = page.kvs[-1].key


async def live_tasks(env: Env, ctx: RequestContext, name: str) -> int:
    """Tasks of the cluster that are not STOPPED (DeleteCluster refuses while there are any)."""
    cache = await cluster_cache(env)
    statuses = cache.task_counts(scope_of(ctx, name))
    return sum(n for status, n in statuses.items() if status is not TaskStatus.STOPPED)


@operation("CreateCluster")
async def create_cluster(env: Env, ctx: RequestContext, req: Request) -> Response:
    name = check_cluster_name(req.get("clusterName") or DEFAULT_CLUSTER)
    settings = parse_settings(req.get("settings") or ())
    tags = parse_tags(req.get("tags"))
    key = keys.cluster(ctx.account_id, ctx.region, name)

    async def attempt() -> Cluster:
        kv = await env.store.get(key)
        if kv is not None:
            existing = Cluster.from_document(orjson.loads(kv.value))
            if existing.status == ACTIVE:
                return existing  # CreateCluster is idempotent on the name
        cluster = Cluster(
            arn=cluster_arn(ctx.region, ctx.account_id, name),
            name=name,
            status=ACTIVE,
            settings=merge_settings((("containerInsights", "disabled"),), settings),
            tags=tags,
            configuration=req.get("configuration"),
            service_connect_defaults=req.get("serviceConnectDefaults"),
            capacity_providers=tuple(req.get("capacityProviders") or ()),
            default_capacity_provider_strategy=tuple(req.get("defaultCapacityProviderStrategy") or ()),
            created_at=env.clock.time(),
        )
        await env.store.txn([Compare.unchanged(kv, key)], [Put(key, encode(cluster.to_document()))])
        return cluster

    cluster = await retry_on_conflict(attempt)
    counts = await count_cluster(env, ctx, name)
    return {"cluster": cluster.to_wire(counts, frozenset({"SETTINGS", "TAGS", "CONFIGURATIONS"}))}


@operation("DescribeClusters")
async def describe_clusters(env: Env, ctx: RequestContext, req: Request) -> Response:
    refs = req.get("clusters") or [DEFAULT_CLUSTER]
    if len(refs) > 100:
        raise InvalidParameter("clusters can have at most 100 items.")
    include = frozenset(req.get("include") or ())
    found: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for ref in refs:
        try:
            hit = await read_cluster(env, ctx, ref)
        except InvalidParameter:
            hit = None
        if hit is None:
            arn = ref if ref.startswith("arn:") else cluster_arn(ctx.region, ctx.account_id, ref)
            failures.append({"arn": arn, "reason": "MISSING"})
            continue
        cluster = hit[0]
        counts = await count_cluster(env, ctx, cluster.name) if cluster.status == ACTIVE else ClusterCounts()
        found.append(cluster.to_wire(counts, include))
    return {"clusters": found, "failures": failures}


def _encode_token(last_key: str) -> str:
    return base64.urlsafe_b64encode(last_key.encode()).decode()


def decode_token(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidParameter("Invalid nextToken.") from e


@operation("ListClusters")
async def list_clusters(env: Env, ctx: RequestContext, req: Request) -> Response:
    max_results = int(req.get("maxResults") or 100)
    if not 1 <= max_results <= 100:
        raise InvalidParameter("maxResults must be between 1 and 100.")
    prefix = keys.clusters_prefix(ctx.account_id, ctx.region)
    start_after = decode_token(req.get("nextToken"))
    if start_after is not None and not start_after.startswith(prefix):
        raise InvalidParameter("Invalid nextToken.")
    arns: list[str] = []
    cursor = start_after
    while True:
        page = await env.store.list(prefix, start_after=cursor, limit=max_results)
        for i, kv in enumerate(page.kvs):
            cursor = kv.key
            doc = orjson.loads(kv.value)
            if doc["status"] == ACTIVE:
                arns.append(doc["clusterArn"])
            if len(arns) == max_results:
                if i < len(page.kvs) - 1 or page.more:
                    return {"clusterArns": arns, "nextToken": _encode_token(cursor)}
                return {"clusterArns": arns}
        if not page.more or not page.kvs:
            return {"clusterArns": arns}


async def _update(env: Env, ctx: RequestContext, ref: str, change: Any) -> Cluster:
    """Read the ACTIVE cluster, apply ``change`` (pure), commit with compare-and-swap."""

    async def attempt() -> Cluster:
        cluster, kv = await require_active_cluster(env, ctx, ref)
        updated: Cluster = change(cluster)
        await env.store.txn([Compare.unchanged(kv, kv.key)], [Put(kv.key, encode(updated.to_document()))])
        return updated

    return await retry_on_conflict(attempt)


@operation("UpdateCluster")
async def update_cluster(env: Env, ctx: RequestContext, req: Request) -> Response:
    settings = parse_settings(req.get("settings") or ())

    def change(c: Cluster) -> Cluster:
        out = replace(c, settings=merge_settings(c.settings, settings))
        if "configuration" in req:
            out = replace(out, configuration=req["configuration"])
        if "serviceConnectDefaults" in req:
            out = replace(out, service_connect_defaults=req["serviceConnectDefaults"])
        return out

    cluster = await _update(env, ctx, req["cluster"], change)
    counts = await count_cluster(env, ctx, cluster.name)
    return {"cluster": cluster.to_wire(counts, frozenset({"SETTINGS", "TAGS", "CONFIGURATIONS"}))}


@operation("UpdateClusterSettings")
async def update_cluster_settings(env: Env, ctx: RequestContext, req: Request) -> Response:
    settings = parse_settings(req.get("settings") or ())
    cluster = await _update(
        env, ctx, req["cluster"], lambda c: replace(c, settings=merge_settings(c.settings, settings))
    )
    counts = await count_cluster(env, ctx, cluster.name)
    return {"cluster": cluster.to_wire(counts, frozenset({"SETTINGS", "TAGS"}))}


@operation("DeleteCluster")
async def delete_cluster(env: Env, ctx: RequestContext, req: Request) -> Response:
    ref = req["cluster"]

    async def attempt() -> Cluster:
        cluster, kv = await require_active_cluster(env, ctx, ref)
        counts = await count_cluster(env, ctx, cluster.name)
        if counts.registered_container_instances:
            raise ClusterContainsContainerInstances(
                "The Cluster cannot be deleted while Container Instances are active or draining."
            )
        if counts.active_services or counts.draining_services:
            raise ClusterContainsServices("The Cluster cannot be deleted while Services are active.")
        if counts.running_tasks or counts.pending_tasks or await live_tasks(env, ctx, cluster.name):
            raise ClusterContainsTasks("The Cluster cannot be deleted while Tasks are active.")
        gone = deactivate(cluster, env.clock.time())
        await env.store.txn([Compare.unchanged(kv, kv.key)], [Put(kv.key, encode(gone.to_document()))])
        return gone

    cluster = await retry_on_conflict(attempt)
    return {"cluster": cluster.to_wire(ClusterCounts(), frozenset({"SETTINGS", "TAGS"}))}


async def expire_clusters(env: Env, older_than: float) -> int:
    """Remove INACTIVE clusters that became inactive before ``older_than`` (epoch seconds)."""
    removed = 0
    start_after: str | None = None
    while True:
        page = await env.store.list(keys.clusters_prefix(), start_after=start_after, limit=500)
        for kv in page.kvs:
            doc = orjson.loads(kv.value)
            since = doc.get("inactiveSince")
            if doc.get("status") == INACTIVE and since is not None and since < older_than:
                try:
                    await env.store.txn([Compare.unchanged(kv, kv.key)], deletes=[Delete(kv.key)])
                    removed += 1
                except Conflict:  # a concurrent re-create wins
                    pass
        if not page.more or not page.kvs:
            return removed
        start_after = page.kvs[-1].key
