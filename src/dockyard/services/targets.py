"""ELBv2 targets: RegisterTargets, DeregisterTargets, DescribeTargetHealth (over ``lb.registrations``).

Targets of type ``instance`` name a container instance by its ``ec2InstanceId``; traffic goes to
that instance's address (its ``privateIp``; an agent on this machine registers 127.0.0.1). Targets
of type ``ip`` are the address itself.
"""

from __future__ import annotations

from typing import Any

import orjson

from dockyard.domain.container_instances import ContainerInstance, InstanceStatus
from dockyard.domain.elb_errors import InvalidTarget
from dockyard.domain.target_groups import INSTANCE, TRAFFIC_PORT, TargetGroup, check_target
from dockyard.lb import records, registrations
from dockyard.lb.ecs import instance_address
from dockyard.lb.registrations import Target
from dockyard.services import keys
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.elb_registry import elb_operation


async def instance_addresses(env: Env, account: str, region: str) -> dict[str, str]:
    """ec2InstanceId -> address of the ACTIVE or DRAINING container instances of account/region."""
    prefix = f"{keys.kind_prefix(keys.INSTANCES)}{account}/{region}/"
    out: dict[str, str] = {}
    for kv in await records.list_all(env.store, prefix):
        instance = ContainerInstance.from_document(orjson.loads(kv.value))
        if instance.status is not InstanceStatus.INACTIVE:
            out[instance.ec2_instance_id] = instance_address(instance)
    return out


def _targets(tg: TargetGroup, wire: list[dict[str, Any]]) -> list[Target]:
    out = []
    for t in wire:
        check_target(tg.target_type, t["Id"])
        out.append(Target(id=t["Id"], port=t.get("Port"), availability_zone=t.get("AvailabilityZone")))
    return out


@elb_operation("RegisterTargets")
async def register_targets(env: Env, ctx: RequestContext, req: Request) -> Response:
    tg, _ = await records.target_group(env.store, req["TargetGroupArn"])
    targets = _targets(tg, req["Targets"])
    if tg.target_type == INSTANCE:
        addresses = await instance_addresses(env, ctx.account_id, ctx.region)
        unknown = [t.id for t in targets if t.id not in addresses]
        if unknown:
            raise InvalidTarget(
                f"The following targets are not valid instances (no registered container instance has "
                f"this ec2InstanceId): {', '.join(unknown)}"
            )
        targets = [Target(t.id, t.port, addresses[t.id], t.availability_zone) for t in targets]
    await registrations.register(env.store, env.clock, tg.arn, targets)
    return {}


@elb_operation("DeregisterTargets")
async def deregister_targets(env: Env, ctx: RequestContext, req: Request) -> Response:
    tg, _ = await records.target_group(env.store, req["TargetGroupArn"])
    await registrations.deregister(env.store, env.clock, tg.arn, _targets(tg, req["Targets"]))
    return {}


@elb_operation("DescribeTargetHealth")
async def describe_target_health(env: Env, ctx: RequestContext, req: Request) -> Response:
    tg, _ = await records.target_group(env.store, req["TargetGroupArn"])
    asked = _targets(tg, req["Targets"]) if req.get("Targets") else None
    rows = await registrations.health(env.store, env.clock, tg.arn, asked)
    out = []
    for registration, target, health in rows:
        port = registration.port if registration else (target.port or tg.port)
        wire_target: dict[str, Any] = (
            registration.target_wire() if registration else {"Id": target.id, "Port": port}
        )
        hc_port = str(port) if tg.health_check.port == TRAFFIC_PORT else tg.health_check.port
        out.append({"Target": wire_target, "HealthCheckPort": hc_port, "TargetHealth": health.to_wire()})
    return {"TargetHealthDescriptions": out}
