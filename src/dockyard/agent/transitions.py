"""PURE: the next step of each container, and what the task as a whole has become.

``next_step(container, desired, containers)`` answers, like amazon-ecs-agent's containerNextState,
with a ``Step``: (next status, action, reason, blocked on). The runner performs the action and the
observed result (a Docker event, an action's outcome) moves the known status; nothing here does I/O.

    desired RUNNING                                   desired STOPPED
    NONE    --PULL-->    PULLED                       NONE/PULLED/CREATED --(no action)--> STOPPED
    PULLED  --CREATE-->  CREATED  (after volumesFrom/links sources exist)
    CREATED --START-->   RUNNING  (after dependsOn conditions hold)
    RUNNING              steady                       RUNNING --STOP--> STOPPED (after dependents stop)
    a condition that can never hold: ABORT -> STOPPED (the container never starts)

Task level: ``stop_decision`` (an essential container stopped: the task must stop, and why),
``task_status`` (what the agent reports: PENDING, RUNNING, STOPPED, never backwards) and
``task_health`` (from the essential containers that have a health check).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from dockyard.agent.dependencies import create_blocker, start_blocker, stop_blocker
from dockyard.agent.task_state import ContainerPhase, ContainerState, TaskState
from dockyard.domain.task_status import HealthStatus, StopCode, TaskStatus

ESSENTIAL_EXITED = "Essential container in task exited"


class Action(StrEnum):
    NONE = "NONE"
    PULL = "PULL"
    CREATE = "CREATE"
    START = "START"
    STOP = "STOP"
    ABORT = "ABORT"  # the container can never start: mark it STOPPED with the reason


@dataclass(frozen=True)
class Step:
    next: ContainerPhase | None  # None: stay where it is
    action: Action
    reason: str = ""
    blocked_on: str | None = None


def next_step(
    container: ContainerState, desired: TaskStatus, containers: Mapping[str, ContainerState]
) -> Step:
    known = container.known
    if known is ContainerPhase.STOPPED:
        return Step(None, Action.NONE, "stopped")
    if desired is not TaskStatus.RUNNING:
        if known < ContainerPhase.RUNNING:
            return Step(ContainerPhase.STOPPED, Action.NONE, "task stopping before the container started")
        blocker = stop_blocker(container, containers)
        if blocker is not None:
            return Step(None, Action.NONE, blocker.reason, blocker.container)
        return Step(ContainerPhase.STOPPED, Action.STOP, "task stopping")
    if known is ContainerPhase.NONE:
        return Step(ContainerPhase.PULLED, Action.PULL, "image needed")
    if known is ContainerPhase.PULLED:
        blocker = create_blocker(container, containers)
        if blocker is not None:
            if blocker.never:
                return Step(ContainerPhase.STOPPED, Action.ABORT, blocker.reason, blocker.container)
            return Step(None, Action.NONE, blocker.reason, blocker.container)
        return Step(ContainerPhase.CREATED, Action.CREATE, "image ready")
    if known is ContainerPhase.CREATED:
        blocker = start_blocker(container, containers)
        if blocker is not None:
            if blocker.never:
                return Step(ContainerPhase.STOPPED, Action.ABORT, blocker.reason, blocker.container)
            return Step(None, Action.NONE, blocker.reason, blocker.container)
        return Step(ContainerPhase.RUNNING, Action.START, "dependencies met")
    return Step(None, Action.NONE, "running")


@dataclass(frozen=True)
class StopDecision:
    stop_code: str
    reason: str


def stop_decision(task: TaskState) -> StopDecision | None:
    """Why a task that should run must stop (an essential container stopped), or None."""
    if task.desired is not TaskStatus.RUNNING:
        return None
    for c in task.containers.values():
        if c.definition.essential and c.known is ContainerPhase.STOPPED:
            if not c.started:
                reason = c.reason or f"Essential container {c.name} failed to start"
                return StopDecision(StopCode.TASK_FAILED_TO_START, reason)
            return StopDecision(StopCode.ESSENTIAL_CONTAINER_EXITED, ESSENTIAL_EXITED)
    return None


def task_status(task: TaskState) -> TaskStatus:
    """The task status the agent reports, never behind what it reported before."""
    containers = list(task.containers.values())
    if all(c.known is ContainerPhase.STOPPED for c in containers):
        observed = TaskStatus.STOPPED
    elif task.desired is TaskStatus.RUNNING and all(
        c.known is ContainerPhase.RUNNING
        or (c.known is ContainerPhase.STOPPED and not c.definition.essential)
        for c in containers
    ):
        observed = TaskStatus.RUNNING
    else:
        observed = TaskStatus.PENDING
    return max(task.known, observed)


def task_health(containers: Iterable[ContainerState]) -> HealthStatus:
    """UNHEALTHY if an essential checked container is; HEALTHY if all of them are; else UNKNOWN."""
    checked = [c for c in containers if c.definition.essential and c.has_health_check]
    if not checked:
        return HealthStatus.UNKNOWN
    if any(c.health is HealthStatus.UNHEALTHY for c in checked):
        return HealthStatus.UNHEALTHY
    if all(c.health is HealthStatus.HEALTHY for c in checked):
        return HealthStatus.HEALTHY
    return HealthStatus.UNKNOWN
