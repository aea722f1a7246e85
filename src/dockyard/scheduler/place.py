"""``place(request, snapshot, rng)``: which instance each task goes on, or why none would take it.

First fit over the instances in an order shuffled by ``rng`` (so concurrent placers starting from
the same snapshot tend to pick different instances and conflict less), each candidate checked by the
filter chain with what is left of it in this plan. Pure: no I/O, no clock, randomness only from
``rng``. The scheduler issue replaces the candidate order with strategies (binpack, spread, random)
behind the same signature.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from dockyard.domain.resources import Resources, remaining
from dockyard.scheduler.filters import Filter, chain, first_rejection
from dockyard.scheduler.model import (
    MISSING,
    Failure,
    InstanceView,
    Placement,
    PlacementRequest,
    PlacementResult,
    Snapshot,
)


def place(
    request: PlacementRequest,
    snapshot: Snapshot,
    rng: random.Random,
    filters: Sequence[Filter] | None = None,
) -> PlacementResult:
    checks = tuple(filters) if filters is not None else chain()
    left: dict[str, Resources] = {i.arn: i.remaining for i in snapshot.instances}
    order = sorted(snapshot.instances, key=lambda i: i.arn)
    rng.shuffle(order)
    placements: list[Placement] = []
    failures: dict[str, Failure] = {}
    unplaced: list[int] = []

    for index, ask in enumerate(request.tasks):
        candidates: Sequence[InstanceView] = order
        if ask.instance is not None:
            pinned = snapshot.find(ask.instance)
            if pinned is None:
                failures.setdefault(ask.instance, Failure(ask.instance, MISSING))
                unplaced.append(index)
                continue
            candidates = (pinned,)
        chosen: InstanceView | None = None
        for instance in candidates:
            rejection = first_rejection(checks, instance, left[instance.arn], ask)
            if rejection is None:
                chosen = instance
                break
            failures.setdefault(instance.arn, Failure(instance.arn, rejection.reason, rejection.detail))
        if chosen is None:
            unplaced.append(index)
            continue
        left[chosen.arn] = remaining(left[chosen.arn], ask.needs)
        placements.append(Placement(index, chosen.arn, chosen.id))

    return PlacementResult(
        placements=tuple(placements),
        failures=tuple(failures.values()) if unplaced else (),
        unplaced=tuple(unplaced),
    )
