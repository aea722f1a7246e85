"""Batched report application (services/agent_reports.py): few transactions, CAS per task, re-read
only what conflicted, reservations released in the same transaction. In-process, on the memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace

import orjson
import pytest

from dockyard.clock import FakeClock
from dockyard.domain.container_instances import Allocation
from dockyard.domain.resources import Resources
from dockyard.domain.task_lifecycle import ContainerReport, TaskReport
from dockyard.domain.task_status import ContainerStatus, TaskStatus
from dockyard.domain.tasks import Container, Task
from dockyard.placement import keys
from dockyard.placement.cache import ClusterCache
from dockyard.placement.commit import MAX_TASK_WRITES
from dockyard.services.agent_reports import MISSING, apply_reports
from dockyard.services.context import Env
from dockyard.store.base import MAX_TXN_OPS, Compare, Conflict, Delete, Put, TxnResult
from dockyard.store.memory import MemoryStore
from tests.placement.factories import SCOPE, add_instance, instance_arn

NEEDS = Resources(128, 256)


class RecordingStore(MemoryStore):
    """Counts transactions (operations each); ``before_next_txn`` runs just before the next one."""

    def __init__(self) -> None:
        super().__init__(FakeClock())
        self.txns: list[int] = []
        self.conflicts = 0
        self.before_next_txn: Callable[[], Awaitable[object]] | None = None

    async def txn(
        self, compares: Sequence[Compare] = (), puts: Sequence[Put] = (), deletes: Sequence[Delete] = ()
    ) -> TxnResult:
        if self.before_next_txn is not None:
            interloper, self.before_next_txn = self.before_next_txn, None
            await interloper()
        self.txns.append(len(compares) + len(puts) + len(deletes))
        try:
            return await super().txn(compares, puts, deletes)
        except Conflict:
            self.conflicts += 1
            raise


@pytest.fixture
async def store() -> AsyncIterator[RecordingStore]:
    s = RecordingStore()
    yield s
    await s.close()


def task(n: int, instance_id: str = "a") -> Task:
    task_id = f"t{n:04d}"
    return Task(
        arn=f"arn:aws:ecs:us-east-1:000000000000:task/c/{task_id}",
        id=task_id,
        cluster="c",
        cluster_arn="arn:aws:ecs:us-east-1:000000000000:cluster/c",
        task_definition_arn="arn:aws:ecs:us-east-1:000000000000:task-definition/f:1",
        container_instance_arn=instance_arn(instance_id),
        instance_id=instance_id,
        containers=(Container("web", f"arn:c/{task_id}", "busybox"),),
        reservation=NEEDS,
        created_at=0.0,
        group="family:f",
    )


async def place(store: RecordingStore, tasks: list[Task], instance_id: str = "a") -> None:
    """The tasks' documents and their reservations, as placement would have committed them."""
    allocation = Allocation().with_tasks({t.id: t.reservation for t in tasks})
    puts = [Put(keys.allocation(SCOPE, instance_id), orjson.dumps(allocation.to_document()))]
    for start in range(0, len(tasks), 100):
        await store.txn(
            [],
            [Put(keys.task(SCOPE, t.id), orjson.dumps(t.to_document())) for t in tasks[start : start + 100]],
        )
    await store.txn([], puts)


async def setup(store: RecordingStore, count: int) -> tuple[Env, ClusterCache, list[Task]]:
    await add_instance(store, "a", cpu=128 * count, memory=256 * count)
    tasks = [task(n) for n in range(count)]
    await place(store, tasks)
    cache = ClusterCache(store)
    cache.start()
    await cache.ready()
    await cache.sync()
    store.txns.clear()
    return Env(store=store, clock=FakeClock()), cache, tasks


def running(seq: int) -> TaskReport:
    return TaskReport(
        seq=seq, status=TaskStatus.RUNNING, containers=(ContainerReport("web", ContainerStatus.RUNNING),)
    )


def stopped(seq: int) -> TaskReport:
    return TaskReport(
        seq=seq,
        status=TaskStatus.STOPPED,
        containers=(ContainerReport("web", ContainerStatus.STOPPED, exit_code=0),),
    )


async def stored(store: RecordingStore, t: Task) -> Task:
    kv = await store.get(keys.task(SCOPE, t.id))
    assert kv is not None
    return Task.from_document(orjson.loads(kv.value))


async def reserved(store: RecordingStore) -> set[str]:
    kv = await store.get(keys.allocation(SCOPE, "a"))
    assert kv is not None
    return set(Allocation.from_document(orjson.loads(kv.value)).tasks)


async def test_a_batch_commits_in_one_transaction_per_chunk(store: RecordingStore) -> None:
    env, cache, tasks = await setup(store, 150)
    try:
        items = [(t.id, running(1)) for t in tasks]
        items += [(tasks[0].id, running(1)), (tasks[1].id, running(2)), (None, running(1))]
        outcomes = await apply_reports(env, cache, SCOPE, "a", items)
        assert outcomes[:150] == [None] * 150
        assert outcomes[150:] == ["STALE", None, MISSING]  # duplicate dropped, newer merged, unknown
        chunks = -(-150 // MAX_TASK_WRITES)
        assert len(store.txns) == chunks and max(store.txns) <= MAX_TXN_OPS and store.conflicts == 0
        assert {(await stored(store, t)).last_status for t in tasks} == {TaskStatus.RUNNING}
        assert (await stored(store, tasks[1])).reported_seq == 2
    finally:
        await cache.close()


async def test_a_conflict_re_reads_and_re_merges_only_what_moved(store: RecordingStore) -> None:
    env, cache, tasks = await setup(store, 10)
    try:
        # another server stops task 3 between the cache's read and our transaction
        async def stop_elsewhere() -> None:
            t = replace(await stored(store, tasks[3]), desired_status=TaskStatus.STOPPED)
            await store.txn([], [Put(keys.task(SCOPE, t.id), orjson.dumps(t.to_document()))])

        store.before_next_txn = stop_elsewhere
        outcomes = await apply_reports(env, cache, SCOPE, "a", [(t.id, running(1)) for t in tasks])
        assert outcomes == [None] * 10
        assert store.conflicts == 1 and len(store.txns) == 3  # the interloper, the conflict, the retry
        merged = await stored(store, tasks[3])
        assert merged.desired_status is TaskStatus.STOPPED  # the other write is kept ...
        assert merged.reported_seq == 1 and merged.containers[0].last_status is ContainerStatus.RUNNING
        # ... and a retry of the same batch is stale, never applied twice
        store.txns.clear()
        again = await apply_reports(env, cache, SCOPE, "a", [(t.id, running(1)) for t in tasks])
        await cache.sync()
        assert again == ["STALE"] * 10 and store.txns == []
    finally:
        await cache.close()


async def test_stopped_reports_release_reservations_in_the_same_transaction(store: RecordingStore) -> None:
    env, cache, tasks = await setup(store, 6)
    try:
        # placement commits another task on the instance meanwhile: the allocation record moved
        extra = task(99)

        async def place_elsewhere() -> None:
            kv = await store.get(keys.allocation(SCOPE, "a"))
            assert kv is not None
            grown = Allocation.from_document(orjson.loads(kv.value)).with_tasks({extra.id: NEEDS})
            await store.txn(
                [Compare.unchanged(kv, kv.key)],
                [
                    Put(kv.key, orjson.dumps(grown.to_document())),
                    Put(keys.task(SCOPE, extra.id), orjson.dumps(extra.to_document())),
                ],
            )

        store.before_next_txn = place_elsewhere
        items = [(t.id, stopped(1)) for t in tasks[:4]] + [(tasks[4].id, running(1))]
        assert await apply_reports(env, cache, SCOPE, "a", items) == [None] * 5
        assert store.conflicts == 1
        assert await reserved(store) == {tasks[4].id, tasks[5].id, extra.id}
        for t in tasks[:4]:
            s = await stored(store, t)
            assert (s.last_status, s.desired_status) == (TaskStatus.STOPPED, TaskStatus.STOPPED)
    finally:
        await cache.close()


async def test_a_stale_cache_never_leaks_a_reservation(store: RecordingStore) -> None:
    """The cache has not seen the allocation record that holds the task yet: the release compares
    the record's revision, conflicts, re-reads and releases."""
    env, cache, tasks = await setup(store, 2)
    try:
        late = task(50)
        await cache.close()  # frozen: it will not see what follows
        await place(store, [*tasks, late])
        assert await apply_reports(env, cache, SCOPE, "a", [(late.id, stopped(1))]) == [None]
        assert late.id not in await reserved(store)
        assert (await stored(store, late)).last_status is TaskStatus.STOPPED
    finally:
        await cache.close()
