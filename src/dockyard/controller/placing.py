"""How a service's tasks are placed: its strategy and constraints as the scheduler takes them.

- REPLICA services place with their ``placementStrategy``, or ECS's default for services
  (``scheduler.SERVICE_DEFAULT``: spread over availability zones) when they name none;
- DAEMON services pin each task to its instance (no strategy);
- constraints are the service's followed by its task definition's, as RunTask merges them; for a
  DAEMON service, an instance that fails a ``memberOf`` expression gets no task (``members``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dockyard.domain.services import SchedulingStrategy, Service
from dockyard.domain.task_definitions import TaskDefinition
from dockyard.placement.cache import ClusterCache
from dockyard.placement.keys import Scope
from dockyard.scheduler import (
    SERVICE_DEFAULT,
    PlacementConstraint,
    PlacementStrategy,
    parse_constraints,
    parse_strategies,
)
from dockyard.scheduler.expression import compile as compile_expression


def strategy_of(service: Service) -> tuple[PlacementStrategy, ...]:
    if service.scheduling_strategy is SchedulingStrategy.DAEMON:
        return ()
    return parse_strategies(service.placement_strategy) or SERVICE_DEFAULT


def constraints_of(service: Service, td: TaskDefinition) -> tuple[PlacementConstraint, ...]:
    return parse_constraints(service.placement_constraints, td.wire.get("placementConstraints") or ())


def members(
    cache: ClusterCache, scope: Scope, instance_ids: Iterable[str], constraints: Sequence[PlacementConstraint]
) -> set[str]:
    """The instances that satisfy every ``memberOf`` expression of ``constraints``."""
    expressions = [compile_expression(c.expression) for c in constraints if c.expression is not None]
    out: set[str] = set()
    for instance_id in instance_ids:
        if not expressions:
            out.add(instance_id)
            continue
        view = cache.view(scope, instance_id)
        if view is not None and all(e.matches(view) for e in expressions):
            out.add(instance_id)
    return out
