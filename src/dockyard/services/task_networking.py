"""The awsvpc part of RunTask / StartTask (and CreateService): the request's
``networkConfiguration.awsvpcConfiguration`` checked, then one address per task chosen by the server
and claimed in the tasks' own transaction (``placement.addresses``), so DescribeTasks shows it from
the start."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from dockyard.domain.errors import InvalidParameter
from dockyard.domain.task_definitions import NetworkMode, TaskDefinition
from dockyard.domain.tasks import EC2
from dockyard.placement.addresses import Interfaces
from dockyard.placement.keys import Scope
from dockyard.services.context import Env, Request, RequestContext
from dockyard.services.ec2_enis import AwsvpcChoice, check_awsvpc, plan_addresses

__all__ = ["AwsvpcChoice", "Interfaces", "awsvpc_of", "plan_for", "service_network"]

NOT_FOR_MODE = "Network Configuration is not valid for the given networkMode of this task definition."


async def awsvpc_of(env: Env, ctx: RequestContext, td: TaskDefinition, req: Request) -> AwsvpcChoice | None:
    """The checked awsvpc configuration when ``td`` uses awsvpc; None otherwise."""
    if td.effective_network_mode is not NetworkMode.AWSVPC:
        if req.get("networkConfiguration"):
            raise InvalidParameter(NOT_FOR_MODE)
        return None
    return await check_awsvpc(
        env, ctx, req.get("networkConfiguration"), launch_type=req.get("launchType") or EC2
    )


def configuration_wire(choice: AwsvpcChoice, assign_public_ip: str = "DISABLED") -> dict[str, Any]:
    """``networkConfiguration`` as DescribeServices shows it (and the controller reads it)."""
    return {
        "awsvpcConfiguration": {
            "subnets": [s.id for s in choice.subnets],
            "securityGroups": list(choice.groups),
            "assignPublicIp": assign_public_ip,
        }
    }


async def service_network(
    env: Env, ctx: RequestContext, td: TaskDefinition, network_configuration: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """A service's ``networkConfiguration`` for ``td``, checked as RunTask checks it (EC2 launch
    type) and normalised (the VPC's default group filled in); None when ``td`` is not awsvpc."""
    req = {"networkConfiguration": network_configuration, "launchType": EC2}
    choice = await awsvpc_of(env, ctx, td, req)
    return configuration_wire(choice) if choice is not None else None


async def plan_for(
    env: Env,
    ctx: RequestContext,
    scope: Scope,
    choice: AwsvpcChoice | None,
    task_ids: Sequence[str],
    rng: random.Random,
) -> Interfaces | None:
    if choice is None:
        return None
    planned = await plan_addresses(env, ctx, choice, len(task_ids), rng)
    return Interfaces(scope, planned, tuple(task_ids))
