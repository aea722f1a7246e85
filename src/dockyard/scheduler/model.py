"""What the scheduler reads and returns: a snapshot of instances, the tasks to place, the outcome.

The snapshot is a read-only value built by ``placement`` from its watch-fed cache; the scheduler
never reads the store. ``remaining`` already subtracts every reservation the snapshot knows of.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dockyard.domain.resources import Resources

ACTIVE = "ACTIVE"

# ECS failure reasons (Failure.reason) the scheduler produces
RESOURCE = "RESOURCE:"
AGENT = "AGENT"
ATTRIBUTE = "ATTRIBUTE"
MISSING = "MISSING"
INACTIVE = "INACTIVE"


@dataclass(frozen=True)
class InstanceView:
    """One container instance as placement sees it."""

    arn: str
    id: str
    status: str  # ACTIVE | DRAINING | INACTIVE
    agent_connected: bool
    registered: Resources
    remaining: Resources
    attributes: Mapping[str, str | None] = field(default_factory=dict)
    running_tasks: int = 0
    ec2_instance_id: str = ""


@dataclass(frozen=True)
class Snapshot:
    instances: tuple[InstanceView, ...]

    def find(self, ref: str) -> InstanceView | None:
        """The instance with ARN or id ``ref``."""
        for i in self.instances:
            if ref in (i.arn, i.id):
                return i
        return None


@dataclass(frozen=True)
class TaskAsk:
    """One task to place: what it reserves, the attributes it requires, and (StartTask) where."""

    needs: Resources
    required_attributes: tuple[str, ...] = ()
    instance: str | None = None  # only this instance (ARN), as StartTask asks


@dataclass(frozen=True)
class PlacementRequest:
    tasks: tuple[TaskAsk, ...]
    group: str | None = None


@dataclass(frozen=True)
class Placement:
    task: int  # index into PlacementRequest.tasks
    instance_arn: str
    instance_id: str


@dataclass(frozen=True)
class Failure:
    """ECS's ``Failure``: the instance (or task) concerned, a reason code and a sentence."""

    arn: str
    reason: str
    detail: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"arn": self.arn, "reason": self.reason}
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class PlacementResult:
    placements: tuple[Placement, ...]
    failures: tuple[Failure, ...]  # one per rejecting instance (its first reason), ECS style
    unplaced: tuple[int, ...]  # indexes of the tasks that found no instance
