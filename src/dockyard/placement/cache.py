"""The cluster cache: instances, allocation records, liveness and tasks, kept current by the watch.

Like Kubernetes' informers: ``store.list`` each kind, then ``store.watch("/", min(revisions) + 1)``
and apply every change in revision order; a ``Compacted`` watch re-lists. Keys the lists already
showed newer are skipped, so replaying the gap between the lists converges. Schedulers, the agent's
Poll and the counts users see read this, never the store, on every decision.

Read-your-writes: ``sync()`` waits until the cache has applied the store's current revision (one
cheap ``revision()`` read), so a handler that just committed, or a client that just got an answer,
sees its own writes.

Per cluster the cache also keeps the scheduler's ``InstanceIndex``: one ``InstanceView`` per
instance (registration + allocation record + liveness + running count), re-built for just the
instance a change touches, so a placement decision reads an index that is already current instead
of building a snapshot of every instance.

Writes of this process come back through the watch like anyone's; ``expect`` lets the writer hand
over the object it encoded, which the cache keeps instead of decoding the same bytes again (only
when the stored bytes are exactly those). The same hint tells this process's placements from other
processes': ``elsewhere`` (``placement.elsewhere``) remembers the instances another process placed
on lately, which this process's decisions then take last among equals. An instance's view is
re-built in full only when its registration changed; an allocation record's change re-derives what
that record gives (status, remaining resources, group counts), a running count or liveness change
replaces just that.

Per instance the cache keeps the **desired-set revision** (docs/agent-protocol.md section 2): the
highest store revision that changed the instance's registration or its desired set as the agent
must learn it (``task_lifecycle.desired_set_changed``: a task added, its desiredStatus changed, a
task removed by the control plane; not the agent's own reports). A task first seen (at load, or
created) always counts, so a re-listed cache errs towards an early answer, never a missed one. Store
revisions are global and increase, so the value is comparable across restarts and server replicas,
and a ``ChangeEvent`` per instance (``placement.change_event``) wakes the long-polls waiting on it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

from dockyard.clock import Clock, SystemClock
from dockyard.domain.container_instances import Allocation, ContainerInstance, InstanceStatus
from dockyard.domain.resources import remaining
from dockyard.domain.task_lifecycle import desired_set_changed, in_desired_set
from dockyard.domain.task_status import TaskStatus
from dockyard.domain.tasks import Task
from dockyard.placement import keys
from dockyard.placement.change_event import ChangeEvent
from dockyard.placement.elsewhere import PlacedElsewhere
from dockyard.placement.inflight import InFlight, PlacementStats
from dockyard.placement.keys import Scope
from dockyard.scheduler import InstanceIndex, InstanceView
from dockyard.store.base import Compacted, EventType, KeyValue, StateStore, StoreClosed, WatchEvent

log = logging.getLogger("dockyard.placement.cache")


T = TypeVar("T")
MAX_EXPECTED = 65_536  # ClusterCache.expect's hints held at most (beyond: forgotten, decoded instead)


@dataclass(slots=True)
class Entry(Generic[T]):
    """A document as the cache holds it: decoded value plus the store's revision and version."""

    value: T
    mod_revision: int
    version: int = 1
    lease: int = 0


@dataclass
class ScopeState:
    """Everything the cache knows of one cluster."""

    instances: dict[str, Entry[ContainerInstance]] = field(default_factory=dict)
    allocations: dict[str, Entry[Allocation]] = field(default_factory=dict)
    liveness: dict[str, Entry[None]] = field(default_factory=dict)  # lease = the agent's lease
    tasks: dict[str, Entry[Task]] = field(default_factory=dict)
    tasks_by_instance: dict[str, set[str]] = field(default_factory=dict)
    status_counts: Counter[TaskStatus] = field(default_factory=Counter)
    desired_revision: dict[str, int] = field(default_factory=dict)
    running: Counter[str] = field(default_factory=Counter)  # instance id -> RUNNING tasks
    index: InstanceIndex = field(default_factory=InstanceIndex)
    arns: dict[str, str] = field(default_factory=dict)  # instance id -> ARN (what the index is keyed by)
    # instance id -> the (registration, allocation) entries its view in the index was built from
    built: dict[str, tuple[Entry[ContainerInstance], Entry[Allocation]]] = field(default_factory=dict)

    def revision_of(self, kind: str, name: str) -> int:
        """The mod_revision the cache holds for a document (0: none)."""
        table: dict[str, Any]
        if kind == keys.TASKS:
            table = self.tasks
        elif kind == keys.ALLOCATIONS:
            table = self.allocations
        elif kind == keys.INSTANCES:
            table = self.instances
        else:
            table = self.liveness
        entry = table.get(name)
        return entry.mod_revision if entry is not None else 0


class ClusterCache:
    def __init__(self, store: StateStore, *, retry_delay: float = 0.5, clock: Clock | None = None) -> None:
        self._store = store
        self._retry_delay = retry_delay
        self._scopes: dict[Scope, ScopeState] = {}
        self._events: dict[tuple[Scope, str], ChangeEvent] = {}
        self._applied = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._loading = False
        self.inflight = InFlight()  # decisions of this process being committed (placement.commit)
        self.elsewhere = PlacedElsewhere(clock or SystemClock())  # other processes' recent placements
        self._expected: dict[str, tuple[bytes, Task | Allocation]] = {}
        self._heads: dict[str, tuple[str, Scope]] = {}  # a key's part before its name -> (kind, scope)
        self.stats = PlacementStats()

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="cluster-cache")

    async def ready(self, timeout: float = 30.0) -> None:
        if not self._ready.is_set():  # (wait_for costs a task: not on every request once loaded)
            await asyncio.wait_for(self._ready.wait(), timeout)
        self._check_running()

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None

    @property
    def applied_revision(self) -> int:
        return self._applied

    async def sync(self, timeout: float = 10.0) -> None:
        """Wait until every write committed before this call is applied (read-your-writes)."""
        await self.wait_applied(await self._store.revision(), timeout)

    async def wait_applied(self, revision: int, timeout: float = 10.0) -> None:
        self._check_running()
        if self._applied >= revision:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (revision, next(self._tiebreak), future))
        # A timer that fails the future rather than ``asyncio.timeout``: a wait that is woken costs
        # about half as much (and every commit of a placement or a report waits here). ``_advance``
        # and the failure path skip the futures that are done already.
        timer = loop.call_later(timeout, _expire, future, revision, timeout)
        try:
            await future
        finally:
            timer.cancel()

    def _check_running(self) -> None:
        if self._failure is not None:
            raise RuntimeError("the cluster cache stopped") from self._failure

    # ---- reads -----------------------------------------------------------------------------------

    def scope(self, scope: Scope) -> ScopeState:
        return self._scopes.get(scope) or ScopeState()

    def instances(self, scope: Scope) -> list[Entry[ContainerInstance]]:
        return list(self.scope(scope).instances.values())

    def instance(self, scope: Scope, instance_id: str) -> Entry[ContainerInstance] | None:
        return self.scope(scope).instances.get(instance_id)

    def allocation(self, scope: Scope, instance_id: str) -> Entry[Allocation] | None:
        return self.scope(scope).allocations.get(instance_id)

    def connected(self, scope: Scope, instance_id: str) -> bool:
        return instance_id in self.scope(scope).liveness

    def lease_of(self, scope: Scope, instance_id: str) -> int | None:
        e = self.scope(scope).liveness.get(instance_id)
        return e.lease if e is not None else None

    def task(self, scope: Scope, task_id: str) -> Task | None:
        e = self.scope(scope).tasks.get(task_id)
        return e.value if e is not None else None

    def tasks(self, scope: Scope) -> Iterator[Task]:
        for e in self.scope(scope).tasks.values():
            yield e.value

    def task_entries(self, scope: Scope) -> list[Entry[Task]]:
        return list(self.scope(scope).tasks.values())

    def tasks_on(self, scope: Scope, instance_id: str) -> list[Task]:
        st = self.scope(scope)
        return [st.tasks[t].value for t in sorted(st.tasks_by_instance.get(instance_id, ()))]

    def task_counts(self, scope: Scope) -> Counter[TaskStatus]:
        """How many tasks of the cluster are in each lastStatus."""
        return Counter(self.scope(scope).status_counts)

    def desired_revision(self, scope: Scope, instance_id: str) -> int:
        """The instance's desired-set revision (``desired`` without the tasks)."""
        return self.scope(scope).desired_revision.get(instance_id, 0)

    def desired(self, scope: Scope, instance_id: str) -> tuple[int, list[Task]]:
        """The instance's desired-set revision and the tasks the agent is told about."""
        st = self.scope(scope)
        tasks = [t for t in self.tasks_on(scope, instance_id) if in_desired_set(t)]
        return st.desired_revision.get(instance_id, 0), tasks

    def change_event(self, scope: Scope, instance_id: str) -> ChangeEvent:
        """Set at the next change to the instance's desired set (take it before reading ``desired``)."""
        key = (scope, instance_id)
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = ChangeEvent()
        return event

    def scopes(self) -> Iterable[Scope]:
        return list(self._scopes)

    def index(self, scope: Scope) -> InstanceIndex:
        """The scheduler's index of the cluster's instances (current as of ``applied_revision``)."""
        st = self._scopes.get(scope)
        if st is None:
            st = self._scopes[scope] = ScopeState()
        return st.index

    def view(
        self, scope: Scope, instance_id: str, allocation: Entry[Allocation] | None = None
    ) -> InstanceView | None:
        """The instance as placement sees it; with ``allocation``, as that record says (a fresher
        copy read from the store after a conflict)."""
        st = self.scope(scope)
        entry = st.instances.get(instance_id)
        alloc = allocation if allocation is not None else st.allocations.get(instance_id)
        if entry is None or alloc is None:
            return None
        return instance_view(entry.value, alloc, instance_id in st.liveness, st.running[instance_id])

    # ---- feeding ---------------------------------------------------------------------------------

    def expect(self, key: str, raw: bytes, value: Task | Allocation) -> None:
        """This process is about to write ``raw``, the document of ``value``, at ``key``: when the
        watch delivers exactly those bytes there, the cache keeps ``value`` instead of decoding them
        again. A hint whose write never happens is dropped at the key's next change (or when too
        many pile up); a hint never changes what the cache holds, only what decoding it costs."""
        if len(self._expected) >= MAX_EXPECTED:
            self._expected.clear()
        self._expected[key] = (raw, value)

    def _decoded(self, kv: KeyValue, kind: type[T]) -> T | None:
        hint = self._expected.pop(kv.key, None) if self._expected else None
        if hint is not None and hint[0] == kv.value and isinstance(hint[1], kind):
            return hint[1]
        return None

    async def _run(self) -> None:
        try:
            while True:
                try:
                    start = await self._load()
                    self._ready.set()
                    async for event in self._store.watch("/", start + 1):
                        self.apply(event)
                except Compacted as e:
                    log.info("cluster cache fell behind compaction (%s); re-listing", e)
                except StoreClosed:
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("cluster cache watch failed; re-listing")
                    await asyncio.sleep(self._retry_delay)
        except BaseException as e:
            self._failure = e
            for _, _, future in self._waiters:
                if not future.done():
                    future.set_exception(RuntimeError("the cluster cache stopped"))
            self._ready.set()
            raise

    async def _load(self) -> int:
        """List every kind and rebuild the state; the revision the watch continues from."""
        listed = {kind: await self._store.list(keys.prefix(kind)) for kind in sorted(keys.KINDS)}
        start = min(r.revision for r in listed.values())
        previous = self._scopes
        self._scopes = {}
        self._loading = True
        try:
            for kind, result in listed.items():
                for kv in result.kvs:
                    parsed = keys.parse(kv.key)
                    if parsed is not None:
                        self._put(kind, parsed[1], parsed[2], kv)
        finally:
            self._loading = False
        for st in self._scopes.values():
            for instance_id in list(st.instances):
                self._refresh(st, instance_id)
        for scope, old in previous.items():  # the desired-set revision never goes back
            st = self._scopes.setdefault(scope, ScopeState())
            for instance_id, rev in old.desired_revision.items():
                st.desired_revision[instance_id] = max(rev, st.desired_revision.get(instance_id, 0))
        for event in self._events.values():
            event.set()
        self._events.clear()
        self._advance(start)
        return start

    def apply(self, event: WatchEvent) -> None:
        """Apply one change from the watch (public for tests that feed the cache by hand)."""
        kv = event.kv
        head, _, name = kv.key.rpartition("/")
        where = self._heads.get(head) if name else None
        if where is None:
            where = self._followed(kv.key, head)
        if where is not None:
            kind, scope = where
            if event.type is EventType.PUT:
                self._put(kind, scope, name, kv)
            else:
                self._delete(kind, scope, name, kv.mod_revision)
        self._advance(kv.mod_revision)

    def _followed(self, key: str, head: str) -> tuple[str, Scope] | None:
        """(kind, scope) of ``key`` when the cache follows its kind, else None. Remembered in
        ``_heads`` by ``head`` (the key without its name: one entry per kind and cluster), where
        ``apply`` finds it for the next keys, rather than parsing every key it applies."""
        parsed = keys.parse(key)
        if parsed is None or parsed[0] not in keys.KINDS:
            return None
        where = self._heads[head] = parsed[0], parsed[1]
        return where

    def _advance(self, revision: int) -> None:
        if revision > self._applied:
            self._applied = revision
        while self._waiters and self._waiters[0][0] <= self._applied:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    def _put(self, kind: str, scope: Scope, name: str, kv: KeyValue) -> None:
        st = self._scopes.get(scope)
        if st is None:
            st = self._scopes[scope] = ScopeState()
        revision = kv.mod_revision
        try:
            if kind == keys.TASKS:
                old = st.tasks.get(name)
                if old is not None and old.mod_revision >= revision:
                    return  # the list already showed something newer
                task = self._decoded(kv, Task) or Task.from_document(orjson.loads(kv.value))
                before = old.value if old is not None else None
                st.tasks[name] = Entry(task, revision, kv.version)
                self._index_task(st, before, task)
                if before is None or desired_set_changed(before, task):
                    self._changed(scope, st, task.instance_id, revision)
                    if before is not None and before.instance_id != task.instance_id:
                        self._changed(scope, st, before.instance_id, revision)
            elif kind == keys.ALLOCATIONS:
                previous = st.allocations.get(name)
                if previous is not None and previous.mod_revision >= revision:
                    return
                mine = self._decoded(kv, Allocation)
                allocation = mine or Allocation.from_document(orjson.loads(kv.value))
                st.allocations[name] = Entry(allocation, revision, kv.version)
                self._refresh(st, name)
                arn = st.arns.get(name)
                if arn is not None and not self._loading and _grew(previous, allocation):
                    self.elsewhere.placed(scope, arn, elsewhere=mine is None)
            elif kind == keys.INSTANCES:
                if st.revision_of(kind, name) >= revision:
                    return
                instance = ContainerInstance.from_document(orjson.loads(kv.value))
                st.instances[name] = Entry(instance, revision, kv.version)
                self._refresh(st, name)
                self._changed(scope, st, name, revision)
            else:
                if st.revision_of(kind, name) >= revision:
                    return
                st.liveness[name] = Entry(None, revision, kv.version, kv.lease)
                self._refresh(st, name)
        except Exception:
            log.exception("cluster cache: cannot decode %s; ignoring it", kv.key)

    def _delete(self, kind: str, scope: Scope, name: str, revision: int) -> None:
        st = self._scopes.get(scope)
        if st is None or not 0 < st.revision_of(kind, name) < revision:
            return  # absent, or the list already showed something newer
        if kind == keys.LIVENESS:
            del st.liveness[name]
            self._refresh(st, name)
        elif kind == keys.ALLOCATIONS:
            del st.allocations[name]
            self._refresh(st, name)
        elif kind == keys.INSTANCES:
            del st.instances[name]
            self._refresh(st, name)
            self._changed(scope, st, name, revision)
        else:
            task = st.tasks.pop(name).value
            self._index_task(st, task, None)
            if desired_set_changed(task, None):
                self._changed(scope, st, task.instance_id, revision)

    def _index_task(self, st: ScopeState, old: Task | None, new: Task | None) -> None:
        if old is not None and new is not None and old.instance_id == new.instance_id:
            self._restatus(st, old, new)  # the common update: the task stays where it is
            return
        if old is not None:
            st.status_counts[old.last_status] -= 1
            on = st.tasks_by_instance.get(old.instance_id)
            if on is not None:
                on.discard(old.id)
                if not on:
                    del st.tasks_by_instance[old.instance_id]
        if new is not None:
            st.status_counts[new.last_status] += 1
            st.tasks_by_instance.setdefault(new.instance_id, set()).add(new.id)
        was = old is not None and old.last_status is TaskStatus.RUNNING
        now = new is not None and new.last_status is TaskStatus.RUNNING
        if was and old is not None:
            st.running[old.instance_id] -= 1
            if st.running[old.instance_id] <= 0:
                del st.running[old.instance_id]
        if now and new is not None:
            st.running[new.instance_id] += 1
        if was != now or (was and old is not None and new is not None and old.instance_id != new.instance_id):
            for instance_id in {t.instance_id for t in (old, new) if t is not None}:
                self._refresh(st, instance_id)

    def _restatus(self, st: ScopeState, old: Task, new: Task) -> None:
        """``_index_task`` for a task updated on the same instance: only its status may move."""
        was, now = old.last_status, new.last_status
        if was is now:
            return
        st.status_counts[was] -= 1
        st.status_counts[now] += 1
        if was is TaskStatus.RUNNING:
            st.running[new.instance_id] -= 1
            if st.running[new.instance_id] <= 0:
                del st.running[new.instance_id]
        elif now is TaskStatus.RUNNING:
            st.running[new.instance_id] += 1
        else:
            return
        self._refresh(st, new.instance_id)

    def _refresh(self, st: ScopeState, instance_id: str) -> None:
        """Re-build one instance's view in the scheduler's index.

        When its registration and allocation record are the entries the view was built from (a
        task's RUNNING count or the liveness moved), only those fields change: the attribute map,
        remaining resources and group counts are kept, and the index re-files nothing."""
        if self._loading:
            return
        entry = st.instances.get(instance_id)
        alloc = st.allocations.get(instance_id)
        if entry is None or alloc is None:
            st.built.pop(instance_id, None)
            arn = st.arns.pop(instance_id, None)
            if arn is not None:
                st.index.remove(arn)
            return
        arn = st.arns[instance_id] = entry.value.arn
        running = st.running[instance_id]
        connected = instance_id in st.liveness
        old = st.index.views.get(arn)
        built = st.built.get(instance_id)
        if old is not None and built is not None and built[0] is entry and built[1] is alloc:
            agent_connected = connected and alloc.value.status is not InstanceStatus.INACTIVE
            if old.running_tasks == running and old.agent_connected == agent_connected:
                return
            view = old.with_running(running, agent_connected)
        else:
            same_instance = built is not None and built[0] is entry
            view = instance_view(entry.value, alloc, connected, running, old if same_instance else None)
            st.built[instance_id] = (entry, alloc)
        st.index.put(view)

    def _changed(self, scope: Scope, st: ScopeState, instance_id: str, revision: int) -> None:
        if revision > st.desired_revision.get(instance_id, 0):
            st.desired_revision[instance_id] = revision
        event = self._events.pop((scope, instance_id), None)
        if event is not None:
            event.set()


def _expire(future: asyncio.Future[None], revision: int, timeout: float) -> None:
    """``wait_applied``'s timeout."""
    if not future.done():
        future.set_exception(
            TimeoutError(f"the cluster cache did not reach revision {revision} in {timeout}s")
        )


def _grew(before: Entry[Allocation] | None, after: Allocation) -> bool:
    """Whether ``after`` reserves a task ``before`` did not: a placement (not a release)."""
    if not after.tasks:
        return False
    return before is None or not after.tasks.keys() <= before.value.tasks.keys()


def instance_view(
    instance: ContainerInstance,
    alloc: Entry[Allocation],
    connected: bool,
    running: int,
    like: InstanceView | None = None,
) -> InstanceView:
    """What placement (and the cluster query language) sees of one instance; ``like``: a view built
    from the same registration, whose registration fields (attribute map and all) are kept rather
    than derived again."""
    allocation = alloc.value
    status = allocation.status
    agent_connected = connected and status is not InstanceStatus.INACTIVE
    left = remaining(instance.registered, allocation.reserved())
    groups = allocation.group_counts()
    if like is not None:
        return like.with_allocation(status.value, agent_connected, left, groups, running, alloc.mod_revision)
    return InstanceView(
        arn=instance.arn,
        id=instance.id,
        status=status.value,
        agent_connected=agent_connected,
        registered=instance.registered,
        remaining=left,
        attributes=instance.attribute_map(),
        running_tasks=running,
        ec2_instance_id=instance.ec2_instance_id,
        groups=groups,
        registered_at=instance.registered_at,
        agent_version=str(instance.version_info.get("agentVersion") or ""),
        revision=alloc.mod_revision,
    )


def registered_instances(cache: ClusterCache, scope: Scope) -> int:
    """ACTIVE and DRAINING instances (what DescribeClusters counts and DeleteCluster refuses)."""
    return sum(1 for e in cache.instances(scope) if e.value.status is not InstanceStatus.INACTIVE)
