"""Task and container statuses: ordered, so "never backwards" is a comparison.

    PROVISIONING -> PENDING -> ACTIVATING -> RUNNING -> DEACTIVATING -> STOPPING
      -> DEPROVISIONING -> STOPPED

The control plane owns PROVISIONING, ACTIVATING, DEACTIVATING, STOPPING and DEPROVISIONING; the agent
reports PENDING, RUNNING and STOPPED (see docs/agent-protocol.md).
"""

from __future__ import annotations

from enum import IntEnum


class TaskStatus(IntEnum):
    PROVISIONING = 10
    PENDING = 20
    ACTIVATING = 30
    RUNNING = 40
    DEACTIVATING = 50
    STOPPING = 60
    DEPROVISIONING = 70
    STOPPED = 80

    @classmethod
    def parse(cls, name: str) -> TaskStatus:
        return cls[name]

    def __str__(self) -> str:
        return self.name


AGENT_REPORTED = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.STOPPED})
DESIRED = frozenset({TaskStatus.RUNNING, TaskStatus.STOPPED})


class ContainerStatus(IntEnum):
    PENDING = 20
    RUNNING = 40
    STOPPED = 80

    def __str__(self) -> str:
        return self.name


class HealthStatus(IntEnum):
    UNKNOWN = 0
    HEALTHY = 1
    UNHEALTHY = 2

    def __str__(self) -> str:
        return self.name


class StopCode:
    TASK_FAILED_TO_START = "TaskFailedToStart"
    ESSENTIAL_CONTAINER_EXITED = "EssentialContainerExited"
    USER_INITIATED = "UserInitiated"
    SERVICE_SCHEDULER_INITIATED = "ServiceSchedulerInitiated"
    SPOT_INTERRUPTION = "SpotInterruption"
    TERMINATION_NOTICE = "TerminationNotice"


def advance(current: TaskStatus, reported: TaskStatus) -> TaskStatus:
    """Merge a reported status monotonically: the later of the two."""
    return max(current, reported)
