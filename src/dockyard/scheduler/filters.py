"""Feasibility filters: each decides whether one task may go on one instance, and says why not.

A filter is a small object with ``name`` (for logs and tests), ``reason`` (the ECS failure reason it
reports) and ``reject(instance, left, ask) -> detail | None``; ``left`` is what remains of the
instance in the plan being built (the snapshot's remaining minus this plan's earlier placements).
``chain()`` orders them cheapest first; the first rejection is the one reported, as Nomad's
feasibility checkers do. The scheduler issue adds constraint filters (``distinctInstance``,
``memberOf``) to the same chain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from dockyard.domain.resources import (
    Resources,
    Shortfall,
    cpu_shortfall,
    memory_shortfall,
    ports_shortfall,
    udp_ports_shortfall,
)
from dockyard.scheduler.model import ACTIVE, AGENT, ATTRIBUTE, INACTIVE, RESOURCE, InstanceView, TaskAsk


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


def chain() -> tuple[Filter, ...]:
    """The filters in the order they run: cheapest and most decisive first."""
    return (
        StatusFilter(),
        AgentFilter(),
        AttributeFilter(),
        ResourceFilter("CPU", cpu_shortfall),
        ResourceFilter("MEMORY", memory_shortfall),
        ResourceFilter("PORTS", ports_shortfall),
        ResourceFilter("PORTS_UDP", udp_ports_shortfall),
    )


def first_rejection(
    filters: Sequence[Filter], instance: InstanceView, left: Resources, ask: TaskAsk
) -> Rejection | None:
    for f in filters:
        detail = f.reject(instance, left, ask)
        if detail is not None:
            return Rejection(instance.arn, f.name, f.reason, detail)
    return None
