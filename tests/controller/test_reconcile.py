"""Truth tables for the pure service reconciler: one situation in, the expected decision out."""

from __future__ import annotations

from dataclasses import replace

from dockyard.controller import events
from dockyard.controller.model import Start
from dockyard.controller.reconcile import reconcile
from dockyard.domain.container_instances import InstanceStatus
from dockyard.domain.deployments import RolloutState, completed, failure_threshold
from dockyard.domain.services import ServiceStatus, draining, scaled
from dockyard.domain.task_status import HealthStatus, TaskStatus

from .factories import SETTINGS, T0, World, failed_task, host, new_revision, service, task, td

HOSTS = [host("h1"), host("h2")]
SETTLED = T0 + SETTINGS.settle_seconds  # when tasks started at T0 count as healthy


def decide(svc, tasks, now=SETTLED, hosts=HOSTS):  # type: ignore[no-untyped-def]
    return reconcile(svc, tasks, hosts, now, SETTINGS, lambda: "id")


def messages(svc):  # type: ignore[no-untyped-def]
    return [e.message for e in svc.events]


def steady_service(desired=3, **kw):  # type: ignore[no-untyped-def]
    svc = service(desired, **kw)
    primary = svc.primary
    svc = replace(svc, deployments=(completed(primary, T0),), steady=True)
    return svc, [task(svc, on=f"h{1 + i % 2}") for i in range(desired)]


def test_new_service_starts_its_desired_count():
    svc = service(3)
    d = decide(svc, [])
    assert d.starts == (Start(svc.primary.id, 3),) and not d.stops


def test_all_healthy_completes_the_deployment_and_reports_a_steady_state():
    svc = service(3)
    tasks = [task(svc) for _ in range(3)]
    d = decide(svc, tasks)
    assert not d.starts and not d.stops and d.write
    assert d.service.primary.rollout_state is RolloutState.COMPLETED
    assert messages(d.service)[:2] == [
        events.steady("svc"),
        events.deployment_completed("svc", svc.primary.id),
    ]
    again = decide(d.service, tasks)
    assert again.idle  # nothing repeats


def test_running_but_not_settled_waits_until_the_settle_time():
    svc = service(2)
    tasks = [task(svc, started_at=T0 + 5) for _ in range(2)]
    d = decide(svc, tasks, now=T0 + 6)
    assert d.idle and d.wake_at == T0 + 5 + SETTINGS.settle_seconds
    assert d.service.primary.rollout_state is RolloutState.IN_PROGRESS


def test_scale_in_stops_the_surplus_and_says_so():
    svc, tasks = steady_service(3)
    d = decide(scaled(svc, 1, T0), tasks)
    assert len(d.stops) == 2 and not d.starts
    assert messages(d.service)[0] == events.stopped("svc", [s.task_id for s in d.stops])
    assert all(s.reason == events.scaling_reason(svc.primary.id) for s in d.stops)


def test_a_task_that_stopped_is_replaced():
    svc, tasks = steady_service(3)
    gone = replace(tasks[0], last_status=TaskStatus.STOPPED, desired_status=TaskStatus.STOPPED)
    d = decide(svc, [gone, *tasks[1:]], now=SETTLED + 100)
    assert d.starts == (Start(svc.primary.id, 1),) and not d.stops


def test_rolling_update_100_200_starts_new_before_stopping_old():
    svc, old = steady_service(3)
    svc = new_revision(svc)
    d = decide(svc, old, now=SETTLED + 1)
    assert d.starts == (Start(svc.primary.id, 3),) and not d.stops
    new = [task(svc, started_at=SETTLED + 2) for _ in range(3)]
    waiting = decide(svc, old + new, now=SETTLED + 3)
    assert waiting.idle and waiting.wake_at == SETTLED + 2 + SETTINGS.settle_seconds
    later = decide(svc, old + new, now=SETTLED + 2 + SETTINGS.settle_seconds)
    assert {s.task_id for s in later.stops} == {t.id for t in old} and not later.starts


def test_rolling_update_50_100_stops_half_then_starts_in_the_room_left():
    svc, old = steady_service(4, minimum=50, maximum=100)
    svc = new_revision(svc)
    d = decide(svc, old, now=SETTLED + 1)
    assert len(d.stops) == 2 and d.starts == (Start(svc.primary.id, 2),)


def test_rolling_update_0_100_replaces_everything_at_once():
    svc, old = steady_service(3, minimum=0, maximum=100)
    svc = new_revision(svc)
    d = decide(svc, old, now=SETTLED + 1)
    assert len(d.stops) == 3 and d.starts == (Start(svc.primary.id, 3),)


def test_100_100_cannot_make_progress_and_says_why_once():
    svc, old = steady_service(2, minimum=100, maximum=100)
    svc = new_revision(svc)
    d = decide(svc, old, now=SETTLED + 1)
    assert not d.stops and not d.starts and messages(d.service)[0] == events.stuck("svc")
    assert decide(d.service, old, now=SETTLED + 2).idle


def test_unhealthy_task_is_replaced_only_after_the_grace_period():
    checked = td(1, health_check=True)
    svc = service(2, definition=checked, grace=30)
    ok = task(svc, health=HealthStatus.HEALTHY)
    sick = task(svc, health=HealthStatus.UNHEALTHY, started_at=T0)
    within = decide(svc, [ok, sick], now=T0 + 10)
    assert not within.stops and within.wake_at == T0 + 30
    after = decide(svc, [ok, sick], now=T0 + 31)
    assert [s.task_id for s in after.stops] == [sick.id] and after.stops[0].reason == events.UNHEALTHY_REASON
    assert after.starts == (Start(svc.primary.id, 1),)


def test_health_checked_task_is_healthy_only_when_its_checks_pass():
    checked = td(1, health_check=True)
    svc = service(1, definition=checked)
    unknown = task(svc, health=HealthStatus.UNKNOWN)
    assert decide(svc, [unknown], now=T0 + 1000).service.primary.rollout_state is RolloutState.IN_PROGRESS
    healthy = replace(unknown, health_status=HealthStatus.HEALTHY)
    assert decide(svc, [healthy], now=T0 + 1).service.primary.rollout_state is RolloutState.COMPLETED


def test_tasks_on_a_draining_instance_are_replaced_within_the_bounds():
    svc, tasks = steady_service(2)
    hosts = [host("h1", InstanceStatus.DRAINING), host("h2")]
    d = decide(svc, tasks, hosts=hosts)
    on_h1 = [t for t in tasks if t.instance_id == "h1"]
    assert d.starts == (Start(svc.primary.id, len(on_h1)),) and not d.stops  # min 100%: start first
    new = [task(svc, on="h2", started_at=T0) for _ in on_h1]
    d2 = decide(svc, tasks + new, hosts=hosts)
    assert {s.task_id for s in d2.stops} == {t.id for t in on_h1}


def test_tasks_of_a_long_disconnected_agent_are_stopped_at_once_and_replaced():
    svc, tasks = steady_service(2)
    hosts = [host("h1", connected=False, disconnected_since=T0), host("h2")]
    early = decide(svc, tasks, now=T0 + 30, hosts=hosts)
    assert not early.stops and early.wake_at == T0 + SETTINGS.disconnect_grace_seconds
    late = decide(svc, tasks, now=T0 + 61, hosts=hosts)
    lost = [t.id for t in tasks if t.instance_id == "h1"]
    assert [s.task_id for s in late.stops] == lost and all(s.at_once for s in late.stops)
    assert late.starts == (Start(svc.primary.id, len(lost)),)


def test_circuit_breaker_fails_the_deployment_and_rolls_back():
    svc, old = steady_service(3, breaker=True, rollback=True)
    svc = new_revision(svc)
    bad = svc.primary
    fails = [failed_task(svc, at=SETTLED + i) for i in range(failure_threshold(3))]
    d = decide(svc, old + fails, now=SETTLED + 10)
    assert d.write and not d.starts
    back = d.service.primary
    assert back.id != bad.id and back.rollout_state is RolloutState.IN_PROGRESS
    gone = d.service.deployment(bad.id)
    assert gone.rollout_state is RolloutState.FAILED and gone.status.value == "ACTIVE"
    assert gone.failed_tasks == 3
    assert messages(d.service)[:2] == [
        events.rolling_back("svc", back.id),
        events.deployment_failed("svc", bad.id),
    ]
    assert d.service.task_definition_arn == back.task_definition_arn
    # the next step keeps the old tasks and, once the failed deployment has nothing live, completes
    d2 = decide(d.service, old + fails, now=SETTLED + 11)
    assert d2.service.primary.rollout_state is RolloutState.COMPLETED and len(d2.service.deployments) == 1


def test_circuit_breaker_without_rollback_freezes_the_service():
    svc, old = steady_service(3, breaker=True)
    svc = new_revision(svc)
    fails = [failed_task(svc, at=SETTLED + i) for i in range(3)]
    d = decide(svc, old + fails, now=SETTLED + 10)
    assert d.service.primary.rollout_state is RolloutState.FAILED
    d2 = decide(d.service, old + fails, now=SETTLED + 20)
    assert not d2.starts and not d2.stops


def test_a_healthy_task_resets_the_breaker_count():
    svc = service(6, breaker=True)
    early = [failed_task(svc, at=T0 + i) for i in range(2)]
    good = task(svc, started_at=T0 + 5)  # healthy from T0 + 15
    late = [failed_task(svc, at=T0 + 20 + i) for i in range(2)]
    d = decide(svc, [*early, good, *late], now=T0 + 30)
    assert d.service.primary.rollout_state is RolloutState.IN_PROGRESS
    assert d.service.primary.failed_tasks == 4


def test_crash_loop_backs_off_and_says_so_once():
    svc = service(1)
    fails = [failed_task(svc, at=T0 + i) for i in range(SETTINGS.backoff_after)]
    last = T0 + SETTINGS.backoff_after - 1 + 0.5
    d = decide(svc, fails, now=last + 1)
    assert not d.starts and d.wake_at == last + SETTINGS.backoff_seconds
    assert messages(d.service)[0] == events.throttled("svc")
    again = decide(d.service, fails, now=last + 2)
    assert not again.starts and not again.write
    after = decide(d.service, fails, now=last + SETTINGS.backoff_seconds)
    assert after.starts == (Start(svc.primary.id, 1),)
    more = [*fails, failed_task(svc, at=last + 6)]
    held = decide(d.service, more, now=last + 7)
    assert held.wake_at == last + 6.5 + 2 * SETTINGS.backoff_seconds  # doubled


def test_a_new_task_definition_is_not_throttled():
    svc = service(1)
    fails = [failed_task(svc, at=T0 + i) for i in range(5)]
    svc = new_revision(svc)
    assert decide(svc, fails, now=T0 + 6).starts == (Start(svc.primary.id, 1),)


def test_daemon_runs_one_task_on_each_active_instance():
    svc = service(daemon=True)
    hosts = [host("h1"), host("h2"), host("h3", InstanceStatus.DRAINING)]
    d = decide(svc, [], hosts=hosts)
    assert sorted(s.instance_id for s in d.starts) == ["h1", "h2"] and d.service.desired_count == 2
    tasks = [task(d.service, on="h1"), task(d.service, on="h2"), task(d.service, on="h3")]
    joined = [*hosts, host("h4")]
    d2 = decide(d.service, tasks, hosts=joined)
    assert [s.instance_id for s in d2.starts] == ["h4"]
    assert [s.task_id for s in d2.stops] == [tasks[2].id]  # the draining instance's task goes
    assert d2.service.desired_count == 3


def test_daemon_rollout_stops_old_then_starts_new_per_instance():
    svc = service(daemon=True)
    hosts = [host("h1"), host("h2")]
    svc = scaled(svc, 2, T0)
    old = [task(svc, on="h1"), task(svc, on="h2")]
    svc = new_revision(svc)
    d = decide(svc, old, hosts=hosts)
    assert len(d.stops) == 2 and not d.starts  # min 0%: stop both; the instances are still busy
    stopping = [replace(t, desired_status=TaskStatus.STOPPED, last_status=TaskStatus.STOPPING) for t in old]
    assert not decide(d.service, stopping, hosts=hosts).starts
    stopped = [replace(t, last_status=TaskStatus.STOPPED) for t in stopping]
    assert len(decide(d.service, stopped, hosts=hosts).starts) == 2


def test_daemon_skips_instances_that_are_not_members():
    svc = service(daemon=True)
    hosts = [host("h1"), host("h2", eligible=False)]
    d = decide(svc, [], hosts=hosts)
    assert [s.instance_id for s in d.starts] == ["h1"]


def test_deleting_a_service_stops_its_tasks_then_makes_it_inactive():
    svc, tasks = steady_service(2)
    gone = draining(svc, T0)
    d = decide(gone, tasks)
    assert len(d.stops) == 2 and not d.starts
    stopping = [replace(t, desired_status=TaskStatus.STOPPED, last_status=TaskStatus.STOPPING) for t in tasks]
    assert decide(d.service, stopping).idle
    stopped = [replace(t, last_status=TaskStatus.STOPPED) for t in stopping]
    done = decide(d.service, stopped)
    assert done.service.status is ServiceStatus.INACTIVE and done.write


def test_events_are_newest_first_and_bounded():
    svc = service(1)
    for i in range(150):
        svc = events.add(svc, [events.started("svc", [f"t{i}"])], T0 + i, lambda: "id")
    shown = [e.message for e in svc.events]
    assert len(shown) == SETTINGS.max_events
    assert shown[0] == events.started("svc", ["t149"]) and shown[-1] == events.started("svc", ["t50"])


def test_replacing_lost_tasks_keeps_the_bounds():
    world = World(service(4, minimum=50, maximum=100), [host("h1"), host("h2")])
    for _ in range(10):
        world.apply(world.decide())
        world.advance(SETTINGS.settle_seconds)
    assert world.steady()
    world.hosts = [host("h1", connected=False, disconnected_since=world.now), host("h2")]
    for _ in range(20):
        d = world.decide()
        world.apply(d)
        assert len(world.live()) <= 4
        world.advance(SETTINGS.settle_seconds / 2)
    assert world.steady() and all(t.instance_id == "h2" for t in world.live())
