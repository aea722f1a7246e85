"""Property tests: whatever happens, the reconciler keeps the deployment bounds and converges.

A simulated world (``factories.World``) plays the agents: tasks start after a delay, stop after a
delay, and some crash. Hypothesis drives scale changes, new revisions, crashes and draining
instances. At every decision:

- the stops never take the healthy count below ceil(minimumHealthyPercent x desired / 100) (unless
  it already was below: a crash is not the controller's doing);
- after the stops and starts, tasks in RUNNING or PENDING never exceed
  floor(maximumPercent x desired / 100);

and once the disturbances end, the service reaches a steady state: one COMPLETED deployment and
exactly ``desired`` healthy tasks of it, none on a draining instance.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dockyard.controller.model import Decision
from dockyard.domain.container_instances import InstanceStatus
from dockyard.domain.task_status import StopCode, TaskStatus

from .factories import SETTINGS, World, host, service

OPS = st.one_of(
    st.tuples(st.just("scale"), st.integers(0, 8)),
    st.tuples(st.just("deploy"), st.just(0)),
    st.tuples(st.just("crash"), st.integers(0, 20)),
    st.tuples(st.just("drain"), st.integers(0, 2)),
    st.tuples(st.just("wait"), st.integers(1, 30)),
)


def check_step(world: World) -> Decision:
    """Decide once and apply it, checking the bounds around the stops and the starts."""
    d = world.decide()
    svc = d.service
    desired = svc.desired_count
    config = svc.deployment_configuration
    min_healthy, max_live = config.min_healthy(desired), config.max_tasks(desired)
    healthy_before = world.healthy()
    world.apply(replace(d, starts=()))
    assert world.healthy() >= min(min_healthy, healthy_before), "stops broke minimumHealthyPercent"
    world.apply(replace(d, stops=()))
    assert len(world.live()) <= max_live, "starts broke maximumPercent"
    return d


def progresses(config_min: int, config_max: int, desired: int) -> bool:
    """Tasks can be replaced (a new revision, a draining instance): ECS too is stuck when
    ceil(min% x desired) == floor(max% x desired)."""
    svc = service(desired, minimum=config_min, maximum=config_max)
    c = svc.deployment_configuration
    return desired == 0 or c.max_tasks(desired) > c.min_healthy(desired)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    desired=st.integers(0, 6),
    minimum=st.sampled_from([0, 25, 50, 75, 100]),
    maximum=st.sampled_from([100, 125, 150, 200]),
    hosts=st.integers(1, 3),
    ops=st.lists(OPS, max_size=8),
    seed=st.integers(0, 1000),
)
def test_bounds_hold_and_the_service_converges(desired, minimum, maximum, hosts, ops, seed):  # type: ignore[no-untyped-def]
    world = World(service(desired, minimum=minimum, maximum=maximum), [host(f"h{i}") for i in range(hosts)])
    world.start_delay = 1.0 + seed % 3
    world.stop_delay = 0.5 + seed % 2
    for _ in range(4):
        check_step(world)
        world.advance(SETTINGS.settle_seconds / 2)
    for kind, arg in ops:
        if kind == "scale":
            world.scale(arg)
        elif kind == "deploy":
            assume(progresses(minimum, maximum, world.service.desired_count))
            world.deploy(len(world.service.deployments) + 10 + arg)
        elif kind == "crash":
            live = world.live()
            if live:
                t = live[arg % len(live)]
                world.tasks[t.id] = replace(
                    t,
                    last_status=TaskStatus.STOPPED,
                    desired_status=TaskStatus.STOPPED,
                    stop_code=StopCode.ESSENTIAL_CONTAINER_EXITED,
                    stopped_at=world.now,
                    execution_stopped_at=world.now,
                )
        elif kind == "drain":
            active = [h for h in world.hosts if h.status is InstanceStatus.ACTIVE]
            if len(active) > 1:
                victim = active[arg % len(active)]
                world.hosts = [
                    replace(h, status=InstanceStatus.DRAINING) if h is victim else h for h in world.hosts
                ]
        else:
            world.advance(arg)
        for _ in range(3):
            check_step(world)
            world.advance(seed % 7 + 1)
    moving = len(world.service.deployments) > 1 or any(
        h.status is InstanceStatus.DRAINING for h in world.hosts
    )
    if moving:  # replacing tasks needs room between the bounds
        assume(progresses(minimum, maximum, world.service.desired_count))
    for _ in range(80):
        if world.steady() and world.service.steady:
            break
        check_step(world)
        world.advance(SETTINGS.settle_seconds / 3)
    assert world.steady(), (world.service.deployments, [(t.id, t.last_status) for t in world.live()])
    assert world.service.steady
    draining = {h.id for h in world.hosts if h.status is InstanceStatus.DRAINING}
    primary = world.service.primary
    assert primary is not None
    assert all(t.started_by == primary.id and t.instance_id not in draining for t in world.live())


@settings(max_examples=60, deadline=None)
@given(desired=st.integers(1, 10), breaker=st.booleans())
def test_a_broken_revision_never_takes_the_healthy_count_below_the_minimum(desired, breaker):  # type: ignore[no-untyped-def]
    world = World(service(desired, minimum=50, maximum=200, breaker=breaker, rollback=breaker), [host("h1")])
    for _ in range(6):
        check_step(world)
        world.advance(SETTINGS.settle_seconds)
    assert world.steady()
    world.deploy(2)
    world.crash_revisions = frozenset({world.service.primary.task_definition_arn})  # type: ignore[union-attr]
    for _ in range(200):
        check_step(world)
        assert world.healthy() >= world.service.deployment_configuration.min_healthy(desired)
        world.advance(2.0)
        if breaker and world.steady():
            break
    if breaker:  # rolled back to the revision that worked
        assert world.steady() and world.service.primary.task_definition_arn.endswith(":1")  # type: ignore[union-attr]
    else:  # launches back off: far fewer than one per step
        started = sum(1 for t in world.tasks.values() if t.task_definition_arn.endswith(":2"))
        assert started < 40
