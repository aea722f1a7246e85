"""Service tasks behind load balancers: the gated lifecycle (pure), the reconciler's use of target
health (pure), and the controller's ACTIVATING / DEACTIVATING steps on an in-memory store."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from dockyard.clock import FakeClock
from dockyard.controller import events
from dockyard.controller.model import TARGET_HEALTHY, TARGET_INITIAL, TARGET_UNHEALTHY, TargetState
from dockyard.controller.reconcile import reconcile
from dockyard.controller.targets import TargetSteps
from dockyard.domain.deployments import RolloutState
from dockyard.domain.task_lifecycle import (
    LOAD_BALANCERS,
    TaskReport,
    activated,
    agent_desired_status,
    deactivated,
    desired_set_changed,
    merge_report,
    request_stop,
)
from dockyard.domain.task_status import HealthStatus, TaskStatus
from dockyard.domain.tasks import Task
from dockyard.lb import registrations
from dockyard.placement import keys
from dockyard.placement.cache import ClusterCache, Entry
from dockyard.store.base import Put
from dockyard.store.memory import MemoryStore
from tests.controller.factories import SETTINGS, T0, host, new_revision, service, task, td
from tests.lb.test_ecs_seam import TG_ARN, put_group
from tests.placement.factories import SCOPE, add_instance

GATED = (LOAD_BALANCERS,)
LB_WIRE = ({"targetGroupArn": TG_ARN, "containerName": "web", "containerPort": 80},)


def gated(t: Task) -> Task:
    return replace(t, gates=GATED)


# ---- the gated lifecycle (pure) -----------------------------------------------------------------------


def test_a_gated_task_waits_in_activating_and_deactivating():
    svc = service(1)
    t = gated(task(svc, status=TaskStatus.PENDING, started_at=None))
    running = merge_report(t, TaskReport(seq=1, status=TaskStatus.RUNNING, started_at=T0), T0).task
    assert running.last_status is TaskStatus.ACTIVATING  # not RUNNING before its targets are registered
    up = activated(running, T0 + 1)
    assert up.changed and up.task.last_status is TaskStatus.RUNNING and up.task.started_at == T0
    stopping = request_stop(up.task, reason=None, stop_code="UserInitiated", now=T0 + 2).task
    assert (stopping.last_status, stopping.desired_status) == (TaskStatus.DEACTIVATING, TaskStatus.STOPPED)
    # the agent keeps it running while its targets drain, and is not even woken for it
    assert agent_desired_status(stopping) is TaskStatus.RUNNING
    assert not desired_set_changed(up.task, stopping)
    later = merge_report(stopping, TaskReport(seq=2, status=TaskStatus.RUNNING), T0 + 3).task
    assert later.last_status is TaskStatus.DEACTIVATING
    done = deactivated(stopping, T0 + 5).task
    assert done.last_status is TaskStatus.STOPPING and agent_desired_status(done) is TaskStatus.STOPPED
    assert desired_set_changed(stopping, done)


def test_a_gated_task_stopped_before_it_ran_or_dying_is_not_held():
    svc = service(1)
    pending = gated(task(svc, status=TaskStatus.PENDING, started_at=None))
    stopped = request_stop(pending, reason=None, stop_code="UserInitiated", now=T0).task
    assert stopped.last_status is TaskStatus.STOPPING  # nothing was registered: nothing to drain
    running = gated(task(svc))
    died = merge_report(running, TaskReport(seq=1, status=TaskStatus.STOPPED), T0).task
    assert died.last_status is TaskStatus.STOPPED  # deregistered by the controller afterwards
    plain = task(svc, status=TaskStatus.PENDING, started_at=None)
    assert merge_report(plain, TaskReport(seq=1, status=TaskStatus.RUNNING), T0).task.last_status is (
        TaskStatus.RUNNING
    )


# ---- target health in the reconciler (pure) ----------------------------------------------------------


def test_a_balanced_task_counts_as_healthy_only_when_its_target_is():
    svc = service(2)
    tasks = [gated(task(svc)), gated(task(svc))]
    now = T0 + 100  # long past the settle time: only the targets decide
    initial = {t.id: TargetState(TARGET_INITIAL) for t in tasks}
    d = reconcile(svc, tasks, [host("h1")], now, SETTINGS, targets=initial)
    assert d.service.primary is not None and d.service.primary.rollout_state is RolloutState.IN_PROGRESS
    healthy = {t.id: TargetState(TARGET_HEALTHY) for t in tasks}
    d = reconcile(svc, tasks, [host("h1")], now, SETTINGS, targets=healthy)
    assert d.service.primary is not None and d.service.primary.rollout_state is RolloutState.COMPLETED


def test_a_rollout_stops_old_tasks_only_as_new_targets_turn_healthy():
    svc = new_revision(service(2, maximum=150))
    old = [gated(task(svc, dep=svc.deployments[1].id)) for _ in range(2)]
    new = gated(task(svc))
    tasks = [*old, new]
    targets = {t.id: TargetState(TARGET_HEALTHY) for t in old}
    targets[new.id] = TargetState(TARGET_INITIAL)
    d = reconcile(svc, tasks, [host("h1")], T0 + 100, SETTINGS, targets=targets)
    assert not d.stops  # 100% minimum healthy: the new task is RUNNING but its target is not healthy
    targets[new.id] = TargetState(TARGET_HEALTHY)
    d = reconcile(svc, tasks, [host("h1")], T0 + 100, SETTINGS, targets=targets)
    assert [s.task_id for s in d.stops] in ([old[0].id], [old[1].id])


def test_an_unhealthy_target_is_replaced_after_the_grace_period():
    svc = service(1, grace=30)
    t = gated(task(svc, started_at=T0))
    failing = {t.id: TargetState(TARGET_UNHEALTHY, TG_ARN)}
    d = reconcile(svc, [t], [host("h1")], T0 + 10, SETTINGS, targets=failing)
    assert not d.stops and d.wake_at == T0 + 30  # the grace period only delays the replacement
    d = reconcile(svc, [t], [host("h1")], T0 + 30, SETTINGS, targets=failing)
    assert [(s.task_id, s.reason) for s in d.stops] == [(t.id, events.elb_unhealthy_reason(TG_ARN))]
    assert d.start_count == 1  # replaced at once (maximumPercent 200)
    # a replaced task counts as a failed health check (the circuit breaker counts it)
    gone = request_stop(t, reason=d.stops[0].reason, stop_code=events.SCHEDULER_STOP_CODE, now=T0 + 30).task
    gone = replace(gone, last_status=TaskStatus.STOPPED, stopped_at=T0 + 40)
    d = reconcile(svc, [gone], [host("h1")], T0 + 41, SETTINGS)
    assert d.service.primary is not None and d.service.primary.failed_tasks == 1


def test_a_container_health_check_and_the_target_must_both_pass():
    svc = service(1, definition=td(health_check=True))
    t = gated(task(svc, health=HealthStatus.UNKNOWN))
    ok = {t.id: TargetState(TARGET_HEALTHY)}
    d = reconcile(svc, [t], [host("h1")], T0 + 100, SETTINGS, targets=ok)
    assert d.service.primary is not None and d.service.primary.rollout_state is RolloutState.IN_PROGRESS
    t = replace(t, health_status=HealthStatus.HEALTHY)
    d = reconcile(svc, [t], [host("h1")], T0 + 100, SETTINGS, targets=ok)
    assert d.service.primary is not None and d.service.primary.rollout_state is RolloutState.COMPLETED
    t = replace(t, health_status=HealthStatus.UNHEALTHY)
    d = reconcile(svc, [t], [host("h1")], T0 + 100, SETTINGS, targets=ok)
    assert [s.reason for s in d.stops] == [events.UNHEALTHY_REASON]


# ---- the controller's steps on a store --------------------------------------------------------------


class Steps:
    def __init__(self, store: MemoryStore, clock: FakeClock, cache: ClusterCache) -> None:
        self.store, self.clock, self.cache = store, clock, cache
        self.steps = TargetSteps(store, cache, clock)
        self.service = replace(service(1), load_balancers=LB_WIRE, cluster=SCOPE.cluster)

    async def put(self, t: Task) -> None:
        await self.store.txn([], [Put(keys.task(SCOPE, t.id), orjson.dumps(t.to_document()))])

    async def entries(self) -> list[Entry[Task]]:
        page = await self.store.list(keys.prefix(keys.TASKS, SCOPE))
        return [Entry(Task.from_document(orjson.loads(kv.value)), kv.mod_revision) for kv in page.kvs]

    async def run(self):  # type: ignore[no-untyped-def]
        await self.cache.sync()
        return await self.steps.run("svc", SCOPE, self.service, await self.entries())

    async def task(self, task_id: str) -> Task:
        return next(e.value for e in await self.entries() if e.value.id == task_id)

    async def target(self, port: int) -> str:
        [(_, _, health)] = await registrations.health(self.store, self.clock, TG_ARN, [_target(port)])
        return health.state


def _target(port: int) -> registrations.Target:
    return registrations.Target("i-h1", port)


def bound(t: Task, port: int) -> Task:
    c = t.containers[0]
    return replace(t, containers=(replace(c, network_bindings=({"containerPort": 80, "hostPort": port},)),))


@pytest.fixture
async def steps():  # type: ignore[no-untyped-def]
    clock = FakeClock(T0)
    store = MemoryStore(clock, lease_check_interval=None)
    await put_group(store)  # deregistration delay 30 s, a listener forwards to it
    await add_instance(store, "h1")
    cache = ClusterCache(store)
    cache.start()
    await cache.ready()
    yield Steps(store, clock, cache)
    await cache.close()


async def test_registered_while_activating_then_running(steps: Steps):
    t = gated(task(steps.service, status=TaskStatus.ACTIVATING, started_at=None))
    await steps.put(t)
    out = await steps.run()
    assert out.wake_at is not None  # no host port reported yet: asked again
    assert (await steps.task(t.id)).last_status is TaskStatus.ACTIVATING
    await steps.put(bound(t, 61001))
    out = await steps.run()
    assert (await steps.task(t.id)).last_status is TaskStatus.RUNNING
    assert await steps.target(61001) == "initial"  # registered, checks not decided yet
    out = await steps.run()
    assert out.targets == {t.id: TargetState(TARGET_INITIAL)}


async def test_drained_for_the_delay_before_the_agent_stops_it(steps: Steps):
    t = bound(gated(task(steps.service)), 61002)
    await registrations.register(steps.store, steps.clock, TG_ARN, [_target(61002)])
    stopping = request_stop(t, reason=None, stop_code="UserInitiated", now=T0).task
    await steps.put(stopping)
    out = await steps.run()
    assert out.wake_at == T0 + 30 and await steps.target(61002) == "draining"
    assert (await steps.task(t.id)).last_status is TaskStatus.DEACTIVATING
    steps.clock.advance(30)
    await steps.run()
    assert (await steps.task(t.id)).last_status is TaskStatus.STOPPING


async def test_a_task_that_died_is_deregistered_at_once_unless_its_port_was_taken(steps: Steps):
    dead = bound(gated(task(steps.service)), 61003)
    for port in (61003, 61004):
        await registrations.register(steps.store, steps.clock, TG_ARN, [_target(port)])
    await steps.put(merge_report(dead, TaskReport(seq=1, status=TaskStatus.STOPPED), T0).task)
    # an older STOPPED task whose host port a live task holds now
    old = replace(bound(gated(task(steps.service)), 61004), last_status=TaskStatus.STOPPED)
    await steps.put(replace(old, desired_status=TaskStatus.STOPPED))
    await steps.put(bound(gated(task(steps.service)), 61004))
    await steps.run()
    assert await steps.target(61003) == "draining"
    assert await steps.target(61004) == "initial"  # left alone
    await registrations.register(steps.store, steps.clock, TG_ARN, [_target(61003)])
    await steps.run()  # once per task: the port registered again (a new task) is not deregistered
    assert await steps.target(61003) == "initial"
