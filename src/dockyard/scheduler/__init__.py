"""PURE placement: ``place(request, snapshot, rng)`` -> placements and ECS failure reasons.

See README.md beside this file for the pipeline.
"""

from dockyard.scheduler.index import InstanceIndex, Snapshot
from dockyard.scheduler.model import (
    Failure,
    InstanceView,
    Placement,
    PlacementConstraint,
    PlacementRequest,
    PlacementResult,
    PlacementStrategy,
    TaskAsk,
)
from dockyard.scheduler.place import place
from dockyard.scheduler.strategies import (
    RUN_TASK_DEFAULT,
    SERVICE_DEFAULT,
    parse_constraints,
    parse_strategies,
)

__all__ = [
    "RUN_TASK_DEFAULT",
    "SERVICE_DEFAULT",
    "Failure",
    "InstanceIndex",
    "InstanceView",
    "Placement",
    "PlacementConstraint",
    "PlacementRequest",
    "PlacementResult",
    "PlacementStrategy",
    "Snapshot",
    "TaskAsk",
    "parse_constraints",
    "parse_strategies",
    "place",
]
