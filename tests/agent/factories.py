"""Builders for agent tests: container and task states from short descriptions."""

from __future__ import annotations

from typing import Any

from dockyard.agent.task_spec import runtime_name
from dockyard.agent.task_state import ContainerPhase, ContainerState, TaskState
from dockyard.domain.task_definitions import ContainerDefinition, TaskDefinition
from dockyard.domain.task_status import HealthStatus, TaskStatus

TASK_ARN = "arn:aws:ecs:us-east-1:000000000000:task/c/0123456789abcdef"


def container(
    name: str,
    known: ContainerPhase = ContainerPhase.NONE,
    *,
    essential: bool = True,
    depends_on: dict[str, str] | None = None,
    volumes_from: list[str] | None = None,
    links: list[str] | None = None,
    health_check: bool = False,
    health: HealthStatus = HealthStatus.UNKNOWN,
    exit_code: int | None = None,
    started: bool | None = None,
    runtime_id: str | None = None,
    **wire: Any,
) -> ContainerState:
    d: dict[str, Any] = {"name": name, "image": "dockyard/busybox:latest", "essential": essential, **wire}
    if depends_on:
        d["dependsOn"] = [{"containerName": k, "condition": v} for k, v in depends_on.items()]
    if volumes_from:
        d["volumesFrom"] = [{"sourceContainer": s} for s in volumes_from]
    if links:
        d["links"] = links
    if health_check:
        d["healthCheck"] = {"command": ["CMD-SHELL", "true"]}
    c = ContainerState(
        name=name, definition=ContainerDefinition.from_wire(d), runtime_name=runtime_name("t", name)
    )
    c.known = known
    c.health = health
    c.exit_code = exit_code
    c.started = started if started is not None else known >= ContainerPhase.RUNNING
    c.runtime_id = (
        runtime_id if runtime_id is not None else (f"id-{name}" if known >= ContainerPhase.CREATED else None)
    )
    return c


def task(*containers: ContainerState, desired: TaskStatus = TaskStatus.RUNNING, **kw: Any) -> TaskState:
    definition = TaskDefinition(
        family="fam", revision=1, container_definitions=tuple(c.definition for c in containers)
    )
    return TaskState(
        arn=TASK_ARN,
        cluster_arn="arn:aws:ecs:us-east-1:000000000000:cluster/c",
        definition=definition,
        containers={c.name: c for c in containers},
        desired=desired,
        **kw,
    )


def by_name(*containers: ContainerState) -> dict[str, ContainerState]:
    return {c.name: c for c in containers}
