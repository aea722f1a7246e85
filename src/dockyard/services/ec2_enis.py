"""Task network interfaces: awsvpc configuration checks, address allocation (the server assigns, so
DescribeTasks shows the address), the interfaces in use, and the rules an agent enforces.

An interface is the create-only claim of its address (``/ec2/enis/.../<subnet>/<address>``), put in
the same transaction that creates its task. It lives as long as the task: a claim whose task is
STOPPED or gone is reaped (compare-and-delete) by whoever reads the claims next.

``DockyardAgentV1.NetworkRules`` (docs/agent-protocol.md) gives an agent the ingress rules of the
groups its tasks use, source groups resolved to the addresses of their members: tasks' interfaces
and load balancers (each reaches targets from its own address).
"""

from __future__ import annotations

import contextlib
import random
import uuid
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
    mac_address,
    pick_addresses,
)
from dockyard.domain.errors import InvalidParameter
from dockyard.lb import keys as lb_keys
from dockyard.services import ec2_store as store
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.operations import operation
from dockyard.store.base import Compare, Conflict, Delete, Put

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


@dataclass(frozen=True)
class Planned:
    """Addresses chosen for the tasks of one request, claimed in the tasks' own transaction."""

    subnet: Subnet
    addresses: tuple[str, ...]
    groups: tuple[str, ...]

    def guards(self, ctx: RequestContext) -> list[Compare]:
        return [Compare.absent(store.eni_key(ctx, self.subnet.id, a)) for a in self.addresses]

    def interface(
        self, ctx: RequestContext, index: int, task_arn: str, task_key: str, instance_arn: str
    ) -> NetworkInterface:
        address = self.addresses[index]
        return NetworkInterface(
            id="eni-" + uuid.uuid5(uuid.NAMESPACE_URL, task_arn).hex[:17],
            subnet_id=self.subnet.id,
            vpc_id=self.subnet.vpc_id,
            address=address,
            mac=mac_address(address),
            groups=self.groups,
            task_arn=task_arn,
            task_key=task_key,
            instance_arn=instance_arn,
            zone=self.subnet.zone,
            owner=ctx.account_id,
        )

    def put(self, ctx: RequestContext, eni: NetworkInterface) -> Put:
        return Put(store.eni_key(ctx, eni.subnet_id, eni.address), orjson.dumps(eni.to_doc()))


async def plan_addresses(
    env: Env, ctx: RequestContext, choice: AwsvpcChoice, count: int, rng: random.Random
) -> Planned:
    subnet = rng.choice(choice.subnets)
    taken = [e.address for e in await live_interfaces(env, ctx, subnet.id)]
    return Planned(subnet, tuple(pick_addresses(subnet.cidr, taken, count, rng)), choice.groups)


async def live_interfaces(env: Env, ctx: RequestContext, subnet_id: str = "") -> list[NetworkInterface]:
    """Interfaces whose task has not stopped; the claims of stopped or vanished tasks are reaped."""
    result = await env.store.list(store.eni_prefix(ctx, subnet_id))
    live = []
    for kv in result.kvs:
        eni = NetworkInterface.from_doc(orjson.loads(kv.value))
        task = await env.store.get(eni.task_key)
        # a load balancer's interface lives as long as its document (which has no lastStatus)
        status = orjson.loads(task.value).get("lastStatus", "ACTIVE") if task is not None else None
        if status is None or status == "STOPPED":
            with contextlib.suppress(Conflict):
                await env.store.txn([Compare.mod_revision(kv.key, kv.mod_revision)], [], [Delete(kv.key)])
            continue
        live.append(eni)
    return live


async def members(env: Env, ctx: RequestContext) -> dict[str, list[str]]:
    """Each group's member addresses: task interfaces and load balancers."""
    out: dict[str, list[str]] = {}
    for eni in await live_interfaces(env, ctx):
        for g in eni.groups:
            out.setdefault(g, []).append(eni.address)
    lbs = await env.store.list(lb_keys.load_balancers_prefix(ctx.account_id, ctx.region))
    for kv in lbs.kvs:
        doc = orjson.loads(kv.value)
        for g in doc.get("securityGroups") or ():
            out.setdefault(g, []).append(str(doc.get("address")))
    return out


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
    """The resolved ingress rules of ``securityGroups`` (an agent asks for its tasks' groups)."""
    wanted = req.get("securityGroups")
    if not isinstance(wanted, list) or not all(isinstance(g, str) for g in wanted) or len(wanted) > 256:
        raise InvalidParameter("securityGroups must be a list of at most 256 group ids.")
    group_members = await members(env, ctx)
    out: dict[str, Any] = {}
    for gid in dict.fromkeys(wanted):
        try:
            found, _ = await store.group(env, ctx, gid)
        except InvalidGroupNotFound:
            out[gid] = []
            continue
        out[gid] = resolve(found, group_members)
    return {"revision": await env.store.revision(), "groups": out}


def protocol_ok(protocol: str) -> str:
    if protocol not in ("tcp", "udp", "icmp", ALL_PROTOCOLS):
        raise InvalidParameterValue(f"Unknown protocol {protocol}")
    return protocol
