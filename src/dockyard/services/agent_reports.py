"""Applying an agent's task reports: merged per task, stored in as few transactions as possible.

One ``Report`` (or a ``Poll`` carrying reports, docs/agent-protocol.md section 3) is about the tasks
of one container instance. The reports are grouped per task, in request order, and a task's reports
merge one after the other (``task_lifecycle.merge_report``: seq check, monotonic statuses) into one
new state. The tasks are then written in chunks of ``commit.MAX_TASK_WRITES``, ONE transaction per
chunk (``commit.write_tasks``): a compare-and-swap on each task document against the revision its new
state was merged from, and on the instance's allocation record when a task of the chunk reached
STOPPED and its reservation is released.

The merge starts from the cluster cache's copies (a task the cache does not hold yet is read from
the store), so applying a report normally reads nothing. A copy that is stale makes its chunk
conflict; then only the documents the conflict names are re-read from the store, their tasks
re-merged from the original reports, and the chunk tried again (bounded, jittered after the first
retries). A stale or duplicate report (seq not above the stored one) is dropped, never applied.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

import orjson

from dockyard.domain.container_instances import Allocation
from dockyard.domain.errors import ServerError
from dockyard.domain.task_lifecycle import TaskReport, merge_report
from dockyard.domain.tasks import Task
from dockyard.placement.cache import ClusterCache, Entry
from dockyard.placement.commit import MAX_TASK_WRITES, TaskWrite, write_tasks
from dockyard.services import keys
from dockyard.services.context import Env
from dockyard.store.base import Conflict

MISSING = "MISSING"
MAX_ATTEMPTS = 64

# one report of a batch: the task's id in the cluster (None: not a task of this cluster) and the report
Item = tuple[str | None, TaskReport]


async def apply_reports(
    env: Env,
    cache: ClusterCache,
    scope: keys.Scope,
    instance_id: str,
    items: Sequence[Item],
    check: Callable[[Task], None] = lambda _t: None,
) -> list[str | None]:
    """Apply ``items`` (reports about tasks of ``instance_id``); per item, why it was dropped
    (``STALE``, ``MISSING``) or None when it was applied. ``check`` may refuse a task (raise) before
    anything of its chunk is written."""
    outcomes, _ = await apply_reports_at(env, cache, scope, instance_id, items, check)
    return outcomes


async def apply_reports_at(
    env: Env,
    cache: ClusterCache,
    scope: keys.Scope,
    instance_id: str,
    items: Sequence[Item],
    check: Callable[[Task], None] = lambda _t: None,
) -> tuple[list[str | None], int]:
    """``apply_reports``, and the highest store revision its transactions created (0: none wrote):
    once the cache has applied that, it holds every write committed before the call."""
    outcomes: list[str | None] = [MISSING] * len(items)
    order: dict[str, list[int]] = {}
    for i, (task_id, _) in enumerate(items):
        if task_id is not None:
            order.setdefault(task_id, []).append(i)
    task_ids = list(order)
    written = 0
    for start in range(0, len(task_ids), MAX_TASK_WRITES):
        chunk = _Chunk(env, cache, scope, instance_id, task_ids[start : start + MAX_TASK_WRITES])
        written = max(written, await chunk.apply(order, items, outcomes, check))
    return outcomes, written


class _Chunk:
    """Up to ``MAX_TASK_WRITES`` tasks of one instance, written in one transaction."""

    def __init__(
        self, env: Env, cache: ClusterCache, scope: keys.Scope, instance_id: str, task_ids: list[str]
    ) -> None:
        self.env = env
        self.cache = cache
        self.scope = scope
        self.instance_id = instance_id
        self.task_ids = task_ids
        cached = cache.scope(scope).tasks
        self.bases: dict[str, Entry[Task] | None] = {t: cached.get(t) for t in task_ids}
        self.allocation = cache.allocation(scope, instance_id)

    async def apply(
        self,
        order: dict[str, list[int]],
        items: Sequence[Item],
        outcomes: list[str | None],
        check: Callable[[Task], None],
    ) -> int:
        """Merge and write the chunk's tasks; the revision the write created (0: nothing to write)."""
        for task_id, base in list(self.bases.items()):
            if base is None:  # not applied by the cache yet (or unknown): the store decides
                await self._read_task(task_id)
        for attempt in range(MAX_ATTEMPTS):
            now = self.env.clock.time()
            writes: list[TaskWrite] = []
            for task_id in self.task_ids:
                base = self.bases[task_id]
                if base is None:
                    for i in order[task_id]:
                        outcomes[i] = MISSING
                    continue
                check(base.value)
                task, changed, released = base.value, False, False
                for i in order[task_id]:
                    merged = merge_report(task, items[i][1], now)
                    outcomes[i] = None if merged.accepted else merged.reason
                    if merged.changed:
                        task, changed, released = merged.task, True, released or merged.released
                if changed:
                    writes.append(TaskWrite(task, base.mod_revision, released))
            if not writes:
                return 0
            try:
                done = await write_tasks(self.env.store, self.scope, writes, self.allocation, self.cache)
                return done.revision
            except Conflict as conflict:
                await self._re_read(set(conflict.keys), [w.task.id for w in writes])
            if attempt >= 2:
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
        raise ServerError("too many concurrent updates; retry the request")

    async def _re_read(self, moved: set[str], written: list[str]) -> None:
        """Fresh copies of what the conflict names (of everything written, if it names nothing)."""
        alloc_key = keys.allocation(self.scope, self.instance_id)
        for task_id in written:
            if not moved or keys.task(self.scope, task_id) in moved:
                await self._read_task(task_id)
        if not moved or alloc_key in moved:
            kv = await self.env.store.get(alloc_key)
            self.allocation = (
                Entry(Allocation.from_document(orjson.loads(kv.value)), kv.mod_revision, kv.version)
                if kv is not None
                else None
            )

    async def _read_task(self, task_id: str) -> None:
        kv = await self.env.store.get(keys.task(self.scope, task_id))
        self.bases[task_id] = (
            Entry(Task.from_document(orjson.loads(kv.value)), kv.mod_revision, kv.version)
            if kv is not None
            else None
        )
