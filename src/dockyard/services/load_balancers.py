"""ELBv2 load balancers: CreateLoadBalancer, DescribeLoadBalancers, DeleteLoadBalancer.

A load balancer gets a listen address of its own from the server's load-balancing network
(``LbSettings.network``, loopback by default), claimed create-only at ``/elb/addresses/<ip>`` so two
load balancers never share one; its HAProxy listens there. Its subnets and security groups must exist (ELBv2's
SubnetNotFound, InvalidSecurityGroup; one VPC: InvalidSubnet, InvalidConfigurationRequest). When it names
subnets it also gets an interface in the first one: an address claimed like a task's
(``/ec2/enis/...``, in the same transaction), put on that subnet's Docker bridge by the reconciler
and used as HAProxy's source toward targets, so awsvpc tasks see it and security groups naming the
load balancer's groups admit it (``ec2_enis.members``).
"""

from __future__ import annotations

import random
import secrets
import uuid
from dataclasses import replace
from typing import Any

import orjson

from dockyard.domain.ec2 import (
    InsufficientFreeAddresses,
    InvalidGroupNotFound,
    InvalidSubnetIdNotFound,
    NetworkInterface,
    Subnet,
    gateway,
    mac_address,
    pick_addresses,
)
from dockyard.domain.elb_errors import (
    DuplicateLoadBalancerName,
    InvalidConfigurationRequest,
    InvalidSecurityGroup,
    InvalidSubnet,
    LoadBalancerNotFound,
    OperationNotPermitted,
    SubnetNotFound,
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
from dockyard.services import ec2_store
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.ec2_enis import live_interfaces
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


async def _check_network(
    env: Env, ctx: RequestContext, subnet_ids: tuple[str, ...], group_ids: tuple[str, ...]
) -> Subnet | None:
    """The subnets and groups exist and share one VPC; the first subnet (None when none is named)."""
    subnets = []
    for sid in subnet_ids:
        try:
            subnets.append(await ec2_store.subnet(env, ctx, sid))
        except InvalidSubnetIdNotFound:
            raise SubnetNotFound(f"The subnet ID '{sid}' is not found") from None
    vpcs = {s.vpc_id for s in subnets}
    if len(vpcs) > 1:
        raise InvalidSubnet("The subnets must all be in the same VPC")
    for gid in group_ids:
        try:
            group, _ = await ec2_store.group(env, ctx, gid)
        except InvalidGroupNotFound:
            raise InvalidSecurityGroup(f"The security group '{gid}' does not exist") from None
        if vpcs and group.vpc_id not in vpcs:
            raise InvalidConfigurationRequest(
                f"One or more security groups are invalid: '{gid}' is not in the VPC of the subnets"
            )
    return subnets[0] if subnets else None


def _interface(ctx: RequestContext, subnet: Subnet, address: str, lb: LoadBalancer) -> NetworkInterface:
    return NetworkInterface(
        id="eni-" + uuid.uuid5(uuid.NAMESPACE_URL, lb.arn).hex[:17],
        subnet_id=subnet.id,
        vpc_id=subnet.vpc_id,
        address=address,
        mac=mac_address(address),
        groups=lb.security_groups,
        task_arn=lb.arn,
        task_key=keys.load_balancer(ctx.account_id, ctx.region, lb.name),
        instance_arn="",
        zone=subnet.zone,
        owner=ctx.account_id,
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
    groups = tuple(req.get("SecurityGroups") or ())
    subnet = await _check_network(env, ctx, subnets, groups)
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
            security_groups=groups,
            tags=tags,
        )
        existing = await env.store.get(key)
        if existing is not None:
            found = LoadBalancer.from_document(orjson.loads(existing.value))
            if _same_settings(found, lb):
                return found  # CreateLoadBalancer is idempotent for the same settings
            raise DuplicateLoadBalancerName(f"A load balancer with the name '{name}' already exists")
        claim = keys.address(address)
        guards, puts = [Compare.absent(key), Compare.absent(claim)], [Put(claim, lb.arn.encode())]
        if subnet is not None:
            in_subnet = [e.address for e in await live_interfaces(env, ctx, subnet.id)]
            try:
                (vpc_address,) = pick_addresses(subnet.cidr, in_subnet, 1, random.Random(lb_id))
            except InsufficientFreeAddresses:
                raise InvalidSubnet(f"Subnet {subnet.id} has no free address") from None
            eni = _interface(ctx, subnet, vpc_address, lb)
            lb = replace(
                lb,
                interface={
                    "subnetId": subnet.id,
                    "address": vpc_address,
                    "cidr": subnet.cidr,
                    "gateway": gateway(subnet.cidr),
                    "networkName": subnet.network_name,
                    "networkInterfaceId": eni.id,
                },
            )
            eni_key = ec2_store.eni_key(ctx, subnet.id, vpc_address)
            guards.append(Compare.absent(eni_key))
            puts.append(Put(eni_key, orjson.dumps(eni.to_doc())))
        await env.store.txn(guards, [Put(key, encode(lb.to_document())), *puts])
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
        deletes = [Delete(kv.key), Delete(keys.address(current.address))]
        if current.interface:
            eni = current.interface
            deletes.append(Delete(ec2_store.eni_key(ctx, eni["subnetId"], eni["address"])))
        await env.store.txn([Compare.unchanged(kv, kv.key)], deletes=deletes)

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
