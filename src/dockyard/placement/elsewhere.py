"""Instances another scheduler placed on lately: the cross-process half of "busy".

Two server processes on one store each decide against their own watch-fed cache, so a decision
cannot see the other process's decisions in flight, only its commits once the watch delivers them.
If both pick uniformly among equally good instances, the chance that two concurrent decisions share
an instance is the same however fresh the caches are, and every such overlap is a conflict.

``PlacedElsewhere`` remembers, per cluster, the instances whose allocation record *another* writer
grew (tasks added: a placement; releases, registrations and status changes are not placements) in
the last ``HORIZON`` seconds; a placement of this process on the instance forgets it again. Placement
passes them to the scheduler as ``busy`` (chosen last among equals, never hidden), so each process
prefers the instances it placed on itself or that nobody placed on lately. Under a steady load the
processes settle on disjoint working sets and rarely commit to the same record; when one process is
alone, or the cluster is quiet, the set is empty and ties are broken uniformly as before.

Whose write a record is comes from ``ClusterCache.expect``: the cache knows the exact bytes this
process wrote. It is only a tie-break hint: a wrong guess costs at most a conflict, never a
placement or an over-commit (the compare-and-swap decides those).
"""

from __future__ import annotations

from collections.abc import Container

from dockyard.clock import Clock
from dockyard.placement.keys import Scope

HORIZON = 10.0  # seconds another process's placement keeps an instance "busy" for this one


class PlacedElsewhere:
    def __init__(self, clock: Clock, horizon: float = HORIZON) -> None:
        self._clock = clock
        self.horizon = horizon
        self._at: dict[Scope, dict[str, float]] = {}  # arn -> when seen, oldest first

    def placed(self, scope: Scope, arn: str, elsewhere: bool) -> None:
        """A placement on ``arn`` was applied: by another process (``elsewhere``) or by this one."""
        at = self._at.get(scope)
        if elsewhere:
            if at is None:
                at = self._at[scope] = {}
            at.pop(arn, None)  # re-inserted last: the dict stays ordered by time
            at[arn] = self._clock.monotonic()
        elif at is not None:
            at.pop(arn, None)

    def busy(self, scope: Scope) -> Container[str]:
        """The instances another process placed on within the horizon (a live view: take it per
        decision)."""
        at = self._at.get(scope)
        if not at:
            return frozenset()
        expired = self._clock.monotonic() - self.horizon
        while at:
            arn, seen = next(iter(at.items()))
            if seen >= expired:
                break
            del at[arn]
        return at.keys()
