"""Placement strategies and constraints from the wire, validated as ECS validates them.

- ``parse_strategies(wire)``: at most 5; ``binpack`` on ``cpu`` or ``memory``; ``spread`` on
  ``instanceId``, ``host`` (the same thing: one agent per host) or ``attribute:NAME``; ``random``
  (its field is not used). Field names are accepted in any case and normalised.
- ``parse_constraints(call, task_definition)``: the call's constraints merged with the task
  definition's, at most 10 together; ``distinctInstance`` takes no expression, ``memberOf``
  requires one, compiled here so a malformed expression fails the request (with its position)
  before anything is decided.

Defaults when a request names no strategy: RunTask places at random (what ECS's API reference
has said of RunTask since its first version); services use ``SERVICE_DEFAULT``, ECS's documented
default for service tasks: spread across ``attribute:ecs.availability-zone``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dockyard.domain.errors import InvalidParameter
from dockyard.scheduler import expression
from dockyard.scheduler.model import (
    BINPACK,
    DISTINCT_INSTANCE,
    MEMBER_OF,
    RANDOM,
    SPREAD,
    PlacementConstraint,
    PlacementStrategy,
)

MAX_STRATEGIES = 5
MAX_CONSTRAINTS = 10
INSTANCE_ID = "instanceId"
HOST = "host"
ATTRIBUTE = "attribute:"
AVAILABILITY_ZONE = "attribute:ecs.availability-zone"

RUN_TASK_DEFAULT: tuple[PlacementStrategy, ...] = (PlacementStrategy(RANDOM),)
SERVICE_DEFAULT: tuple[PlacementStrategy, ...] = (PlacementStrategy(SPREAD, AVAILABILITY_ZONE),)


def parse_strategies(wire: Sequence[Mapping[str, Any]] | None) -> tuple[PlacementStrategy, ...]:
    """``placementStrategy`` of RunTask/CreateService; () when absent (the caller's default)."""
    items = list(wire or ())
    if len(items) > MAX_STRATEGIES:
        raise InvalidParameter(f"You can specify at most {MAX_STRATEGIES} placement strategies.")
    return tuple(_strategy(i, item) for i, item in enumerate(items))


def _strategy(i: int, item: Mapping[str, Any]) -> PlacementStrategy:
    kind = str(item.get("type") or "")
    field = item.get("field")
    where = f"placementStrategy[{i}]"
    if kind == RANDOM:
        return PlacementStrategy(RANDOM)
    if kind == BINPACK:
        lowered = str(field or "").lower()
        if lowered not in ("cpu", "memory"):
            raise InvalidParameter(f"{where}: binpack needs the field cpu or memory, not '{_shown(field)}'.")
        return PlacementStrategy(BINPACK, lowered)
    if kind == SPREAD:
        text = str(field or "")
        if text.lower() in (INSTANCE_ID.lower(), HOST):
            return PlacementStrategy(SPREAD, INSTANCE_ID)
        if text.lower().startswith(ATTRIBUTE) and len(text) > len(ATTRIBUTE):
            return PlacementStrategy(SPREAD, ATTRIBUTE + text[len(ATTRIBUTE) :])
        raise InvalidParameter(
            f"{where}: spread needs the field instanceId, host or attribute:NAME, not '{_shown(field)}'."
        )
    raise InvalidParameter(
        f"{where}: unknown placement strategy type '{_shown(kind)}'; use random, spread or binpack."
    )


def parse_constraints(
    call: Sequence[Mapping[str, Any]] | None, task_definition: Sequence[Mapping[str, Any]] | None = ()
) -> tuple[PlacementConstraint, ...]:
    """The call's ``placementConstraints`` followed by the task definition's, validated."""
    merged = [("placementConstraints", i, c) for i, c in enumerate(call or ())]
    merged += [("taskDefinition.placementConstraints", i, c) for i, c in enumerate(task_definition or ())]
    if len(merged) > MAX_CONSTRAINTS:
        raise InvalidParameter(
            f"A task can have at most {MAX_CONSTRAINTS} placement constraints, counting the task "
            f"definition's; got {len(merged)}."
        )
    return tuple(_constraint(f"{name}[{i}]", item) for name, i, item in merged)


def _constraint(where: str, item: Mapping[str, Any]) -> PlacementConstraint:
    kind = str(item.get("type") or "")
    text = item.get("expression")
    if kind == DISTINCT_INSTANCE:
        if text:
            raise InvalidParameter(f"{where}: a distinctInstance constraint takes no expression.")
        return PlacementConstraint(DISTINCT_INSTANCE)
    if kind == MEMBER_OF:
        if not text or not str(text).strip():
            raise InvalidParameter(f"{where}: a memberOf constraint needs an expression.")
        try:
            expression.compile(str(text))
        except InvalidParameter as e:
            raise InvalidParameter(f"{where}: {e.message}") from None
        return PlacementConstraint(MEMBER_OF, str(text))
    raise InvalidParameter(
        f"{where}: unknown placement constraint type '{_shown(kind)}'; use distinctInstance or memberOf."
    )


def _shown(value: object) -> str:
    return str(value if value is not None else "")[:100]
