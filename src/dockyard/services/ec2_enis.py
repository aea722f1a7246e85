"""Task network interfaces: awsvpc configuration checks, address allocation (the server assigns, so
DescribeTasks shows the address), the interfaces in use, and the rules an agent enforces.

An interface is the create-only claim of its address (``/ec2/enis/.../<subnet>/<address>``), put in
the same transaction that creates its task. It lives as long as the task: a claim whose task is
STOPPED or gone is reaped (compare-and-delete) by whoever reads the claims next.

``DockyardAgentV1.NetworkRules`` (docs/agent-protocol.md) gives an agent the ingress rules of the
groups its tasks use, source groups resolved to the addresses of their members: tasks' interfaces
and load balancers (each reaches targets from its own address). It answers from memory
(``ec2_membership``): agents ask 4 times a second.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from dockyard.domain.ec2 import (
    ALL_PROTOCOLS,
    InvalidGroupNotFound,
    InvalidParameterValue,
    NetworkInterface,
    SecurityGroup,
    Subnet,
)
from dockyard.domain.errors import InvalidParameter
from dockyard.lb import keys as lb_keys
from dockyard.placement import addresses
from dockyard.placement.addresses import Planned
from dockyard.services import ec2_store as store
from dockyard.services.cluster_state import cluster_cache
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.ec2_membership import membership
from dockyard.services.operations import operation

MAX_GROUPS = 5
MAX_SUBNETS = 16


@dataclass(frozen=True)
class AwsvpcChoice:
    subnets: tuple[Subnet, ...]
    groups: tuple[str, ...]


async def check_awsvpc(
    env: Env, ctx: RequestContext, network_configuration: Mapping[str, Any] | None, *, launch_type: str
) -> AwsvpcChoice:
    """``networkConfiguration.awsvpcConfiguration`` checked (ECS's messages); defaults filled in."""
    cfg = (network_configuration or {}).get("awsvpcConfiguration")
    if cfg is None:
        raise InvalidParameter(
            "Network Configuration must be provided when networkMode 'awsvpc' is specified."
        )
    if launch_type == "EC2" and cfg.get("assignPublicIp", "DISABLED") != "DISABLED":
        raise InvalidParameter("Assign public IP is not supported for this launch type.")
    subnet_ids = list(cfg.get("subnets") or ())
    if not subnet_ids:
        raise InvalidParameter("subnets can not be empty.")
    if len(subnet_ids) > MAX_SUBNETS or len(cfg.get("securityGroups") or ()) > MAX_GROUPS:
        raise InvalidParameter(f"At most {MAX_SUBNETS} subnets and {MAX_GROUPS} security groups are allowed.")
    subnets = []
    for sid in subnet_ids:
        try:
            subnets.append(await store.subnet(env, ctx, sid))
        except Exception:
            raise InvalidParameter(
                f"Error retrieving subnet information for [{sid}]: subnet not found"
            ) from None
    vpcs = {s.vpc_id for s in subnets}
    if len(vpcs) > 1:
        raise InvalidParameter("Subnets must all belong to the same VPC.")
    vpc_id = next(iter(vpcs))
    group_ids = list(cfg.get("securityGroups") or ())
    if not group_ids:
        group_ids = [(await store.default_group(env, ctx, vpc_id)).id]
    for gid in group_ids:
        try:
            found, _ = await store.group(env, ctx, gid)
        except InvalidGroupNotFound:
            raise InvalidParameter(
                f"Error retrieving security group information for [{gid}]: not found"
            ) from None
        if found.vpc_id != vpc_id:
            raise InvalidParameter(f"Security group {gid} and the subnets are not in the same VPC.")
    return AwsvpcChoice(tuple(subnets), tuple(dict.fromkeys(group_ids)))


async def plan_addresses(
    env: Env, ctx: RequestContext, choice: AwsvpcChoice, count: int, rng: random.Random
) -> Planned:
    return await addresses.plan_addresses(
        env.store, ctx.account_id, ctx.region, choice.subnets, choice.groups, count, rng
    )


async def live_interfaces(env: Env, ctx: RequestContext, subnet_id: str = "") -> list[NetworkInterface]:
    """Interfaces whose task has not stopped (``placement.addresses.live_interfaces``)."""
    return await addresses.live_interfaces(env.store, ctx.account_id, ctx.region, subnet_id)


def resolve(group: SecurityGroup, group_members: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """A group's ingress rules with each source as CIDRs (a source group: its members' /32s)."""
    rules = []
    for r in group.ingress:
        sources = [r.cidr] if r.cidr else [f"{a}/32" for a in group_members.get(r.group_id or "", ())]
        if sources:
            rules.append(
                {
                    "protocol": r.protocol,
                    "fromPort": r.from_port,
                    "toPort": r.to_port,
                    "sources": sorted(set(sources)),
                }
            )
    return rules


async def group_users(env: Env, ctx: RequestContext, group_id: str) -> list[str]:
    """What keeps ``group_id`` in use: interfaces, load balancers, other groups' source rules."""
    used = [e.id for e in await live_interfaces(env, ctx) if group_id in e.groups]
    lbs = await env.store.list(lb_keys.load_balancers_prefix(ctx.account_id, ctx.region))
    used += [
        orjson.loads(kv.value)["name"]
        for kv in lbs.kvs
        if group_id in (orjson.loads(kv.value).get("securityGroups") or ())
    ]
    for g in await store.groups(env, ctx):
        if g.id != group_id and any(r.group_id == group_id for r in g.ingress):
            used.append(g.id)
    return used


@operation("DockyardAgentV1.NetworkRules")
async def network_rules(env: Env, ctx: RequestContext, req: Request) -> Response:
    """The resolved ingress rules of ``securityGroups`` (an agent asks for its tasks' groups), from
    the watch-fed membership cache (``ec2_membership``) and the cluster cache: no store read."""
    wanted = req.get("securityGroups")
    if not isinstance(wanted, list) or not all(isinstance(g, str) for g in wanted) or len(wanted) > 256:
        raise InvalidParameter("securityGroups must be a list of at most 256 group ids.")
    cache = await membership(env)
    group_members = cache.members(ctx.account_id, ctx.region, await cluster_cache(env, sync=False))
    out: dict[str, Any] = {}
    for gid in dict.fromkeys(wanted):
        found = cache.group(ctx.account_id, ctx.region, gid)
        out[gid] = resolve(found, group_members) if found is not None else []
    return {"revision": cache.applied_revision, "groups": out}


def protocol_ok(protocol: str) -> str:
    if protocol not in ("tcp", "udp", "icmp", ALL_PROTOCOLS):
        raise InvalidParameterValue(f"Unknown protocol {protocol}")
    return protocol
