"""Where EC2 networking documents live, their reads, the per-region defaults and the range checks.

    /ec2/vpcs/<account>/<region>/<vpc id>                    Vpc
    /ec2/subnets/<account>/<region>/<subnet id>              Subnet
    /ec2/groups/<account>/<region>/<group id>                SecurityGroup
    /ec2/group-names/<account>/<region>/<vpc id>/<name>      claim: one group name per VPC
    /ec2/enis/<account>/<region>/<subnet id>/<address>       NetworkInterface (the address claim)
    /ec2/defaults/<account>/<region>                         marker: defaults were made

The defaults (a VPC, one subnet, the ``default`` group) are made on first use in one create-only
transaction, so concurrent first requests agree on them.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from dockyard.domain.ec2 import (
    DEFAULT_GROUP_NAME,
    InvalidGroupNotFound,
    InvalidSubnetIdNotFound,
    InvalidVpcIdNotFound,
    NetworkInterface,
    Rule,
    SecurityGroup,
    Subnet,
    Vpc,
)
from dockyard.placement import addresses
from dockyard.services.context import Env, RequestContext
from dockyard.store.base import Compare, Conflict, Put

EXTRAS_KEY = "ec2"
T = TypeVar("T")


@dataclass(frozen=True)
class Ec2Settings:
    # The default VPC and subnet of every region. Both must stay clear of Docker's address pools
    # (172.17.0.0/16 .. 172.31.0.0/16 and 192.168.0.0/16 by default) and of the host's routes.
    default_vpc_cidr: str = "10.213.0.0/16"
    default_subnet_cidr: str = "10.213.0.0/20"
    docker_pools: tuple[str, ...] = (
        "172.17.0.0/16",
        "172.18.0.0/15",
        "172.20.0.0/14",
        "172.24.0.0/13",
        "192.168.0.0/16",
    )
    route_table: str = "/proc/net/route"


def settings_of(extras: Mapping[str, object]) -> Ec2Settings:
    found = extras.get(EXTRAS_KEY)
    return found if isinstance(found, Ec2Settings) else Ec2Settings()


def host_routes(path: str) -> list[str]:
    """The IPv4 routes of this machine (default route excluded), from the kernel's route table."""
    out = []
    try:
        with open(path) as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) < 8:
                    continue
                dest = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
                mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
                net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
                if net.prefixlen > 0:
                    out.append(str(net))
    except OSError:
        pass
    return out


def forbidden_ranges(settings: Ec2Settings, ours: Iterable[str]) -> list[str]:
    """Docker's pools and the host's routes, less the routes of our own subnet networks."""
    mine = [ipaddress.IPv4Network(c) for c in ours]
    routes = [
        r
        for r in host_routes(settings.route_table)
        if not any(ipaddress.IPv4Network(r).subnet_of(m) for m in mine)
    ]
    return [*settings.docker_pools, *routes]


def _scope(ctx: RequestContext) -> str:
    return f"{ctx.account_id}/{ctx.region}/"


def vpc_key(ctx: RequestContext, vpc_id: str) -> str:
    return f"/ec2/vpcs/{_scope(ctx)}{vpc_id}"


def subnet_key(ctx: RequestContext, subnet_id: str) -> str:
    return addresses.subnet_key(ctx.account_id, ctx.region, subnet_id)


def group_key(ctx: RequestContext, group_id: str) -> str:
    return f"/ec2/groups/{_scope(ctx)}{group_id}"


def group_name_key(ctx: RequestContext, vpc_id: str, name: str) -> str:
    return f"/ec2/group-names/{_scope(ctx)}{vpc_id}/{name}"


def eni_prefix(ctx: RequestContext, subnet_id: str = "") -> str:
    return addresses.eni_prefix(ctx.account_id, ctx.region, subnet_id)


def eni_key(ctx: RequestContext, subnet_id: str, address: str) -> str:
    return addresses.eni_key(ctx.account_id, ctx.region, subnet_id, address)


def prefix(kind: str, ctx: RequestContext) -> str:
    return f"/ec2/{kind}/{_scope(ctx)}"


def short_id(kind: str, *parts: str) -> str:
    return f"{kind}-" + hashlib.sha256("/".join(parts).encode()).hexdigest()[:17]


async def _list(env: Env, key_prefix: str, parse: Callable[[Mapping[str, Any]], T]) -> list[T]:
    result = await env.store.list(key_prefix)
    return [parse(orjson.loads(kv.value)) for kv in result.kvs]


async def ensure_defaults(env: Env, ctx: RequestContext) -> None:
    marker = f"/ec2/defaults/{ctx.account_id}/{ctx.region}"
    if await env.store.get(marker) is not None:
        return
    s = settings_of(env.extras)
    vpc = Vpc(short_id("vpc", ctx.account_id, ctx.region), s.default_vpc_cidr, ctx.account_id, True)
    subnet = Subnet(
        short_id("subnet", ctx.account_id, ctx.region),
        vpc.id,
        s.default_subnet_cidr,
        ctx.region + "a",
        ctx.account_id,
        True,
    )
    group = SecurityGroup(
        short_id("sg", ctx.account_id, ctx.region),
        DEFAULT_GROUP_NAME,
        "default VPC security group",
        vpc.id,
        ctx.account_id,
    )
    group = SecurityGroup(
        group.id,
        group.name,
        group.description,
        group.vpc_id,
        group.owner,
        (Rule("-1", 0, 65535, group_id=group.id),),
    )
    with contextlib.suppress(Conflict):  # another request made them
        await env.store.txn(
            [Compare.absent(marker)],
            [
                Put(marker, b"{}"),
                Put(vpc_key(ctx, vpc.id), orjson.dumps(vpc.to_doc())),
                Put(subnet_key(ctx, subnet.id), orjson.dumps(subnet.to_doc())),
                Put(group_key(ctx, group.id), orjson.dumps(group.to_doc())),
                Put(group_name_key(ctx, vpc.id, group.name), group.id.encode()),
            ],
        )


async def vpcs(env: Env, ctx: RequestContext) -> list[Vpc]:
    await ensure_defaults(env, ctx)
    return await _list(env, prefix("vpcs", ctx), Vpc.from_doc)


async def subnets(env: Env, ctx: RequestContext) -> list[Subnet]:
    await ensure_defaults(env, ctx)
    return await _list(env, prefix("subnets", ctx), Subnet.from_doc)


async def groups(env: Env, ctx: RequestContext) -> list[SecurityGroup]:
    await ensure_defaults(env, ctx)
    return await _list(env, prefix("groups", ctx), SecurityGroup.from_doc)


async def interfaces(env: Env, ctx: RequestContext) -> list[NetworkInterface]:
    return await _list(env, eni_prefix(ctx), NetworkInterface.from_doc)


async def vpc(env: Env, ctx: RequestContext, vpc_id: str) -> Vpc:
    await ensure_defaults(env, ctx)
    kv = await env.store.get(vpc_key(ctx, vpc_id))
    if kv is None:
        raise InvalidVpcIdNotFound(f"The vpc ID '{vpc_id}' does not exist")
    return Vpc.from_doc(orjson.loads(kv.value))


async def subnet(env: Env, ctx: RequestContext, subnet_id: str) -> Subnet:
    await ensure_defaults(env, ctx)
    kv = await env.store.get(subnet_key(ctx, subnet_id))
    if kv is None:
        raise InvalidSubnetIdNotFound(f"The subnet ID '{subnet_id}' does not exist")
    return Subnet.from_doc(orjson.loads(kv.value))


async def default_subnet(env: Env, ctx: RequestContext) -> Subnet:
    return next(s for s in await subnets(env, ctx) if s.default_for_az)


async def group(env: Env, ctx: RequestContext, group_id: str) -> tuple[SecurityGroup, int]:
    """The group and its mod revision (for compare-and-swap)."""
    await ensure_defaults(env, ctx)
    kv = await env.store.get(group_key(ctx, group_id))
    if kv is None:
        raise InvalidGroupNotFound(f"The security group '{group_id}' does not exist")
    return SecurityGroup.from_doc(orjson.loads(kv.value)), kv.mod_revision


async def default_group(env: Env, ctx: RequestContext, vpc_id: str) -> SecurityGroup:
    kv = await env.store.get(group_name_key(ctx, vpc_id, DEFAULT_GROUP_NAME))
    if kv is None:
        raise InvalidGroupNotFound(f"VPC {vpc_id} has no default security group")
    return (await group(env, ctx, kv.value.decode()))[0]
