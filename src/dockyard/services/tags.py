"""TagResource, UntagResource, ListTagsForResource: dispatched by the resource type in the ARN.

Clusters and task definitions keep their tags in their own documents (``clusters``,
``task_definitions``); tasks, services and container instances keep them in the documents RunTask,
CreateService and RegisterContainerInstance store. Every change reads the document, applies the
change and commits with compare-and-swap on it, re-reading on a conflict (a task's document is also
written by its agent's reports and by the controllers, which then re-read and keep the new tags).

Errors follow ECS: a malformed ARN, one of another account or region, or an unsupported resource
type is an ``InvalidParameterException``; a cluster-scoped ARN whose cluster is not ACTIVE is a
``ClusterNotFoundException``; a task, service or container instance that does not exist is a
``ResourceNotFoundException``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import orjson

from dockyard.domain import arns
from dockyard.domain.arns import cluster_name as cluster_name_of
from dockyard.domain.container_instances import ContainerInstance
from dockyard.domain.errors import ClusterNotFound, InvalidParameter, ResourceNotFound
from dockyard.domain.services import Service
from dockyard.domain.tags import Tag, merge_tags, parse_tags, remove_tags, tags_to_wire
from dockyard.placement.commit import encode, read_task
from dockyard.services import clusters, keys, task_definitions
from dockyard.services.cluster_state import scope_of
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.operations import operation
from dockyard.services.retry import retry_on_conflict
from dockyard.store.base import Compare, KeyValue, Put

CLUSTER = "cluster"
TASK_DEFINITION = "task-definition"
TASK = "task"
SERVICE = "service"
CONTAINER_INSTANCE = "container-instance"
TAGGABLE = (CLUSTER, TASK_DEFINITION, TASK, SERVICE, CONTAINER_INSTANCE)
CLUSTER_SCOPED = {
    TASK: arns.parse_task,
    SERVICE: arns.parse_service,
    CONTAINER_INSTANCE: arns.parse_container_instance,
}

Change = Callable[[tuple[Tag, ...]], tuple[Tag, ...]]


def resource_type(ctx: RequestContext, arn: str) -> str:
    """The ECS resource type of ``arn`` (checked to belong to the caller's account and region)."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "ecs" or "/" not in parts[5]:
        raise InvalidParameter(f"Invalid resource ARN: {arn[:300]}")
    if parts[3] != ctx.region or parts[4] != ctx.account_id:
        raise InvalidParameter("The resource ARN does not belong to this account and region.")
    kind = parts[5].split("/", 1)[0]
    if kind not in TAGGABLE:
        raise InvalidParameter(f"Tagging is not supported for resource type '{kind}'.")
    return kind


@dataclass(frozen=True)
class _Tagged:
    """A cluster-scoped document as read: its tags, and how to store it with other tags."""

    tags: tuple[Tag, ...]
    kv: KeyValue
    encode: Callable[[tuple[Tag, ...]], bytes]


async def _read_scoped(env: Env, ctx: RequestContext, kind: str, arn: str) -> _Tagged:
    """The task, service or container instance ``arn`` names, in an ACTIVE cluster."""
    parsed = CLUSTER_SCOPED[kind](arn)
    if parsed.cluster is None or not parsed.id or "/" in parsed.id:
        raise InvalidParameter(f"Invalid {kind} ARN (the cluster name is required): {arn[:300]}")
    cluster, _ = await clusters.require_active_cluster(env, ctx, parsed.cluster)
    scope = scope_of(ctx, cluster.name)
    if kind == TASK:
        found = await read_task(env.store, scope, parsed.id)
        if found is not None:
            task, kv = found
            return _Tagged(task.tags, kv, lambda tags: encode(replace(task, tags=tags).to_document()))
    elif kind == SERVICE:
        service_kv = await env.store.get(keys.service(ctx.account_id, ctx.region, cluster.name, parsed.id))
        if service_kv is not None:
            service = Service.from_document(orjson.loads(service_kv.value))
            return _Tagged(
                service.tags, service_kv, lambda tags: encode(replace(service, tags=tags).to_document())
            )
    else:
        instance_kv = await env.store.get(keys.instance(scope, parsed.id))
        if instance_kv is not None:
            instance = ContainerInstance.from_document(orjson.loads(instance_kv.value))
            return _Tagged(
                instance.tags, instance_kv, lambda tags: encode(replace(instance, tags=tags).to_document())
            )
    raise ResourceNotFound("The specified resource is not found.")


async def _retag(env: Env, ctx: RequestContext, arn: str, change: Change) -> None:
    kind = resource_type(ctx, arn)
    if kind == CLUSTER:
        await clusters._update(env, ctx, cluster_name_of(arn), lambda c: replace(c, tags=change(c.tags)))
        return
    if kind == TASK_DEFINITION:
        await task_definitions.retag_task_definition(env, ctx, arn, change)
        return

    async def attempt() -> None:
        found = await _read_scoped(env, ctx, kind, arn)
        tags = change(found.tags)
        if tags != found.tags:
            await env.store.txn(
                [Compare.unchanged(found.kv, found.kv.key)], [Put(found.kv.key, found.encode(tags))]
            )

    await retry_on_conflict(attempt)


@operation("TagResource")
async def tag_resource(env: Env, ctx: RequestContext, req: Request) -> Response:
    added = parse_tags(req["tags"])

    def change(current: tuple[Tag, ...]) -> tuple[Tag, ...]:
        return merge_tags(current, added)

    await _retag(env, ctx, req["resourceArn"], change)
    return {}


@operation("UntagResource")
async def untag_resource(env: Env, ctx: RequestContext, req: Request) -> Response:
    keys_ = list(req["tagKeys"])

    def change(current: tuple[Tag, ...]) -> tuple[Tag, ...]:
        return remove_tags(current, keys_)

    await _retag(env, ctx, req["resourceArn"], change)
    return {}


@operation("ListTagsForResource")
async def list_tags_for_resource(env: Env, ctx: RequestContext, req: Request) -> Response:
    arn = req["resourceArn"]
    kind = resource_type(ctx, arn)
    if kind == CLUSTER:
        found = await clusters.read_cluster(env, ctx, arn)
        if found is None or found[0].status != "ACTIVE":
            raise ClusterNotFound("Cluster not found.")
        return {"tags": tags_to_wire(found[0].tags)}
    if kind == TASK_DEFINITION:
        return {"tags": tags_to_wire(await task_definitions.task_definition_tags(env, ctx, arn))}
    return {"tags": tags_to_wire((await _read_scoped(env, ctx, kind, arn)).tags)}
