"""What this process's placers are committing right now, and how often commits conflicted.

``InFlight`` is Kubernetes' "assumed pods" idea reduced to what optimistic concurrency needs: each
decision marks the instances it is committing to until the cluster cache has applied its commit
(or the commit failed). Other decisions of this process see those instances as ``busy`` and pick
them last among equally good candidates, so concurrent RunTask handlers do not race each other for
the same allocation record. It only breaks ties: it never hides capacity and never changes what a
strategy prefers, so a decision never fails because of another one that may still fail itself.

It also holds the process's placement *slots* (``Slots``): a decision reads the cache when it gets
a slot and holds it until its transaction answers, so under load requests wait *before* they
decide instead of after (every millisecond a decided transaction spends queued in the store is a
millisecond in which another process can take the same instance). The number of slots adapts like
TCP's congestion window: halved on every conflict, grown by one after ``GROWTH`` clean commits
per slot. A lone server never conflicts and keeps all ``MAX_SLOTS``; servers sharing a
store settle on the few slots that keep their conflicts rare. The store's group commit still
batches the slots' transactions, so throughput holds.

``PlacementStats`` counts commit attempts, conflicts and placements; ``placement.commit`` logs them
every ``LOG_EVERY`` seconds (logger ``dockyard.placement``) when they changed, and benchmarks read
those lines.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Collection, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import TracebackType

from dockyard.placement.keys import Scope

LOG_EVERY = 2.0
MAX_SLOTS = 16
GROWTH = 8  # clean commits per slot before one more slot


class Slots:
    """An asyncio semaphore whose size adapts: halved on a conflict, +1 per ``GROWTH * limit``
    clean commits."""

    def __init__(self, high: int = MAX_SLOTS, low: int = 1) -> None:
        self.high, self.low = high, low
        self.limit = high
        self.in_use = 0
        self._credit = 0.0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # granted just before the cancellation arrived
            else:
                self._waiters.remove(granted)
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def _release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            granted = self._waiters.popleft()
            if not granted.done():
                self.in_use += 1
                granted.set_result(None)

    def conflicted(self) -> None:
        self.limit = max(self.low, self.limit // 2)
        self._credit = 0.0

    def committed(self) -> None:
        self._credit += 1 / (self.limit * GROWTH)
        if self._credit >= 1 and self.limit < self.high:
            self._credit = 0.0
            self.limit += 1
            self._wake()


class InFlight:
    def __init__(self, slots: int = MAX_SLOTS) -> None:
        self._busy: dict[Scope, Counter[str]] = {}
        self.slots = Slots(slots)

    def slot(self) -> Slots:
        """``async with inflight.slot():`` around one decide-and-commit."""
        return self.slots

    def mark(self, scope: Scope, arns: Iterable[str]) -> None:
        busy = self._busy.setdefault(scope, Counter())
        busy.update(arns)

    def unmark(self, scope: Scope, arns: Iterable[str]) -> None:
        busy = self._busy.get(scope)
        if busy is None:
            return
        for arn in arns:  # only this decision's marks: every other decision's stay as they are
            left = busy.get(arn, 0) - 1
            if left > 0:
                busy[arn] = left
            else:
                busy.pop(arn, None)
        if not busy:
            del self._busy[scope]

    def busy(self, scope: Scope, mine: Collection[str] = ()) -> AbstractSet[str]:
        """The instances other decisions are committing to (``mine``: this decision's marks).
        Without ``mine``, a live view of the marks (read it before the next mark or unmark)."""
        busy = self._busy.get(scope)
        if not busy:
            return frozenset()
        if not mine:
            return busy.keys()  # every mark counts (unmark drops what reaches 0)
        own = Counter(mine)
        return frozenset(a for a, n in busy.items() if n > own.get(a, 0))


@dataclass
class PlacementStats:
    attempts: int = 0  # commit transactions tried
    commits: int = 0  # commit transactions that applied
    conflicts: int = 0  # commit transactions refused because an allocation record moved
    guard_conflicts: int = 0  # refused because a caller's guard moved (cluster, token, service)
    placed: int = 0  # tasks committed
    logged: tuple[int, int, int, int, int] = field(default=(0, 0, 0, 0, 0))
    logged_at: float = 0.0

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.attempts, self.commits, self.conflicts, self.guard_conflicts, self.placed)

    def line(self) -> str:
        rate = self.conflicts / self.attempts if self.attempts else 0.0
        return (
            f"placement stats: attempts={self.attempts} commits={self.commits} "
            f"conflicts={self.conflicts} guard_conflicts={self.guard_conflicts} placed={self.placed} "
            f"conflict_rate={rate:.4f}"
        )
