"""Instances indexed for placement, so a decision does not scan every instance.

``InstanceIndex`` holds one cluster's ``InstanceView``s and keeps, for the *schedulable* ones
(ACTIVE, agent connected: the only ones strategies rank):

- ``order``: every schedulable instance, indexable (random picks without a scan);
- ``sorted_by("cpu" | "memory")``: ``(remaining, arn)`` in ascending order, so ``binpack`` finds the
  fullest instance that fits with one bisection and stays exact;
- ``group_counts(group)`` / ``group_buckets(group)``: reserving tasks of a group per instance, and
  the instances bucketed by that count, for ``spread`` and ``distinctInstance``;
- ``attribute_buckets(name)``: instances by attribute value, built on first use and kept current,
  for ``spread`` on ``attribute:NAME``.

It is mutated only by ``put``/``remove`` (placement's cache calls them as the store's watch delivers
changes) and read by ``place()``, which never mutates it: what a decision adds lives in its own plan.
``Snapshot`` is what ``place()`` reads: the index plus a few fresher views (``overrides``) and the
instances likely contended (``busy``: other in-flight decisions are committing to them, or another
scheduler placed on them lately), chosen last among equals.
"""

from __future__ import annotations

import bisect
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from typing import overload

from dockyard.scheduler.model import InstanceView

FIELDS = ("cpu", "memory")


class IndexedSet(Sequence[str]):
    """An insertion-ordered set of strings with O(1) add, discard and indexing (swap-remove)."""

    __slots__ = ("_items", "_pos")

    def __init__(self) -> None:
        self._items: list[str] = []
        self._pos: dict[str, int] = {}

    def add(self, item: str) -> None:
        if item not in self._pos:
            self._pos[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: str) -> None:
        pos = self._pos.pop(item, None)
        if pos is None:
            return
        last = self._items.pop()
        if pos < len(self._items):
            self._items[pos] = last
            self._pos[last] = pos

    def __contains__(self, item: object) -> bool:
        return item in self._pos

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        return self._items[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)


def _key(view: InstanceView, field: str) -> int:
    return view.remaining.cpu if field == "cpu" else view.remaining.memory


def attribute_value(view: InstanceView, name: str) -> str | None:
    """The instance's value of attribute ``name``; None when it has none (missing or valueless)."""
    return view.attributes.get(name) or None


def _same_filing(old: InstanceView, new: InstanceView) -> bool:
    """Whether ``new`` sits exactly where ``old`` does in every structure the index keeps."""
    return (
        old.id == new.id
        and old.schedulable == new.schedulable
        and old.remaining == new.remaining
        and (old.groups is new.groups or old.groups == new.groups)
        and (old.attributes is new.attributes or old.attributes == new.attributes)
    )


class InstanceIndex:
    def __init__(self, views: Iterable[InstanceView] = ()) -> None:
        self.views: dict[str, InstanceView] = {}
        self._ids: dict[str, str] = {}
        self.order = IndexedSet()
        self._sorted: dict[str, list[tuple[int, str]]] = {f: [] for f in FIELDS}
        self._group_counts: dict[str, dict[str, int]] = {}
        self._group_buckets: dict[str, dict[int, IndexedSet]] = {}
        self._attributes: dict[str, dict[str | None, IndexedSet]] = {}
        for view in views:
            self.put(view)

    # ---- reads ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.views)

    def get(self, arn: str) -> InstanceView | None:
        return self.views.get(arn)

    def find(self, ref: str) -> InstanceView | None:
        """The instance with ARN or id ``ref``."""
        view = self.views.get(ref)
        if view is None and ref in self._ids:
            view = self.views.get(self._ids[ref])
        return view

    def sorted_by(self, field: str) -> Sequence[tuple[int, str]]:
        return self._sorted[field]

    def group_counts(self, group: str) -> Mapping[str, int]:
        return self._group_counts.get(group, {})

    def group_buckets(self, group: str) -> Mapping[int, IndexedSet]:
        return self._group_buckets.get(group, {})

    def attribute_buckets(self, name: str) -> Mapping[str | None, IndexedSet]:
        buckets = self._attributes.get(name)
        if buckets is None:
            buckets = self._attributes[name] = {}
            for arn in self.order:
                buckets.setdefault(attribute_value(self.views[arn], name), IndexedSet()).add(arn)
        return buckets

    # ---- writes -----------------------------------------------------------------------------

    def put(self, view: InstanceView) -> None:
        old = self.views.get(view.arn)
        if old is not None:
            if _same_filing(old, view):  # e.g. only the running count moved: nothing to re-file
                self.views[view.arn] = view
                return
            self._unindex(old)
        self.views[view.arn] = view
        self._ids[view.id] = view.arn
        self._index(view)

    def remove(self, arn: str) -> None:
        old = self.views.pop(arn, None)
        if old is not None:
            self._unindex(old)
            self._ids.pop(old.id, None)

    def _index(self, view: InstanceView) -> None:
        if not view.schedulable:
            return
        arn = view.arn
        self.order.add(arn)
        for field in FIELDS:
            bisect.insort(self._sorted[field], (_key(view, field), arn))
        for group, count in view.groups.items():
            if count > 0:
                self._group_counts.setdefault(group, {})[arn] = count
                self._group_buckets.setdefault(group, {}).setdefault(count, IndexedSet()).add(arn)
        for name, buckets in self._attributes.items():
            buckets.setdefault(attribute_value(view, name), IndexedSet()).add(arn)

    def _unindex(self, view: InstanceView) -> None:
        if not view.schedulable:
            return
        arn = view.arn
        self.order.discard(arn)
        for field in FIELDS:
            entries = self._sorted[field]
            i = bisect.bisect_left(entries, (_key(view, field), arn))
            if i < len(entries) and entries[i][1] == arn:
                del entries[i]
        for group, count in view.groups.items():
            if count <= 0:
                continue
            counts = self._group_counts.get(group, {})
            counts.pop(arn, None)
            buckets = self._group_buckets.get(group, {})
            bucket = buckets.get(count)
            if bucket is not None:
                bucket.discard(arn)
                if not bucket:
                    del buckets[count]
            if not counts:
                self._group_counts.pop(group, None)
                self._group_buckets.pop(group, None)
        for name, by_value in self._attributes.items():
            value = attribute_value(view, name)
            members = by_value.get(value)
            if members is not None:
                members.discard(arn)
                if not members:
                    del by_value[value]


class Snapshot:
    """What one ``place()`` call reads: the index, fresher views of a few instances, and the
    instances likely contended (``busy``: only ever checked with ``in``; among equally good
    candidates they come last, so concurrent schedulers spread out instead of colliding).

    ``Snapshot(views)`` indexes ``views`` itself (tests, benchmarks); placement passes the cache's
    live index with ``index=`` instead, so building a snapshot costs O(overrides), not O(instances).
    """

    def __init__(
        self,
        instances: Iterable[InstanceView] = (),
        *,
        index: InstanceIndex | None = None,
        overrides: Mapping[str, InstanceView] | None = None,
        busy: Container[str] = frozenset(),
    ) -> None:
        self.index = index if index is not None else InstanceIndex(instances)
        self.overrides: dict[str, InstanceView] = dict(overrides or {})
        self.busy = busy

    def view(self, arn: str) -> InstanceView | None:
        return self.overrides.get(arn) or self.index.get(arn)

    @property
    def instances(self) -> tuple[InstanceView, ...]:
        """Every instance as this snapshot sees it (O(instances): failure reports, tests)."""
        seen = [self.overrides.get(arn, view) for arn, view in self.index.views.items()]
        seen += [v for arn, v in self.overrides.items() if arn not in self.index.views]
        return tuple(seen)

    def find(self, ref: str) -> InstanceView | None:
        """The instance with ARN or id ``ref``."""
        found = self.index.find(ref)
        if found is not None:
            return self.overrides.get(found.arn, found)
        for view in self.overrides.values():
            if ref in (view.arn, view.id):
                return view
        return None
