"""Strategies as scorers that rank candidates in tiers, best first, over the index.

A scorer (Kubernetes' Score plugin, ECS's strategy) splits a set of candidates into *tiers* of
equally good instances, best tier first. ``search`` walks the chain: the first strategy's tiers in
order, each split by the next strategy, and so on; inside the last tier the choice is random among
the feasible instances (``pick``), preferring instances the snapshot does not mark ``busy`` (no
other in-flight decision is committing to them, no other scheduler placed on them lately), so
concurrent placers spread out instead of colliding. The first feasible instance found this
way is exactly the one a full scan ranking every instance by (strategy 1, ..., strategy n, random)
would choose; the index only saves visiting the instances that cannot win:

- ``Binpack(field)``: least remaining cpu/memory first. Over the whole cluster the tiers are runs
  of equal keys in the index's sorted list, starting with a bisection at what the task needs.
- ``SpreadInstances``: fewest tasks of the group on the instance first (``instanceId``, ``host``).
  Tier 0 is "every instance minus those running the group"; the others come from the index's
  buckets by count.
- ``SpreadAttribute(name)``: the attribute values whose instances run the fewest tasks of the
  group first (values with equal counts form one tier), so max - min <= 1 across the values that
  have a feasible instance.

``random`` needs no scorer: it ends the chain (anything after it cannot break a tie).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, overload

from dockyard.domain.resources import Resources, remaining
from dockyard.scheduler.index import InstanceIndex, Snapshot, attribute_value
from dockyard.scheduler.model import BINPACK, RANDOM, SPREAD, Either, InstanceView, PlacementStrategy

ATTRIBUTE = "attribute:"
MAX_PASSED = 64  # busy candidates ``pick`` passes over before it stops preferring the others
_NOTHING: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Members:
    """The candidates of one tier: ``base`` minus ``skip``, then ``extra``.

    ``everything`` marks the whole cluster (base is the index's order), which scorers rank through
    their index instead of one by one.
    """

    base: Sequence[str]
    skip: Container[str] = _NOTHING
    extra: Sequence[str] = ()
    everything: bool = False

    def __iter__(self) -> Iterator[str]:
        for arn in self.base:
            if arn not in self.skip:
                yield arn
        yield from self.extra


class Plan:
    """One decision's working state: the snapshot plus what this decision placed so far.

    ``dirty`` holds every instance whose view differs from the index's: the snapshot's overrides
    and the instances this plan placed on (remaining shrunk, group count grown).
    """

    def __init__(self, snapshot: Snapshot, group: str) -> None:
        self.snapshot = snapshot
        self.index: InstanceIndex = snapshot.index
        self.group = group
        self.dirty: dict[str, InstanceView] = dict(snapshot.overrides)
        self._value_counts: dict[str, dict[str | None, int]] = {}

    def view(self, arn: str) -> InstanceView:
        found = self.dirty.get(arn)
        return found if found is not None else self.index.views[arn]

    def count(self, view: InstanceView) -> int:
        return view.groups.get(self.group, 0)

    def assign(self, arn: str, needs: Resources) -> InstanceView:
        old = self.view(arn)
        groups = dict(old.groups)
        groups[self.group] = groups.get(self.group, 0) + 1
        new = old.with_reservations(remaining(old.remaining, needs), groups)
        self.dirty[arn] = new
        if old.schedulable:
            for name, counts in self._value_counts.items():
                value = attribute_value(old, name)
                counts[value] = counts.get(value, 0) + 1
        return new

    def value_counts(self, name: str) -> dict[str | None, int]:
        """Tasks of the group per value of attribute ``name`` (schedulable instances only)."""
        counts = self._value_counts.get(name)
        if counts is None:
            counts = self._value_counts[name] = {}
            for arn, n in self.index.group_counts(self.group).items():
                if arn not in self.dirty:
                    value = attribute_value(self.index.views[arn], name)
                    counts[value] = counts.get(value, 0) + n
            for view in self.dirty.values():
                if view.schedulable and self.count(view):
                    value = attribute_value(view, name)
                    counts[value] = counts.get(value, 0) + self.count(view)
        return counts

    def everything(self) -> Members:
        return Members(self.index.order, self.dirty, tuple(self.dirty), everything=True)


class Scorer(Protocol):
    name: str

    def tiers(self, plan: Plan, members: Members, needs: Resources) -> Iterator[Members]:
        """``members`` split into tiers of equally good instances, best first."""
        ...


def _explicit_tiers(
    plan: Plan, members: Members, key: Callable[[InstanceView], int], floor: int | None = None
) -> Iterator[Members]:
    """Rank ``members`` one by one (chained strategies rank a tier, not the whole cluster)."""
    keyed: list[tuple[int, str]] = []
    for arn in members:
        k = key(plan.view(arn))
        if floor is None or k >= floor:
            keyed.append((k, arn))
    keyed.sort()
    start = 0
    while start < len(keyed):
        end = start
        while end < len(keyed) and keyed[end][0] == keyed[start][0]:
            end += 1
        yield Members([arn for _, arn in keyed[start:end]])
        start = end


class _Column(Sequence[str]):
    """The ARNs of ``entries[lo:hi]`` without copying them."""

    __slots__ = ("_entries", "_hi", "_lo")

    def __init__(self, entries: Sequence[tuple[int, str]], lo: int, hi: int) -> None:
        self._entries, self._lo, self._hi = entries, lo, hi

    def __len__(self) -> int:
        return self._hi - self._lo

    def __iter__(self) -> Iterator[str]:
        for i in range(self._lo, self._hi):
            yield self._entries[i][1]

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._entries[self._lo + i][1]


class _Concat(Sequence[str]):
    """Several sequences read as one."""

    __slots__ = ("_parts",)

    def __init__(self, parts: Sequence[Sequence[str]]) -> None:
        self._parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def __iter__(self) -> Iterator[str]:
        for part in self._parts:
            yield from part

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        for part in self._parts:
            if i < len(part):
                return part[i]
            i -= len(part)
        raise IndexError(i)


class Binpack:
    """Least remaining ``field`` (cpu or memory) first: the fullest instance that fits."""

    name = BINPACK

    def __init__(self, field: str) -> None:
        self.field = field

    def key(self, view: InstanceView) -> int:
        return view.remaining.cpu if self.field == "cpu" else view.remaining.memory

    def tiers(self, plan: Plan, members: Members, needs: Resources) -> Iterator[Members]:
        want = needs.cpu if self.field == "cpu" else needs.memory
        if not members.everything:
            yield from _explicit_tiers(plan, members, self.key, floor=want)
            return
        entries = plan.index.sorted_by(self.field)
        extras = sorted((self.key(v), arn) for arn, v in plan.dirty.items() if self.key(v) >= want)
        i, j, n = bisect.bisect_left(entries, (want,)), 0, len(entries)
        while i < n or j < len(extras):
            heads = ([entries[i][0]] if i < n else []) + ([extras[j][0]] if j < len(extras) else [])
            k = min(heads)
            hi = bisect.bisect_left(entries, (k + 1,), lo=i) if i < n and entries[i][0] == k else i
            extra: list[str] = []
            while j < len(extras) and extras[j][0] == k:
                extra.append(extras[j][1])
                j += 1
            yield Members(_Column(entries, i, hi), plan.dirty, extra)
            i = hi


class SpreadInstances:
    """Fewest tasks of the group on the instance first (``instanceId`` and ``host``)."""

    name = SPREAD

    def tiers(self, plan: Plan, members: Members, needs: Resources) -> Iterator[Members]:
        if not members.everything:
            yield from _explicit_tiers(plan, members, plan.count)
            return
        counts = plan.index.group_counts(plan.group)
        by_count: dict[int, list[str]] = {}
        for arn, view in plan.dirty.items():
            by_count.setdefault(plan.count(view), []).append(arn)
        order = plan.index.order
        # tier 0: every schedulable instance without the group, minus the dirty ones (extras)
        hidden = sum(1 for arn in plan.dirty if arn in order and arn not in counts)
        size = len(order) - len(counts) - hidden
        zero = by_count.pop(0, [])
        skip = Either(counts, plan.dirty)
        if size > 0 and size * 8 < len(order):
            yield Members([a for a in order if a not in skip] + zero)
        elif size > 0 or zero:
            yield Members(order if size > 0 else (), skip, zero)
        buckets = plan.index.group_buckets(plan.group)
        for k in sorted(set(buckets) | set(by_count)):
            base = buckets.get(k)
            yield Members(base if base is not None else (), plan.dirty, by_count.get(k, ()))


class SpreadAttribute:
    """The values of an attribute whose instances run the fewest tasks of the group first."""

    name = SPREAD

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def tiers(self, plan: Plan, members: Members, needs: Resources) -> Iterator[Members]:
        counts = plan.value_counts(self.attribute)

        def key(view: InstanceView) -> int:
            return counts.get(attribute_value(view, self.attribute), 0)

        if not members.everything:
            yield from _explicit_tiers(plan, members, key)
            return
        buckets = plan.index.attribute_buckets(self.attribute)
        dirty_by_value: dict[str | None, list[str]] = {}
        for arn, view in plan.dirty.items():
            dirty_by_value.setdefault(attribute_value(view, self.attribute), []).append(arn)
        by_count: dict[int, list[str | None]] = {}
        for value in set(buckets) | set(dirty_by_value):
            by_count.setdefault(counts.get(value, 0), []).append(value)
        for k in sorted(by_count):
            values = by_count[k]
            base = _Concat([buckets[v] for v in values if v in buckets])
            extra = [arn for v in values for arn in dirty_by_value.get(v, ())]
            yield Members(base, plan.dirty, extra)


def scorers_for(strategy: Sequence[PlacementStrategy]) -> tuple[Scorer, ...]:
    """The chain of scorers for ``strategy``, cut at the first ``random``."""
    chain: list[Scorer] = []
    for s in strategy:
        if s.type == RANDOM:
            break
        if s.type == BINPACK:
            chain.append(Binpack(s.field or "memory"))
        elif s.field and s.field.startswith(ATTRIBUTE):
            chain.append(SpreadAttribute(s.field[len(ATTRIBUTE) :]))
        else:
            chain.append(SpreadInstances())
    return tuple(chain)


def pick(
    members: Members, feasible: Callable[[str], bool], rng: random.Random, busy: Container[str]
) -> str | None:
    """A random feasible member, preferring one that is not ``busy`` (an instance another decision
    of this process is committing to, or one another process placed on lately: see ``Snapshot``).

    Draws without replacement (a lazy Fisher-Yates shuffle), so the cost is the number of draws
    until a feasible one, not the tier's size. Busy members are passed over without checking them
    (a set lookup is cheaper than the filter chain); when no other member is feasible, the first
    feasible one passed over wins, so ``busy`` only orders equals and never hides an instance. After
    ``MAX_PASSED`` busy draws busy members count like the others: in a tier that is nearly all
    busy, drawing on through it for a free one costs more than the conflict it might avoid.
    """
    base, extra, skip = members.base, members.extra, members.skip
    n_base = len(base)
    n = n_base + len(extra)
    moved: dict[int, int] = {}
    passed: list[str] = []
    for i in range(n):
        j = i + int(rng.random() * (n - i))
        at = moved.get(j, j)
        moved[j] = moved.get(i, i)
        if at < n_base:
            arn = base[at]
            if arn in skip:
                continue
        else:
            arn = extra[at - n_base]
        if len(passed) < MAX_PASSED and arn in busy:
            passed.append(arn)
            continue
        if feasible(arn):
            return arn
    for arn in passed:
        if feasible(arn):
            return arn
    return None


def search(
    plan: Plan,
    chain: Sequence[Scorer],
    members: Members,
    needs: Resources,
    feasible: Callable[[str], bool],
    rng: random.Random,
) -> str | None:
    """The best feasible instance among ``members`` by ``chain``, ties broken at random."""
    if not chain:
        return pick(members, feasible, rng, plan.snapshot.busy)
    for tier in chain[0].tiers(plan, members, needs):
        found = search(plan, chain[1:], tier, needs, feasible, rng)
        if found is not None:
            return found
    return None
