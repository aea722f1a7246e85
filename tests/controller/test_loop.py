"""The controller loop against a real (in-memory) store: two controllers never both act on one
decision, and a stop decided on a stale view of a task is re-decided."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import replace

import orjson
import pytest

from dockyard.clock import SystemClock
from dockyard.controller.loop import LoopOptions, ServiceController
from dockyard.controller.model import ControllerSettings
from dockyard.domain.services import Service
from dockyard.domain.task_lifecycle import TaskReport, merge_report
from dockyard.domain.task_status import TaskStatus
from dockyard.placement import keys
from dockyard.placement.cache import ClusterCache
from dockyard.placement.commit import read_task, write_task
from dockyard.store.base import Conflict, Put
from dockyard.store.memory import MemoryStore
from tests.controller.factories import service, td
from tests.placement.factories import SCOPE, add_instance

SERVICE_KEY = f"/services/{SCOPE.account}/{SCOPE.region}/{SCOPE.cluster}/svc"
SETTINGS = ControllerSettings(settle_seconds=0.0)


async def put_service(store: MemoryStore, svc: Service) -> None:
    svc = replace(svc, cluster=SCOPE.cluster)
    await store.txn([], [Put(SERVICE_KEY, orjson.dumps(svc.to_document()))])


async def read_service(store: MemoryStore) -> Service:
    kv = await store.get(SERVICE_KEY)
    assert kv is not None
    return Service.from_document(orjson.loads(kv.value))


async def service_tasks(store: MemoryStore) -> list:  # type: ignore[type-arg]
    from dockyard.domain.tasks import Task

    page = await store.list(keys.prefix(keys.TASKS, SCOPE))
    return [Task.from_document(orjson.loads(kv.value)) for kv in page.kvs]


async def play_agent(store: MemoryStore, stop: asyncio.Event) -> None:
    """Every task becomes RUNNING; every task told to stop becomes STOPPED."""
    seq = 1
    while not stop.is_set():
        for t in await service_tasks(store):
            status = None
            if t.desired_status is TaskStatus.RUNNING and t.last_status < TaskStatus.RUNNING:
                status = TaskStatus.RUNNING
            elif t.desired_status is TaskStatus.STOPPED and t.last_status is not TaskStatus.STOPPED:
                status = TaskStatus.STOPPED
            if status is None:
                continue
            found = await read_task(store, SCOPE, t.id)
            assert found is not None
            seq += 1
            merged = merge_report(found[0], TaskReport(seq=seq, status=status), SystemClock().time())
            if merged.changed:
                with contextlib.suppress(Conflict):  # raced with a controller: the next pass reports again
                    await write_task(store, SCOPE, found[1], merged.task, release=merged.released)
        await asyncio.sleep(0.01)


@pytest.fixture
async def world():  # type: ignore[no-untyped-def]
    store = MemoryStore()
    for i in range(4):
        await add_instance(store, f"i{i}", cpu=100_000, memory=100_000)
    caches = [ClusterCache(store), ClusterCache(store)]
    for c in caches:
        c.start()
        await c.ready()
    yield store, caches
    for c in caches:
        await c.close()
    await store.close()


async def run_controllers(store, caches, until, timeout=20.0):  # type: ignore[no-untyped-def]
    controllers = [
        ServiceController(
            store, c, SystemClock(), SETTINGS, LoopOptions(rng=random.Random(i), coalesce_seconds=0)
        )
        for i, c in enumerate(caches)
    ]
    stop = asyncio.Event()
    jobs = [asyncio.create_task(c.run()) for c in controllers]
    jobs.append(asyncio.create_task(play_agent(store, stop)))
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await until():
            assert asyncio.get_running_loop().time() < deadline, "did not converge"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        for j in jobs:
            j.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
    return controllers


async def test_two_controllers_never_both_act_on_one_decision(world):  # type: ignore[no-untyped-def]
    store, caches = world
    await put_service(store, service(20, definition=td(1)))

    async def steady() -> bool:
        return (await read_service(store)).steady

    controllers = await run_controllers(store, caches, steady)
    tasks = await service_tasks(store)
    assert len(tasks) == 20, "a decision was acted on twice"  # nothing stopped, nothing replaced
    assert all(t.last_status is TaskStatus.RUNNING for t in tasks)
    assert sum(c.rounds for c in controllers) > 2


async def test_two_controllers_roll_a_deployment_within_the_bounds(world):  # type: ignore[no-untyped-def]
    store, caches = world
    first = service(12, minimum=50, maximum=150, definition=td(1))
    await put_service(store, first)

    async def steady() -> bool:
        return (await read_service(store)).steady

    await run_controllers(store, caches, steady)
    from tests.controller.factories import new_revision

    await put_service(store, replace(new_revision(await read_service(store)), cluster=SCOPE.cluster))
    peak = 0

    async def done() -> bool:
        nonlocal peak
        live = [
            t
            for t in await service_tasks(store)
            if t.desired_status is TaskStatus.RUNNING and t.last_status < TaskStatus.DEACTIVATING
        ]
        peak = max(peak, len(live))
        svc = await read_service(store)
        return svc.steady and len(svc.deployments) == 1

    await run_controllers(store, caches, done)
    assert peak <= 18  # floor(150% x 12)
    live = [t for t in await service_tasks(store) if t.desired_status is TaskStatus.RUNNING]
    assert len(live) == 12 and all(t.task_definition_arn.endswith(":2") for t in live)
