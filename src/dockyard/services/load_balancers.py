"""ELBv2 load balancers: CreateLoadBalancer, DescribeLoadBalancers, DeleteLoadBalancer.

A load balancer gets a listen address of its own from the server's load-balancing network
(``LbSettings.network``, loopback by default), claimed create-only at ``/elb/addresses/<ip>`` so two
load balancers never share one; its HAProxy listens there and connects to targets from it. Subnets
and security groups are recorded as given until the awsvpc issue makes them real.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

import orjson

from dockyard.domain.elb_errors import (
    DuplicateLoadBalancerName,
    LoadBalancerNotFound,
    OperationNotPermitted,
    TooManyLoadBalancers,
    ValidationError,
)
from dockyard.domain.load_balancers import (
    APPLICATION,
    DELETION_PROTECTION,
    INTERNET_FACING,
    NETWORK,
    LoadBalancer,
    apply_lb_attributes,
    check_name,
    dns_name,
    load_balancer_arn,
    parse_arn,
    parse_tags,
)
from dockyard.lb import keys, records
from dockyard.lb.records import encode
from dockyard.lb.settings import pick_address, settings_of
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.elb_common import exclusive, lb_state, page, with_marker
from dockyard.services.elb_registry import elb_operation
from dockyard.services.listeners import remove_listener
from dockyard.services.retry import retry_on_conflict
from dockyard.store.base import Compare, Delete, KeyValue, Put

_ZONE_SUFFIX = "a"


async def wire(env: Env, ctx: RequestContext, lb: LoadBalancer) -> dict[str, Any]:
    state, reason = await lb_state(env.store, lb, ctx.account_id, ctx.region)
    return lb.to_wire(state, reason, zone=ctx.region + _ZONE_SUFFIX)


def _same_settings(existing: LoadBalancer, wanted: LoadBalancer) -> bool:
    return (existing.type, existing.scheme, existing.subnets, existing.security_groups) == (
        wanted.type,
        wanted.scheme,
        wanted.subnets,
        wanted.security_groups,
    )


@elb_operation("CreateLoadBalancer")
async def create_load_balancer(env: Env, ctx: RequestContext, req: Request) -> Response:
    name = check_name(req["Name"])
    lb_type = req.get("Type") or APPLICATION
    if lb_type not in (APPLICATION, NETWORK):
        raise ValidationError(f"Load balancer type '{lb_type}' is not supported by Dockyard")
    if req.get("IpAddressType") not in (None, "ipv4"):
        raise ValidationError("Only the ipv4 address type is supported by Dockyard")
    scheme = req.get("Scheme") or INTERNET_FACING
    exclusive(req, ("Subnets", "SubnetMappings"))
    subnets = tuple(
        req.get("Subnets") or [m["SubnetId"] for m in req.get("SubnetMappings") or () if "SubnetId" in m]
    )
    tags = parse_tags(req.get("Tags"))
    settings = settings_of(env.extras)
    key = keys.load_balancer(ctx.account_id, ctx.region, name)

    async def attempt() -> LoadBalancer:
        lb_id = secrets.token_hex(8)
        used = await env.store.list(keys.ADDRESSES, keys_only=True)
        taken = {kv.key[len(keys.ADDRESSES) :] for kv in used.kvs}
        address = pick_address(settings.network, taken, lb_id)
        if address is None:
            raise TooManyLoadBalancers(f"Every address of {settings.network} is in use by a load balancer")
        lb = LoadBalancer(
            arn=load_balancer_arn(ctx.region, ctx.account_id, lb_type, name, lb_id),
            name=name,
            id=lb_id,
            type=lb_type,
            scheme=scheme,
            ip_address_type="ipv4",
            address=address,
            dns_name=dns_name(name, lb_id, ctx.region, scheme, settings.dns_suffix),
            created_at=env.clock.time(),
            subnets=subnets,
            security_groups=tuple(req.get("SecurityGroups") or ()),
            tags=tags,
        )
        existing = await env.store.get(key)
        if existing is not None:
            found = LoadBalancer.from_document(orjson.loads(existing.value))
            if _same_settings(found, lb):
                return found  # CreateLoadBalancer is idempotent for the same settings
            raise DuplicateLoadBalancerName(f"A load balancer with the name '{name}' already exists")
        claim = keys.address(address)
        await env.store.txn(
            [Compare.absent(key), Compare.absent(claim)],
            [Put(key, encode(lb.to_document())), Put(claim, lb.arn.encode())],
        )
        return lb

    lb = await retry_on_conflict(attempt)
    return {"LoadBalancers": [await wire(env, ctx, lb)]}


@elb_operation("DescribeLoadBalancers")
async def describe_load_balancers(env: Env, ctx: RequestContext, req: Request) -> Response:
    exclusive(req, ("LoadBalancerArns", "Names"))
    if req.get("LoadBalancerArns"):
        found = [(await records.load_balancer(env.store, arn))[0] for arn in req["LoadBalancerArns"]]
        return {"LoadBalancers": [await wire(env, ctx, lb) for lb in found]}
    if req.get("Names"):
        out = []
        for name in req["Names"]:
            kv = await env.store.get(keys.load_balancer(ctx.account_id, ctx.region, name))
            if kv is None:
                raise LoadBalancerNotFound(f"Load balancers '[{name}]' not found")
            out.append(await wire(env, ctx, LoadBalancer.from_document(orjson.loads(kv.value))))
        return {"LoadBalancers": out}

    async def decode(kv: KeyValue) -> dict[str, Any]:
        return await wire(env, ctx, LoadBalancer.from_document(orjson.loads(kv.value)))

    items, marker = await page(env.store, keys.load_balancers_prefix(ctx.account_id, ctx.region), req, decode)
    return with_marker({"LoadBalancers": items}, marker)


@elb_operation("DeleteLoadBalancer")
async def delete_load_balancer(env: Env, ctx: RequestContext, req: Request) -> Response:
    """Deletes its listeners and rules too; deleting a load balancer that does not exist succeeds."""
    arn = req["LoadBalancerArn"]
    parse_arn(arn, "loadbalancer")

    async def mark() -> LoadBalancer | None:
        try:
            lb, kv = await records.load_balancer(env.store, arn)
        except LoadBalancerNotFound:
            return None
        if lb.attribute_map().get(DELETION_PROTECTION) == "true":
            raise OperationNotPermitted(
                f"Load balancer '{arn}' cannot be deleted because deletion protection is enabled"
            )
        if not lb.deleting:
            marked = replace(lb, deleting=True)
            await env.store.txn([Compare.unchanged(kv, kv.key)], [Put(kv.key, encode(marked.to_document()))])
        return lb

    lb = await retry_on_conflict(mark)
    if lb is None:
        return {}
    # CreateListener compares the load balancer's document, so none can slip in after the mark
    for kv in await records.list_all(env.store, keys.listeners_prefix(ctx.account_id, ctx.region, lb.id)):
        await remove_listener(env, ctx, kv.key)

    async def attempt() -> None:
        try:
            current, kv = await records.load_balancer(env.store, arn)
        except LoadBalancerNotFound:
            return
        await env.store.txn(
            [Compare.unchanged(kv, kv.key)], deletes=[Delete(kv.key), Delete(keys.address(current.address))]
        )

    await retry_on_conflict(attempt)
    return {}


def _attributes_wire(lb: LoadBalancer) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(lb.attribute_map().items())]


@elb_operation("DescribeLoadBalancerAttributes")
async def describe_load_balancer_attributes(env: Env, ctx: RequestContext, req: Request) -> Response:
    lb, _ = await records.load_balancer(env.store, req["LoadBalancerArn"])
    return {"Attributes": _attributes_wire(lb)}


@elb_operation("ModifyLoadBalancerAttributes")
async def modify_load_balancer_attributes(env: Env, ctx: RequestContext, req: Request) -> Response:
    """``idle_timeout.timeout_seconds`` becomes HAProxy's client/server timeouts (a reload);
    ``deletion_protection.enabled`` guards DeleteLoadBalancer; the others are recorded."""

    async def attempt() -> LoadBalancer:
        lb, kv = await records.load_balancer(env.store, req["LoadBalancerArn"])
        updated = replace(lb, attributes=apply_lb_attributes(lb.type, lb.attributes, req["Attributes"]))
        await env.store.txn([Compare.unchanged(kv, kv.key)], [Put(kv.key, encode(updated.to_document()))])
        return updated

    return {"Attributes": _attributes_wire(await retry_on_conflict(attempt))}
