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
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import orjson

from dockyard.domain.ec2 import (
    DEFAULT_GROUP_NAME,
    Ec2Error,
    InvalidGroupNotFound,
    InvalidSubnetIdNotFound,
    InvalidVpcIdNotFound,
    NetworkInterface,
    Rule,
    SecurityGroup,
    Subnet,
    Vpc,
    check_subnet_range,
    check_vpc_range,
)
from dockyard.domain.task_eni import LABEL_SUBNET
from dockyard.placement import addresses
from dockyard.services.context import Env, RequestContext
from dockyard.store.base import Compare, Conflict, Put

log = logging.getLogger("dockyard.ec2")

EXTRAS_KEY = "ec2"
T = TypeVar("T")


# Docker's own default address pools (libnetwork's, Docker 20.10) when its daemon config sets none.
DOCKER_DEFAULT_POOLS = (
    "172.17.0.0/16",
    "172.18.0.0/15",
    "172.20.0.0/14",
    "172.24.0.0/13",
    "192.168.0.0/16",
)


@dataclass(frozen=True)
class Ec2Settings:
    # The default VPC and subnet of every region (``dockyard server --default-vpc-cidr`` and
    # ``--default-subnet-cidr``). Both must stay clear of Docker's address pools and of the host's
    # routes: ``check_defaults`` refuses the server's start otherwise.
    default_vpc_cidr: str = "10.213.0.0/16"
    default_subnet_cidr: str = "10.213.0.0/20"
    docker_pools: tuple[str, ...] = DOCKER_DEFAULT_POOLS
    route_table: str = "/proc/net/route"
    # where ``default-address-pools`` are read from (the pools above when it names none)
    docker_config: str = "/etc/docker/daemon.json"


class DefaultRangeError(Exception):
    """The configured default VPC or subnet cannot be used (the server refuses to start)."""


def settings_of(extras: Mapping[str, object]) -> Ec2Settings:
    found = extras.get(EXTRAS_KEY)
    return found if isinstance(found, Ec2Settings) else Ec2Settings()


@dataclass(frozen=True)
class Route:
    cidr: str
    device: str


def parse_routes(text: str) -> list[Route]:
    """The IPv4 routes of a kernel route table (``/proc/net/route``), the default route excluded."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
            mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        except ValueError:
            continue
        if net.prefixlen > 0:
            out.append(Route(str(net), fields[0]))
    return out


def read_routes(path: str) -> list[Route]:
    try:
        with open(path) as f:
            return parse_routes(f.read())
    except OSError:
        return []


def host_routes(path: str) -> list[str]:
    """The IPv4 routes of this machine (default route excluded), from the kernel's route table."""
    return [r.cidr for r in read_routes(path)]


def pools_of_config(doc: object) -> tuple[str, ...] | None:
    """``default-address-pools`` of a dockerd config document (``daemon.json``): their bases, or
    None when it sets none (Docker then uses ``DOCKER_DEFAULT_POOLS``)."""
    pools = doc.get("default-address-pools") if isinstance(doc, Mapping) else None
    if not isinstance(pools, list) or not pools:
        return None
    out = []
    for p in pools:
        base = p.get("base") if isinstance(p, Mapping) else None
        with contextlib.suppress(ValueError, TypeError):
            out.append(str(ipaddress.ip_network(str(base), strict=False)))
    return tuple(out) or None


def docker_pools(settings: Ec2Settings) -> tuple[str, ...]:
    """Docker's address pools as its daemon config file sets them, else ``settings.docker_pools``.

    Only the config file is read: pools given on dockerd's command line (``--default-address-pool``)
    or in a config file elsewhere (``--config-file``) are not seen, nor is a remote engine's."""
    try:
        with open(settings.docker_config, "rb") as f:
            return pools_of_config(orjson.loads(f.read())) or settings.docker_pools
    except (OSError, orjson.JSONDecodeError):
        return settings.docker_pools


def forbidden_ranges(settings: Ec2Settings, ours: Iterable[str]) -> list[str]:
    """Docker's pools and the host's routes, less the routes of our own subnet networks."""
    mine = [ipaddress.IPv4Network(c) for c in ours]
    routes = [
        r
        for r in host_routes(settings.route_table)
        if not any(ipaddress.IPv4Network(r).subnet_of(m) for m in mine)
    ]
    return [*settings.docker_pools, *routes]


def default_forbidden(settings: Ec2Settings, ours: Iterable[str], own_devices: Iterable[str]) -> list[str]:
    """What the default VPC and subnet must not overlap: Docker's pools and the host's routes, less
    the routes inside VPCs already stored (``ours``, as for CreateVpc) and the routes of the default
    subnet's own Docker network (``own_devices``: its bridge, made by agents on this host for this
    or an earlier server)."""
    mine = [ipaddress.IPv4Network(c) for c in ours]
    skip = set(own_devices)
    routes = [
        r.cidr
        for r in read_routes(settings.route_table)
        if r.device not in skip and not any(ipaddress.IPv4Network(r.cidr).subnet_of(m) for m in mine)
    ]
    return [*settings.docker_pools, *routes]


def check_default_ranges(settings: Ec2Settings, forbidden: Iterable[str]) -> None:
    """The default VPC and subnet, checked as CreateVpc and CreateSubnet check theirs (and the
    subnet inside the VPC); raises ``DefaultRangeError`` naming the flag."""
    forbidden = list(forbidden)
    try:
        check_vpc_range(settings.default_vpc_cidr, forbidden)
    except Ec2Error as e:
        raise DefaultRangeError(f"--default-vpc-cidr {settings.default_vpc_cidr}: {e.message}") from e
    try:
        check_subnet_range(settings.default_subnet_cidr, settings.default_vpc_cidr, (), forbidden)
    except Ec2Error as e:
        raise DefaultRangeError(f"--default-subnet-cidr {settings.default_subnet_cidr}: {e.message}") from e


async def _default_subnet_bridges(subnet_ids: Iterable[str], cidr: str) -> list[str]:
    """The bridges of the default subnet's Docker networks on this host that carry ``cidr`` (none
    when Docker does not answer: then no agent made them here either)."""
    import asyncio

    import aiodocker

    wanted = set(subnet_ids)
    out = []
    try:
        async with aiodocker.Docker() as docker:
            found = await asyncio.wait_for(
                docker.networks.list(filters={"label": [LABEL_SUBNET]}), timeout=5.0
            )
    except Exception as e:  # no engine here, or not ours to ask
        log.debug("Docker's networks could not be listed: %s", e)
        return []
    for net in found:
        labels = net.get("Labels") or {}
        configs = (net.get("IPAM") or {}).get("Config") or []
        if labels.get(LABEL_SUBNET) not in wanted or not any(c.get("Subnet") == cidr for c in configs):
            continue
        options = net.get("Options") or {}
        out.append(str(options.get("com.docker.network.bridge.name") or "br-" + str(net.get("Id"))[:12]))
    return out


async def check_defaults(env: Env, settings: Ec2Settings, account_id: str, region: str) -> Ec2Settings:
    """At the server's start: Docker's pools read, the default ranges checked (``DefaultRangeError``
    when they overlap Docker's pools or the host's routes); the settings to run with."""
    settings = replace(settings, docker_pools=docker_pools(settings))
    stored = [Vpc.from_doc(orjson.loads(kv.value)) for kv in (await env.store.list("/ec2/vpcs/")).kvs]
    own = await _default_subnet_bridges(
        [short_id("subnet", account_id, region)], settings.default_subnet_cidr
    )
    check_default_ranges(settings, default_forbidden(settings, [v.cidr for v in stored], own))
    made = [v for v in stored if v.is_default and v.cidr != settings.default_vpc_cidr]
    if made:
        log.warning(
            "the default VPC of %d region(s) was made earlier with %s: --default-vpc-cidr applies to "
            "regions whose defaults are made from now on",
            len(made),
            made[0].cidr,
        )
    return settings


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
