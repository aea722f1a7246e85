"""Instances indexed for placement, so a decision does not scan every instance.

``InstanceIndex`` holds one cluster's ``InstanceView``s and keeps, for the *schedulable* ones
(ACTIVE, agent connected: the only ones strategies rank):

- ``order``: every schedulable instance, indexable (random picks without a scan);
- ``sorted_by("cpu" | "memory")``: ``(remaining, arn)`` in ascending order, so ``binpack`` finds the
  fullest instance that fits with one bisection and stays exact. The lists are brought up to date
  when they are read: changes in between only note the instance, so clusters placing without
  ``binpack`` never pay for keeping them sorted, and one that does re-files an instance once per
  decision however often it changed;
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


def _same_place(old: InstanceView, new: InstanceView) -> bool:
    """Whether ``new`` is filed under the same id, schedulability and attributes as ``old`` (so only
    its remaining resources and group counts may need re-filing)."""
    return (
        old.id == new.id
        and old.schedulable == new.schedulable
        and (old.attributes is new.attributes or old.attributes == new.attributes)
    )


class InstanceIndex:
    def __init__(self, views: Iterable[InstanceView] = ()) -> None:
        self.views: dict[str, InstanceView] = {}
        self._ids: dict[str, str] = {}
        self.order = IndexedSet()
        self._sorted: dict[str, list[tuple[int, str]]] = {f: [] for f in FIELDS}
        self._in_sorted: dict[str, InstanceView] = {}  # arn -> the view its sorted entries were made from
        self._unsorted: set[str] = set()  # arns whose sorted entries may not match their view
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
        if self._unsorted:
            self._sort()
        return self._sorted[field]

    def _sort(self) -> None:
        """Re-file the noted instances in the sorted lists, as their current views say (all of
        them at once when many changed)."""
        if len(self._unsorted) * 8 > len(self.views):
            filed = {arn: v for arn, v in self.views.items() if v.schedulable}
            for field in FIELDS:
                self._sorted[field] = sorted((_key(v, field), arn) for arn, v in filed.items())
            self._in_sorted = filed
            self._unsorted.clear()
            return
        for arn in self._unsorted:
            old = self._in_sorted.pop(arn, None)
            new = self.views.get(arn)
            if new is not None and not new.schedulable:
                new = None
            for field in FIELDS:
                was = _key(old, field) if old is not None else None
                now = _key(new, field) if new is not None else None
                if was == now:
                    continue
                entries = self._sorted[field]
                if was is not None:
                    i = bisect.bisect_left(entries, (was, arn))
                    if i < len(entries) and entries[i][1] == arn:
                        del entries[i]
                if now is not None:
                    bisect.insort(entries, (now, arn))
            if new is not None:
                self._in_sorted[arn] = new
        self._unsorted.clear()

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
            if _same_place(old, view):  # e.g. a placement or a running count: re-file what moved
                self.views[view.arn] = view
                if view.schedulable:
                    self._refile(old, view)
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
        self._unsorted.add(arn)
        for group, count in view.groups.items():
            self._file_group(arn, group, count)
        for name, buckets in self._attributes.items():
            buckets.setdefault(attribute_value(view, name), IndexedSet()).add(arn)

    def _refile(self, old: InstanceView, new: InstanceView) -> None:
        """Move a schedulable instance's entries from ``old``'s keys to ``new``'s (same arn)."""
        arn = new.arn
        if old.remaining is not new.remaining:
            self._unsorted.add(arn)
        if old.groups is not new.groups and old.groups != new.groups:
            for group in old.groups.keys() | new.groups.keys():
                was, now = old.groups.get(group, 0), new.groups.get(group, 0)
                if was != now:
                    self._unfile_group(arn, group, was)
                    self._file_group(arn, group, now)

    def _file_group(self, arn: str, group: str, count: int) -> None:
        if count > 0:
            self._group_counts.setdefault(group, {})[arn] = count
            self._group_buckets.setdefault(group, {}).setdefault(count, IndexedSet()).add(arn)

    def _unfile_group(self, arn: str, group: str, count: int) -> None:
        if count <= 0:
            return
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

    def _unindex(self, view: InstanceView) -> None:
        if not view.schedulable:
            return
        arn = view.arn
        self.order.discard(arn)
        self._unsorted.add(arn)
        for group, count in view.groups.items():
            self._unfile_group(arn, group, count)
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
