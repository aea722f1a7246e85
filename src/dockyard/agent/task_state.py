"""What the agent knows about one task: its containers' known statuses, set only by its runner.

Container statuses are finer than what the agent reports (``ContainerStatus``)::

    NONE -> PULLED -> CREATED -> RUNNING -> STOPPED          reported: PENDING ... RUNNING, STOPPED

Every status only moves forward (``ContainerState.observe``). The desired status belongs to the
task (``TaskState.desired``): RUNNING or STOPPED.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from dockyard.domain.task_definitions import ContainerDefinition, TaskDefinition
from dockyard.domain.task_status import ContainerStatus, HealthStatus, TaskStatus


class ContainerPhase(IntEnum):
    NONE = 0
    PULLED = 10
    CREATED = 20
    RUNNING = 30
    STOPPED = 40

    def __str__(self) -> str:
        return self.name

    @property
    def reported(self) -> ContainerStatus:
        if self is ContainerPhase.RUNNING:
            return ContainerStatus.RUNNING
        if self is ContainerPhase.STOPPED:
            return ContainerStatus.STOPPED
        return ContainerStatus.PENDING


@dataclass
class ContainerState:
    name: str
    definition: ContainerDefinition
    runtime_name: str  # fixed before creation: a crash between create and checkpoint is recoverable
    known: ContainerPhase = ContainerPhase.NONE
    runtime_id: str | None = None
    started: bool = False  # reached RUNNING at least once
    exit_code: int | None = None
    reason: str | None = None
    health: HealthStatus = HealthStatus.UNKNOWN
    network_bindings: list[dict[str, Any]] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def has_health_check(self) -> bool:
        return self.definition.health_check is not None and bool(self.definition.health_check.command)

    def observe(self, phase: ContainerPhase) -> bool:
        """Move forward to ``phase``; False (and no change) when that would move backwards."""
        if phase <= self.known:
            return False
        self.known = phase
        if phase is ContainerPhase.RUNNING:
            self.started = True
        return True


@dataclass
class TaskState:
    arn: str
    cluster_arn: str
    definition: TaskDefinition
    containers: dict[str, ContainerState]
    desired: TaskStatus = TaskStatus.RUNNING
    known: TaskStatus = TaskStatus.PENDING
    cpu: int | None = None  # task-level CPU units after overrides
    memory: int | None = None  # task-level MiB after overrides
    overrides: dict[str, Any] = field(default_factory=dict)
    stop_code: str | None = None
    stopped_reason: str | None = None
    pull_started_at: float | None = None
    pull_stopped_at: float | None = None
    started_at: float | None = None
    execution_stopped_at: float | None = None
    health: HealthStatus = HealthStatus.UNKNOWN
    seq: int = 0  # the last report sequence number used
    wire: dict[str, Any] = field(default_factory=dict)  # the AgentTask, its taskDefinition embedded

    @property
    def task_id(self) -> str:
        return self.arn.rsplit("/", 1)[-1]

    def request_stop(self, stop_code: str | None, reason: str | None) -> bool:
        """Desire STOPPED; the first stop code and reason win. False if already desired STOPPED."""
        if self.desired is TaskStatus.STOPPED:
            return False
        self.desired = TaskStatus.STOPPED
        if self.stop_code is None:
            self.stop_code = stop_code
        if self.stopped_reason is None:
            self.stopped_reason = reason
        return True
