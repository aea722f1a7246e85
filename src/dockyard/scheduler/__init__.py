"""PURE placement: ``place(request, snapshot, rng)`` -> placements and ECS failure reasons.

See README.md beside this file for the pipeline.
"""

from dockyard.scheduler.model import (
    Failure,
    InstanceView,
    Placement,
    PlacementRequest,
    PlacementResult,
    Snapshot,
    TaskAsk,
)
from dockyard.scheduler.place import place

__all__ = [
    "Failure",
    "InstanceView",
    "Placement",
    "PlacementRequest",
    "PlacementResult",
    "Snapshot",
    "TaskAsk",
    "place",
]
