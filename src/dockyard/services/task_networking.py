"""The awsvpc part of RunTask / StartTask (and CreateService): the request's
``networkConfiguration.awsvpcConfiguration`` checked, then one address per task chosen by the server
and claimed in the tasks' own transaction, so DescribeTasks shows it from the start."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from dockyard.domain.errors import InvalidParameter
from dockyard.domain.task_definitions import NetworkMode, TaskDefinition
from dockyard.domain.task_eni import eni_document
from dockyard.domain.tasks import EC2, Task
from dockyard.placement.keys import Scope, task
from dockyard.scheduler import Placement
from dockyard.services.context import Env, Request, RequestContext
from dockyard.services.ec2_enis import AwsvpcChoice, Planned, check_awsvpc, plan_addresses
from dockyard.store.base import Compare, Put

__all__ = ["AwsvpcChoice", "awsvpc_of", "plan_for"]


async def awsvpc_of(env: Env, ctx: RequestContext, td: TaskDefinition, req: Request) -> AwsvpcChoice | None:
    """The checked awsvpc configuration when ``td`` uses awsvpc; None otherwise."""
    if td.effective_network_mode is not NetworkMode.AWSVPC:
        if req.get("networkConfiguration"):
            raise InvalidParameter(
                "Network Configuration is not valid for the given networkMode of this task definition."
            )
        return None
    return await check_awsvpc(
        env, ctx, req.get("networkConfiguration"), launch_type=req.get("launchType") or EC2
    )


@dataclass(frozen=True)
class Interfaces:
    ctx: RequestContext
    scope: Scope
    planned: Planned
    task_ids: tuple[str, ...]

    def attach(self, index: int, placement: Placement, t: Task) -> Task:
        eni = self.planned.interface(self.ctx, index, t.arn, task(self.scope, t.id), placement.instance_arn)
        return replace(t, eni=eni_document(eni, self.planned.subnet, self.ctx.region))

    def puts(self, tasks: Sequence[Task]) -> list[Put]:
        out = []
        for t in tasks:
            index = self.task_ids.index(t.id)
            eni = self.planned.interface(
                self.ctx, index, t.arn, task(self.scope, t.id), t.container_instance_arn
            )
            out.append(self.planned.put(self.ctx, eni))
        return out

    def guards(self) -> list[Compare]:
        return self.planned.guards(self.ctx)


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
    return Interfaces(ctx, scope, planned, tuple(task_ids))
