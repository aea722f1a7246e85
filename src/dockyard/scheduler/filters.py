"""Feasibility filters: each decides whether one task may go on one instance, and says why not.

A filter is a small object with ``name`` (for logs and tests), ``reason`` (the ECS failure reason it
reports) and ``reject(instance, left, ask) -> detail | None``; ``left`` is what remains of the
instance in the plan being built (the snapshot's remaining minus this plan's earlier placements).
``chain()`` orders them; the first rejection is the one reported, as Nomad's feasibility checkers
do. ECS checks resources before constraints, so constraint filters (``distinctInstance``,
``memberOf``) come last and a full instance reports ``RESOURCE:*``, not a constraint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from dockyard.domain.resources import (
    Resources,
    Shortfall,
    cpu_shortfall,
    eni_shortfall,
    memory_shortfall,
    ports_shortfall,
    udp_ports_shortfall,
)
from dockyard.scheduler import expression
from dockyard.scheduler.model import (
    ACTIVE,
    AGENT,
    ATTRIBUTE,
    DISTINCT_INSTANCE,
    DISTINCT_INSTANCE_UNSATISFIED,
    INACTIVE,
    MEMBER_OF_UNSATISFIED,
    RESOURCE,
    InstanceView,
    PlacementConstraint,
    TaskAsk,
)


class Filter(Protocol):
    name: str
    reason: str

    def reject(self, instance: InstanceView, left: Resources, ask: TaskAsk) -> str | None:
        """A sentence saying why ``ask`` may not go on ``instance``; None if it may."""
        ...


@dataclass(frozen=True)
class Rejection:
    instance_arn: str
    filter: str
    reason: str
    detail: str


class StatusFilter:
    """Only ACTIVE instances take new tasks (DRAINING and INACTIVE ones do not)."""

    name = "status"
    reason = INACTIVE

    def reject(self, instance: InstanceView, left: Resources, ask: TaskAsk) -> str | None:
        if instance.status != ACTIVE:
            return f"the container instance is {instance.status}"
        return None


class AgentFilter:
    """The instance's agent must be connected (its liveness lease alive)."""

    name = "agent"
    reason = AGENT

    def reject(self, instance: InstanceView, left: Resources, ask: TaskAsk) -> str | None:
        if not instance.agent_connected:
            return "the container instance's agent is not connected"
        return None


class AttributeFilter:
    """Every attribute the task definition requires (requiresAttributes) must be registered."""

    name = "attributes"
    reason = ATTRIBUTE

    def reject(self, instance: InstanceView, left: Resources, ask: TaskAsk) -> str | None:
        if not ask.required_attributes:
            return None
        missing = [a for a in ask.required_attributes if a not in instance.attributes]
        if missing:
            return f"missing required attributes: {', '.join(missing)}"
        return None


class ResourceFilter:
    """One resource (CPU, MEMORY, PORTS or PORTS_UDP) must fit in what is left."""

    def __init__(self, resource: str, check: Callable[[Resources, Resources], Shortfall | None]) -> None:
        self.name = resource.lower()
        self.reason = RESOURCE + resource
        self._check = check

    def reject(self, instance: InstanceView, left: Resources, ask: TaskAsk) -> str | None:
        found = self._check(left, ask.needs)
        return found.detail if found is not None else None


class DistinctInstanceFilter:
    """``distinctInstance``: no two tasks of the group on one instance (those already running it,
    and those this decision placed, count alike)."""

    name = "distinctInstance"
    reason = DISTINCT_INSTANCE_UNSATISFIED

    def __init__(self, group: str) -> None:
        self.group = group

    def reject(self, instance: InstanceView, left: Resources, ask: TaskAsk) -> str | None:
        if instance.groups.get(self.group, 0) > 0:
            return f"the container instance already runs a task of group '{self.group}'"
        return None


class MemberOfFilter:
    """``memberOf``: the instance must satisfy a cluster query language expression."""

    name = "memberOf"
    reason = MEMBER_OF_UNSATISFIED

    def __init__(self, text: str) -> None:
        self.text = text
        self.expression = expression.compile(text)

    def reject(self, instance: InstanceView, left: Resources, ask: TaskAsk) -> str | None:
        if not self.expression.matches(instance):
            return f"the container instance does not match '{self.text[:200]}'"
        return None


def chain(constraints: Sequence[PlacementConstraint] = (), group: str = "") -> tuple[Filter, ...]:
    """The filters in the order they run: status, agent and attributes (cheap and decisive), the
    resources (what ECS checks first), then the constraints."""
    checks: list[Filter] = [
        StatusFilter(),
        AgentFilter(),
        AttributeFilter(),
        ResourceFilter("CPU", cpu_shortfall),
        ResourceFilter("MEMORY", memory_shortfall),
        ResourceFilter("PORTS", ports_shortfall),
        ResourceFilter("PORTS_UDP", udp_ports_shortfall),
        ResourceFilter("ENI", eni_shortfall),
    ]
    if any(c.type == DISTINCT_INSTANCE for c in constraints):
        checks.append(DistinctInstanceFilter(group))
    checks += [MemberOfFilter(c.expression) for c in constraints if c.expression is not None]
    return tuple(checks)


def first_rejection(
    filters: Sequence[Filter], instance: InstanceView, left: Resources, ask: TaskAsk
) -> Rejection | None:
    for f in filters:
        detail = f.reject(instance, left, ask)
        if detail is not None:
            return Rejection(instance.arn, f.name, f.reason, detail)
    return None
