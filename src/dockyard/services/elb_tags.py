"""ELBv2 tags: AddTags, RemoveTags, DescribeTags on load balancers, target groups, listeners, rules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from dockyard.domain.elb_errors import ValidationError
from dockyard.domain.load_balancers import Tag, merge_tags, parse_tags, remove_tags, tags_wire
from dockyard.lb import records
from dockyard.lb.records import encode
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.elb_registry import elb_operation
from dockyard.services.retry import retry_on_conflict
from dockyard.store.base import Compare, KeyValue, Put, StateStore

_READERS = {
    "loadbalancer": records.load_balancer,
    "targetgroup": records.target_group,
    "listener": records.listener,
    "listener-rule": records.rule,
}


def _kind(arn: str) -> str:
    resource = arn.split(":", 5)[-1]
    kind = resource.split("/", 1)[0]
    if kind not in _READERS:
        raise ValidationError(f"'{arn[:300]}' is not the ARN of a taggable ELBv2 resource")
    return kind


async def _read(env: Env, arn: str) -> tuple[Any, KeyValue]:
    read: Callable[[StateStore, str], Awaitable[tuple[Any, KeyValue]]] = _READERS[_kind(arn)]
    return await read(env.store, arn)


async def _retag(env: Env, arn: str, change: Callable[[tuple[Tag, ...]], tuple[Tag, ...]]) -> None:
    async def attempt() -> None:
        resource, kv = await _read(env, arn)
        updated = replace(resource, tags=change(resource.tags))
        await env.store.txn([Compare.unchanged(kv, kv.key)], [Put(kv.key, encode(updated.to_document()))])

    await retry_on_conflict(attempt)


@elb_operation("AddTags")
async def add_tags(env: Env, ctx: RequestContext, req: Request) -> Response:
    added = parse_tags(req["Tags"])
    for arn in req["ResourceArns"]:
        await _retag(env, arn, lambda current: merge_tags(current, added))
    return {}


@elb_operation("RemoveTags")
async def remove_tags_(env: Env, ctx: RequestContext, req: Request) -> Response:
    keys = list(req["TagKeys"])
    for arn in req["ResourceArns"]:
        await _retag(env, arn, lambda current: remove_tags(current, keys))
    return {}


@elb_operation("DescribeTags")
async def describe_tags(env: Env, ctx: RequestContext, req: Request) -> Response:
    out = []
    for arn in req["ResourceArns"]:
        resource, _ = await _read(env, arn)
        out.append({"ResourceArn": arn, "Tags": tags_wire(resource.tags)})
    return {"TagDescriptions": out}
