"""TagResource, UntagResource, ListTagsForResource: dispatched by the resource type in the ARN."""

from __future__ import annotations

from dataclasses import replace

from dockyard.domain.arns import cluster_name as cluster_name_of
from dockyard.domain.errors import ClusterNotFound, InvalidParameter
from dockyard.domain.tags import Tag, merge_tags, parse_tags, remove_tags, tags_to_wire
from dockyard.services import clusters, task_definitions
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.operations import operation

TAGGABLE = ("cluster", "task-definition")


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


async def _retag(env: Env, ctx: RequestContext, arn: str, change: object) -> None:
    kind = resource_type(ctx, arn)
    if kind == "cluster":
        await clusters._update(env, ctx, cluster_name_of(arn), lambda c: replace(c, tags=change(c.tags)))  # type: ignore[operator]
    else:
        await task_definitions.retag_task_definition(env, ctx, arn, change)  # type: ignore[arg-type]


@operation("TagResource")
async def tag_resource(env: Env, ctx: RequestContext, req: Request) -> Response:
    added = parse_tags(req["tags"])

    def change(current: tuple[Tag, ...]) -> tuple[Tag, ...]:
        return merge_tags(current, added)

    await _retag(env, ctx, req["resourceArn"], change)
    return {}


@operation("UntagResource")
async def untag_resource(env: Env, ctx: RequestContext, req: Request) -> Response:
    keys = list(req["tagKeys"])

    def change(current: tuple[Tag, ...]) -> tuple[Tag, ...]:
        return remove_tags(current, keys)

    await _retag(env, ctx, req["resourceArn"], change)
    return {}


@operation("ListTagsForResource")
async def list_tags_for_resource(env: Env, ctx: RequestContext, req: Request) -> Response:
    arn = req["resourceArn"]
    kind = resource_type(ctx, arn)
    if kind == "cluster":
        found = await clusters.read_cluster(env, ctx, arn)
        if found is None or found[0].status != "ACTIVE":
            raise ClusterNotFound("Cluster not found.")
        return {"tags": tags_to_wire(found[0].tags)}
    tags = await task_definitions.task_definition_tags(env, ctx, arn)
    return {"tags": tags_to_wire(tags)}
