"""What the scheduler reads and returns: instances, the tasks to place with their strategy and
constraints, and the outcome.

``InstanceView`` is one container instance as placement sees it; ``remaining`` already subtracts
every reservation the view knows of. The scheduler never reads the store: ``placement`` keeps the
views current from its watch-fed cache (``index.InstanceIndex``) and hands ``place()`` a
``Snapshot`` of them.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from collections.abc import Set as AbstractSet
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
DISTINCT_INSTANCE_UNSATISFIED = "DistinctInstance placement constraint unsatisfied"
MEMBER_OF_UNSATISFIED = "MemberOf placement constraint unsatisfied"

# placement strategy types and constraint types, as ECS names them
BINPACK = "binpack"
SPREAD = "spread"
RANDOM = "random"
DISTINCT_INSTANCE = "distinctInstance"
MEMBER_OF = "memberOf"


@dataclass(frozen=True)  # (no slots: ``_evolve`` copies its ``__dict__``)
class InstanceView:
    """One container instance as placement sees it."""

    arn: str
    id: str
    status: str  # ACTIVE | DRAINING | INACTIVE
    agent_connected: bool
    registered: Resources
    remaining: Resources
    attributes: Mapping[str, str | None] = field(default_factory=dict)
    running_tasks: int = 0  # tasks whose lastStatus is RUNNING (runningTasksCount)
    ec2_instance_id: str = ""
    groups: Mapping[str, int] = field(default_factory=dict)  # reserving tasks per task group
    registered_at: float = 0.0  # epoch seconds
    agent_version: str = ""
    revision: int = 0  # the allocation record's mod_revision this view was built from (opaque here)

    @property
    def schedulable(self) -> bool:
        """ACTIVE with its agent connected: the only instances strategies rank."""
        return self.status == ACTIVE and self.agent_connected

    def with_reservations(self, remaining: Resources, groups: Mapping[str, int]) -> InstanceView:
        """This view with what remains and the group counts changed (placement does this for every
        task it places)."""
        return self._evolve({"remaining": remaining, "groups": groups})

    def with_running(self, running_tasks: int, agent_connected: bool) -> InstanceView:
        """This view with the running count and the agent's connection changed."""
        return self._evolve({"running_tasks": running_tasks, "agent_connected": agent_connected})

    def with_allocation(
        self,
        status: str,
        agent_connected: bool,
        remaining: Resources,
        groups: Mapping[str, int],
        running_tasks: int,
        revision: int,
    ) -> InstanceView:
        """This view as another allocation record of the same registration makes it."""
        return self._evolve(
            {
                "status": status,
                "agent_connected": agent_connected,
                "remaining": remaining,
                "groups": groups,
                "running_tasks": running_tasks,
                "revision": revision,
            }
        )

    def _evolve(self, changes: Mapping[str, Any]) -> InstanceView:
        """``dataclasses.replace`` without ``__init__``, which for a frozen dataclass sets each of
        the 13 fields through ``object.__setattr__`` (several times the cost of copying them)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new


@dataclass(frozen=True)
class TaskAsk:
    """One task to place: what it reserves, the attributes it requires, and (StartTask) where."""

    needs: Resources
    required_attributes: tuple[str, ...] = ()
    instance: str | None = None  # only this instance (ARN), as StartTask asks


@dataclass(frozen=True)
class PlacementStrategy:
    """ECS's ``PlacementStrategy``: ``binpack`` (cpu | memory), ``spread`` (instanceId | host |
    attribute:NAME) or ``random``. Build and validate them with ``strategies.parse_strategies``."""

    type: str
    field: str | None = None

    def to_wire(self) -> dict[str, str]:
        out = {"type": self.type}
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclass(frozen=True)
class PlacementConstraint:
    """ECS's ``PlacementConstraint``: ``distinctInstance``, or ``memberOf`` with a cluster query
    language expression. Build and validate them with ``constraints.parse_constraints``."""

    type: str
    expression: str | None = None

    def to_wire(self) -> dict[str, str]:
        out = {"type": self.type}
        if self.expression is not None:
            out["expression"] = self.expression
        return out


@dataclass(frozen=True)
class PlacementRequest:
    """The tasks of one decision and how to place them.

    ``strategy`` is tried in order, each one breaking the ties of the one before; what is still
    tied is chosen at random (so concurrent placers spread out). Empty means ``random``, RunTask's
    default (services pass ECS's service default, ``strategies.SERVICE_DEFAULT``). ``group`` is the
    task group that ``spread``, ``distinctInstance`` and ``task:group`` count.
    """

    tasks: tuple[TaskAsk, ...]
    group: str | None = None
    strategy: tuple[PlacementStrategy, ...] = ()
    constraints: tuple[PlacementConstraint, ...] = ()


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


class Either(Container[str]):
    """Membership in ``a`` or ``b`` (a lookup in each; neither is copied): busy sets, skip sets."""

    __slots__ = ("_a", "_b")

    def __init__(self, a: Container[str], b: Container[str]) -> None:
        self._a, self._b = a, b

    def __contains__(self, item: object) -> bool:
        return item in self._a or item in self._b


def either(a: AbstractSet[str], b: Container[str]) -> Container[str]:
    """``a`` or ``b``, without a wrapper when one side is empty."""
    if not a:
        return b
    if isinstance(b, frozenset) and not b:
        return a
    return Either(a, b)
