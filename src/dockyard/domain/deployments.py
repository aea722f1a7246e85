"""Service deployments: one task definition rolled out to a service, and its rollout state.

A service has one PRIMARY deployment (what it converges to) and, while a rollout is under way,
ACTIVE ones (older revisions whose tasks drain). Each carries the task definition it runs, as a
copy taken when the deployment was made, so a deployment keeps running after its revision is
deregistered (as ECS allows) and the controller never reads task definitions from the store.

    rolloutState:  IN_PROGRESS -> COMPLETED            the primary's tasks are all healthy, old ones gone
                   IN_PROGRESS -> FAILED               the circuit breaker tripped
                   COMPLETED   -> IN_PROGRESS          a rollback made it PRIMARY again

A deployment's id is ECS's ``ecs-svc/<19 digits>``; its tasks carry it as ``startedBy``, which is how
the controller and DescribeServices tell which deployment a task belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from dockyard.domain.task_definitions import TaskDefinition

ID_PREFIX = "ecs-svc/"
EC2 = "EC2"

# the circuit breaker's failure threshold: 0.5 x desiredCount, clamped to 3..200 (ECS's bounds)
THRESHOLD_MIN = 3
THRESHOLD_MAX = 200


class DeploymentStatus(StrEnum):
    PRIMARY = "PRIMARY"
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


class RolloutState(StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


def deployment_id(number: int) -> str:
    """``ecs-svc/`` and 19 digits, from a number the caller drew (0 <= number < 10**19)."""
    return f"{ID_PREFIX}{number % 10**19:019d}"


def failure_threshold(desired_count: int) -> int:
    """How many failed tasks fail a deployment: half the desired count, rounded up, in 3..200."""
    return max(THRESHOLD_MIN, min(THRESHOLD_MAX, (desired_count + 1) // 2))


def in_progress_reason(dep_id: str) -> str:
    return f"ECS deployment {dep_id} in progress."


def completed_reason(dep_id: str) -> str:
    return f"ECS deployment {dep_id} completed."


FAILED_REASON = "ECS deployment circuit breaker: tasks failed to start."


def rolled_back_reason(target_id: str) -> str:
    return f"ECS deployment circuit breaker: rolling back to deploymentId {target_id}."


@dataclass(frozen=True)
class Deployment:
    id: str
    status: DeploymentStatus
    task_definition: TaskDefinition
    desired_count: int
    created_at: float
    updated_at: float
    rollout_state: RolloutState = RolloutState.IN_PROGRESS
    rollout_state_reason: str = ""
    failed_tasks: int = 0
    launch_type: str = EC2
    # awsvpc: the ``networkConfiguration`` this deployment's tasks get (ECS keeps one per
    # deployment, so an UpdateService that changes it leaves older deployments' tasks as they were)
    network_configuration: Mapping[str, Any] | None = None

    @property
    def task_definition_arn(self) -> str:
        return self.task_definition.arn

    def to_document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "taskDefinition": self.task_definition.to_document(),
            "desiredCount": self.desired_count,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "rolloutState": self.rollout_state.value,
            "rolloutStateReason": self.rollout_state_reason,
            "failedTasks": self.failed_tasks,
            "launchType": self.launch_type,
            **({"networkConfiguration": self.network_configuration} if self.network_configuration else {}),
        }

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> Deployment:
        return Deployment(
            id=str(doc["id"]),
            status=DeploymentStatus(doc["status"]),
            task_definition=TaskDefinition.from_wire(doc["taskDefinition"]),
            desired_count=int(doc.get("desiredCount", 0)),
            created_at=float(doc.get("createdAt", 0.0)),
            updated_at=float(doc.get("updatedAt", 0.0)),
            rollout_state=RolloutState(doc.get("rolloutState", RolloutState.IN_PROGRESS)),
            rollout_state_reason=str(doc.get("rolloutStateReason", "")),
            failed_tasks=int(doc.get("failedTasks", 0)),
            launch_type=str(doc.get("launchType", EC2)),
            network_configuration=doc.get("networkConfiguration"),
        )

    def to_wire(self, running: int, pending: int) -> dict[str, Any]:
        """ECS's Deployment shape; ``running``/``pending`` are counted from the tasks by the caller."""
        return {
            "id": self.id,
            "status": self.status.value,
            "taskDefinition": self.task_definition_arn,
            "desiredCount": self.desired_count,
            "pendingCount": pending,
            "runningCount": running,
            "failedTasks": self.failed_tasks,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "launchType": self.launch_type,
            "rolloutState": self.rollout_state.value,
            "rolloutStateReason": self.rollout_state_reason,
            **({"networkConfiguration": self.network_configuration} if self.network_configuration else {}),
        }


def new_deployment(dep_id: str, td: TaskDefinition, desired_count: int, now: float) -> Deployment:
    """A PRIMARY deployment of ``td``, IN_PROGRESS."""
    return Deployment(
        id=dep_id,
        status=DeploymentStatus.PRIMARY,
        task_definition=td,
        desired_count=desired_count,
        created_at=now,
        updated_at=now,
        rollout_state=RolloutState.IN_PROGRESS,
        rollout_state_reason=in_progress_reason(dep_id),
    )


def demoted(dep: Deployment, now: float) -> Deployment:
    """A PRIMARY that a newer deployment replaces: ACTIVE, draining (its rollout state is kept)."""
    if dep.status is not DeploymentStatus.PRIMARY:
        return dep
    return replace(dep, status=DeploymentStatus.ACTIVE, updated_at=now)


def completed(dep: Deployment, now: float) -> Deployment:
    return replace(
        dep,
        rollout_state=RolloutState.COMPLETED,
        rollout_state_reason=completed_reason(dep.id),
        updated_at=now,
    )


def failed(dep: Deployment, now: float) -> Deployment:
    return replace(dep, rollout_state=RolloutState.FAILED, rollout_state_reason=FAILED_REASON, updated_at=now)


def promoted(dep: Deployment, desired_count: int, now: float) -> Deployment:
    """An older COMPLETED deployment made PRIMARY again by a rollback: IN_PROGRESS until it settles."""
    return replace(
        dep,
        status=DeploymentStatus.PRIMARY,
        desired_count=desired_count,
        rollout_state=RolloutState.IN_PROGRESS,
        rollout_state_reason=in_progress_reason(dep.id),
        updated_at=now,
    )
