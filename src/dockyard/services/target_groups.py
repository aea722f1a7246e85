"""ELBv2 target groups: Create/Describe/Modify/DeleteTargetGroup and their attributes."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson

from dockyard.domain.elb_errors import (
    DuplicateTargetGroupName,
    ResourceInUse,
    TargetGroupNotFound,
)
from dockyard.domain.load_balancers import (
    APPLICATION,
    NETWORK,
    check_name,
    parse_arn,
    parse_tags,
    target_group_arn,
)
from dockyard.domain.target_groups import (
    TargetGroup,
    apply_attributes,
    apply_health_check,
    check_target_group_request,
    default_attributes,
    default_health_check,
)
from dockyard.lb import keys, records
from dockyard.lb.records import encode
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.elb_common import exclusive, page, with_marker
from dockyard.services.elb_registry import elb_operation
from dockyard.services.retry import retry_on_conflict
from dockyard.store.base import MAX_TXN_OPS, Compare, Delete, KeyValue, Put


def _same_settings(a: TargetGroup, b: TargetGroup) -> bool:
    return (a.protocol, a.port, a.vpc_id, a.target_type, a.health_check) == (
        b.protocol,
        b.port,
        b.vpc_id,
        b.target_type,
        b.health_check,
    )


@elb_operation("CreateTargetGroup")
async def create_target_group(env: Env, ctx: RequestContext, req: Request) -> Response:
    name = check_name(req["Name"], "target group")
    protocol, port, target_type = check_target_group_request(req)
    health_check = apply_health_check(default_health_check(protocol), req, target_type)
    tags = parse_tags(req.get("Tags"))
    key = keys.target_group(ctx.account_id, ctx.region, name)

    async def attempt() -> TargetGroup:
        tg_id = secrets.token_hex(8)
        tg = TargetGroup(
            arn=target_group_arn(ctx.region, ctx.account_id, name, tg_id),
            name=name,
            id=tg_id,
            protocol=protocol,
            port=port,
            vpc_id=req["VpcId"],
            target_type=target_type,
            health_check=health_check,
            attributes=default_attributes(APPLICATION if protocol == "HTTP" else NETWORK),
            created_at=env.clock.time(),
            tags=tags,
        )
        kv = await env.store.get(key)
        if kv is not None:
            existing = TargetGroup.from_document(orjson.loads(kv.value))
            if _same_settings(existing, tg):
                return existing
            raise DuplicateTargetGroupName(
                f"A target group with the same name '{name}' exists, but with different settings"
            )
        await env.store.txn([Compare.absent(key)], [Put(key, encode(tg.to_document()))])
        return tg

    tg = await retry_on_conflict(attempt)
    return {"TargetGroups": [tg.to_wire()]}


@elb_operation("DescribeTargetGroups")
async def describe_target_groups(env: Env, ctx: RequestContext, req: Request) -> Response:
    exclusive(req, ("LoadBalancerArn", "TargetGroupArns", "Names"))
    if req.get("TargetGroupArns"):
        found = [(await records.target_group(env.store, arn))[0] for arn in req["TargetGroupArns"]]
        return {"TargetGroups": [tg.to_wire() for tg in found]}
    if req.get("Names"):
        out = []
        for name in req["Names"]:
            kv = await env.store.get(keys.target_group(ctx.account_id, ctx.region, name))
            if kv is None:
                raise TargetGroupNotFound(f"One or more target groups not found: '{name}'")
            out.append(TargetGroup.from_document(orjson.loads(kv.value)).to_wire())
        return {"TargetGroups": out}
    lb_arn = req.get("LoadBalancerArn")
    if lb_arn:
        await records.load_balancer(env.store, lb_arn)

    async def decode(kv: KeyValue) -> dict[str, Any] | None:
        tg = TargetGroup.from_document(orjson.loads(kv.value))
        if lb_arn and lb_arn not in tg.users.values():
            return None
        return tg.to_wire()

    items, marker = await page(env.store, keys.target_groups_prefix(ctx.account_id, ctx.region), req, decode)
    return with_marker({"TargetGroups": items}, marker)


async def _update(env: Env, arn: str, change: Callable[[TargetGroup], TargetGroup]) -> TargetGroup:
    async def attempt() -> TargetGroup:
        tg, kv = await records.target_group(env.store, arn)
        updated = change(tg)
        if updated != tg:
            await env.store.txn([Compare.unchanged(kv, kv.key)], [Put(kv.key, encode(updated.to_document()))])
        return updated

    return await retry_on_conflict(attempt)


@elb_operation("ModifyTargetGroup")
async def modify_target_group(env: Env, ctx: RequestContext, req: Request) -> Response:
    tg = await _update(
        env,
        req["TargetGroupArn"],
        lambda tg: replace(tg, health_check=apply_health_check(tg.health_check, req, tg.target_type)),
    )
    return {"TargetGroups": [tg.to_wire()]}


@elb_operation("DescribeTargetGroupAttributes")
async def describe_target_group_attributes(env: Env, ctx: RequestContext, req: Request) -> Response:
    tg, _ = await records.target_group(env.store, req["TargetGroupArn"])
    return {"Attributes": tg.attributes_wire()}


@elb_operation("ModifyTargetGroupAttributes")
async def modify_target_group_attributes(env: Env, ctx: RequestContext, req: Request) -> Response:
    tg = await _update(
        env,
        req["TargetGroupArn"],
        lambda tg: replace(tg, attributes=apply_attributes(tg.attributes, req["Attributes"])),
    )
    return {"Attributes": tg.attributes_wire()}


@elb_operation("DeleteTargetGroup")
async def delete_target_group(env: Env, ctx: RequestContext, req: Request) -> Response:
    """Refused while a listener or rule forwards to the group; a group that does not exist is fine."""
    arn = req["TargetGroupArn"]
    parse_arn(arn, "targetgroup")

    async def attempt() -> TargetGroup | None:
        try:
            tg, kv = await records.target_group(env.store, arn)
        except TargetGroupNotFound:
            return None
        if tg.in_use():
            raise ResourceInUse(f"Target group '{arn}' is currently in use by a listener or a rule")
        await env.store.txn([Compare.unchanged(kv, kv.key)], deletes=[Delete(kv.key)])
        return tg

    tg = await retry_on_conflict(attempt)
    if tg is not None:
        # registrations and health records of the group go too (its id is never reused)
        for prefix in (
            keys.targets_prefix(ctx.account_id, ctx.region, tg.id),
            keys.health_prefix(ctx.account_id, ctx.region, tg.id),
        ):
            kvs = await records.list_all(env.store, prefix)
            for i in range(0, len(kvs), MAX_TXN_OPS):
                await env.store.txn(deletes=[Delete(kv.key) for kv in kvs[i : i + MAX_TXN_OPS]])
    return {}
