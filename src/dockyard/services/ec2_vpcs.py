"""EC2 VPCs, subnets and network interfaces: CreateVpc, DescribeVpcs, CreateSubnet, DescribeSubnets,
DescribeNetworkInterfaces. Ranges are checked against Docker's pools and the host's routes; a
subnet's Docker network is made by each agent the first time one of its tasks needs it."""

from __future__ import annotations

import ipaddress

import orjson

from dockyard.domain.ec2 import Subnet, Vpc, check_subnet_range, check_vpc_range, usable
from dockyard.services import ec2_store as store
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.ec2_enis import live_interfaces
from dockyard.services.ec2_registry import ec2_operation, matches
from dockyard.store.base import Compare, Put

_VPC_FILTERS = {
    "vpc-id": "VpcId",
    "cidr": "CidrBlock",
    "cidr-block": "CidrBlock",
    "is-default": "IsDefault",
    "state": "State",
}
_SUBNET_FILTERS = {
    "subnet-id": "SubnetId",
    "vpc-id": "VpcId",
    "cidr-block": "CidrBlock",
    "default-for-az": "DefaultForAz",
    "availability-zone": "AvailabilityZone",
}
_ENI_FILTERS = {
    "network-interface-id": "NetworkInterfaceId",
    "subnet-id": "SubnetId",
    "vpc-id": "VpcId",
    "private-ip-address": "PrivateIpAddress",
    "addresses.private-ip-address": "PrivateIpAddress",
}


def _tags(req: Request, kind: str) -> tuple[tuple[str, str], ...]:
    out = []
    for spec in req.get("TagSpecifications") or ():
        if spec.get("ResourceType") in (None, kind):
            out += [(str(t.get("Key")), str(t.get("Value") or "")) for t in spec.get("Tags") or ()]
    return tuple(out)


@ec2_operation("CreateVpc")
async def create_vpc(env: Env, ctx: RequestContext, req: Request) -> Response:
    existing = await store.vpcs(env, ctx)
    forbidden = store.forbidden_ranges(store.settings_of(env.extras), [v.cidr for v in existing])
    net = check_vpc_range(str(req.get("CidrBlock") or ""), forbidden)
    vpc = Vpc(store.short_id("vpc", ctx.request_id), str(net), ctx.account_id, False, _tags(req, "vpc"))
    await env.store.txn([], [Put(store.vpc_key(ctx, vpc.id), orjson.dumps(vpc.to_doc()))])
    from dockyard.services.ec2_groups import create_default_group

    await create_default_group(env, ctx, vpc.id)
    return {"Vpc": vpc.to_wire()}


@ec2_operation("DescribeVpcs")
async def describe_vpcs(env: Env, ctx: RequestContext, req: Request) -> Response:
    wanted = set(req.get("VpcIds") or ())
    out = [v.to_wire() for v in await store.vpcs(env, ctx) if not wanted or v.id in wanted]
    missing = wanted - {v["VpcId"] for v in out}
    if missing:
        await store.vpc(env, ctx, sorted(missing)[0])  # raises InvalidVpcID.NotFound
    return {"Vpcs": [v for v in out if matches(v, req.get("Filters") or (), _VPC_FILTERS)]}


@ec2_operation("CreateSubnet")
async def create_subnet(env: Env, ctx: RequestContext, req: Request) -> Response:
    vpc = await store.vpc(env, ctx, str(req.get("VpcId") or ""))
    all_vpcs = await store.vpcs(env, ctx)
    siblings = [s.cidr for s in await store.subnets(env, ctx) if s.vpc_id == vpc.id]
    forbidden = store.forbidden_ranges(store.settings_of(env.extras), [v.cidr for v in all_vpcs])
    net = check_subnet_range(str(req.get("CidrBlock") or ""), vpc.cidr, siblings, forbidden)
    subnet = Subnet(
        store.short_id("subnet", ctx.request_id),
        vpc.id,
        str(net),
        str(req.get("AvailabilityZone") or ctx.region + "a"),
        ctx.account_id,
        False,
        _tags(req, "subnet"),
    )
    # one subnet per range in the VPC: the range itself is the create-only claim
    claim = f"/ec2/subnet-ranges/{ctx.account_id}/{ctx.region}/{vpc.id}/{net.network_address}"
    await env.store.txn(
        [Compare.absent(claim)],
        [
            Put(claim, subnet.id.encode()),
            Put(store.subnet_key(ctx, subnet.id), orjson.dumps(subnet.to_doc())),
        ],
    )
    return {"Subnet": subnet.to_wire(ctx.region, len(usable(subnet.cidr)))}


@ec2_operation("DescribeSubnets")
async def describe_subnets(env: Env, ctx: RequestContext, req: Request) -> Response:
    wanted = set(req.get("SubnetIds") or ())
    used: dict[str, int] = {}
    for eni in await live_interfaces(env, ctx):
        used[eni.subnet_id] = used.get(eni.subnet_id, 0) + 1
    out = [
        s.to_wire(ctx.region, len(usable(s.cidr)) - used.get(s.id, 0))
        for s in await store.subnets(env, ctx)
        if not wanted or s.id in wanted
    ]
    missing = wanted - {s["SubnetId"] for s in out}
    if missing:
        await store.subnet(env, ctx, sorted(missing)[0])
    return {"Subnets": [s for s in out if matches(s, req.get("Filters") or (), _SUBNET_FILTERS)]}


@ec2_operation("DescribeNetworkInterfaces")
async def describe_network_interfaces(env: Env, ctx: RequestContext, req: Request) -> Response:
    wanted = set(req.get("NetworkInterfaceIds") or ())
    names = {g.id: g.name for g in await store.groups(env, ctx)}
    out = [
        e.to_wire(ctx.region, names)
        for e in sorted(await live_interfaces(env, ctx), key=lambda e: ipaddress.IPv4Address(e.address))
        if not wanted or e.id in wanted
    ]
    filters = list(req.get("Filters") or ())
    groups = [f for f in filters if f.get("Name") == "group-id"]
    out = [
        e
        for e in out
        if matches(e, filters, _ENI_FILTERS)
        and all({g["GroupId"] for g in e["Groups"]} & set(f.get("Values") or ()) for f in groups)
    ]
    return {"NetworkInterfaces": out}
