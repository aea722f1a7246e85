"""``place(request, snapshot, rng)``: which instance each task goes on, or why none would take it.

For each task in turn:

1. StartTask names the instance: only the filter chain decides.
2. Otherwise ``scorers.search`` walks the strategy chain over the index, tier by tier, and the
   first feasible instance it meets is the answer (exact: see ``scorers``). Feasible means every
   filter of ``filters.chain`` passes against what is left of the instance in this plan.
3. The plan records the placement (the instance's remaining shrinks, its group count grows), so
   the next task of the request sees it; the index itself is never touched.
4. A task no instance takes is unplaced; every instance then reports its first rejection, once
   (ECS's ``failures``: the instance ARN, a reason such as ``RESOURCE:MEMORY``, a detail).

Pure: no I/O, no clock; randomness only from ``rng``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from dockyard.scheduler.filters import Filter, chain, first_rejection
from dockyard.scheduler.index import Snapshot
from dockyard.scheduler.model import (
    INACTIVE,
    MISSING,
    Failure,
    Placement,
    PlacementRequest,
    PlacementResult,
    TaskAsk,
)
from dockyard.scheduler.scorers import Plan, scorers_for, search


def place(
    request: PlacementRequest,
    snapshot: Snapshot,
    rng: random.Random,
    filters: Sequence[Filter] | None = None,
) -> PlacementResult:
    group = request.group or ""
    checks = tuple(filters) if filters is not None else chain(request.constraints, group)
    strategy = scorers_for(request.strategy)
    plan = Plan(snapshot, group)
    placements: list[Placement] = []
    failures: dict[str, Failure] = {}
    unplaced: list[int] = []
    reported = False  # every instance's first rejection is recorded already

    for index, ask in enumerate(request.tasks):
        chosen: str | None
        if ask.instance is not None:
            chosen = _pinned(plan, checks, ask, failures)
        else:

            def feasible(arn: str, ask: TaskAsk = ask) -> bool:
                view = plan.view(arn)
                return first_rejection(checks, view, view.remaining, ask) is None

            chosen = search(plan, strategy, plan.everything(), ask.needs, feasible, rng)
            if chosen is None and not reported:
                _report(plan, checks, ask, failures)
                reported = True
        if chosen is None:
            unplaced.append(index)
            continue
        view = plan.assign(chosen, ask.needs)
        placements.append(Placement(index, view.arn, view.id))

    return PlacementResult(
        placements=tuple(placements),
        failures=tuple(failures.values()) if unplaced else (),
        unplaced=tuple(unplaced),
    )


def _pinned(plan: Plan, checks: Sequence[Filter], ask: TaskAsk, failures: dict[str, Failure]) -> str | None:
    assert ask.instance is not None
    found = plan.snapshot.find(ask.instance)
    if found is None:
        failures.setdefault(ask.instance, Failure(ask.instance, MISSING))
        return None
    view = plan.view(found.arn)
    rejection = first_rejection(checks, view, view.remaining, ask)
    if rejection is not None:
        failures.setdefault(view.arn, Failure(view.arn, rejection.reason, rejection.detail))
        return None
    return view.arn


def _report(plan: Plan, checks: Sequence[Filter], ask: TaskAsk, failures: dict[str, Failure]) -> None:
    """Why each instance (deregistered ones aside) rejects ``ask``."""
    for arn in plan.index.views:
        view = plan.view(arn)
        if view.status == INACTIVE:
            continue
        rejection = first_rejection(checks, view, view.remaining, ask)
        if rejection is not None:
            failures.setdefault(arn, Failure(arn, rejection.reason, rejection.detail))
    for arn, view in plan.dirty.items():
        if arn not in plan.index.views and view.status != INACTIVE:
            rejection = first_rejection(checks, view, view.remaining, ask)
            if rejection is not None:
                failures.setdefault(arn, Failure(arn, rejection.reason, rejection.detail))
