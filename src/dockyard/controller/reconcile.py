"""The service reconciler: desired state vs the tasks that exist -> what to stop and start (pure).

    reconcile(service, tasks, instances, now, settings, new_id, targets) -> Decision

One call decides one step; the loop commits it (compare-and-swap on the service document) and calls
again on the next change. Like Nomad's reconciler it has no I/O: time, instances, ids and the load
balancers' view of each task's targets (``targets``) are inputs.

Order of a step:

1. **lost tasks** — on an instance that is gone, INACTIVE, or whose agent has been disconnected for
   ``disconnect_grace_seconds`` — are marked STOPPED at once (their agent cannot stop them; if it comes
   back it stops what is no longer in its desired set) and, being no longer live, replaced;
2. a **DRAINING** service stops all its tasks and becomes INACTIVE when none is left;
3. the **circuit breaker**: a PRIMARY deployment IN_PROGRESS with as many consecutive failures as
   its threshold becomes FAILED; with ``rollback``, the last COMPLETED deployment becomes PRIMARY
   again. A change of deployments is a step of its own (the next step plans on the new state);
4. the **plan** (REPLICA or DAEMON): tasks failing health checks (container or load balancer) past
   the grace period are replaced;
   surplus tasks (older deployments, tasks on DRAINING instances, more than desired) are stopped —
   unhealthy ones freely, healthy ones only while ``healthy >= ceil(minimumHealthyPercent x desired
   / 100)`` stays true; then tasks are started while ``live <= floor(maximumPercent x desired / 100)``
   stays true, unless the launch back-off holds them. Stops commit before starts, so every moment in
   between keeps both bounds;
5. **rollout state**: when exactly the desired number of PRIMARY tasks are live and healthy and
   nothing else is, the deployment is COMPLETED, drained deployments leave the list, and the service
   reports a steady state.

A FAILED PRIMARY (no rollback possible) launches nothing and stops no older task: the service stays
as it is until the user updates it, as ECS does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from dockyard.domain.container_instances import InstanceStatus
from dockyard.domain.deployments import (
    Deployment,
    DeploymentStatus,
    RolloutState,
    completed,
    failed,
    failure_threshold,
    promoted,
    rolled_back_reason,
)
from dockyard.domain.services import SchedulingStrategy, Service, ServiceStatus, inactive
from dockyard.domain.task_status import TaskStatus
from dockyard.domain.tasks import Task

from . import events
from .model import ControllerSettings, Decision, Host, NewId, Start, Stop, TargetState
from .rollout import Assessed, assess, failures, has_health_check, next_launch, rollback_target


def _uuid() -> str:
    return str(uuid.uuid4())


@dataclass
class _Plan:
    stops: list[Stop] = field(default_factory=list)
    starts: list[Start] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    wake: list[float] = field(default_factory=list)
    settled: bool = False  # nothing to do and everything desired is live and healthy
    desired: int = 0  # DAEMON: the number of instances that should run one task
    remaining: dict[str, int] = field(default_factory=dict)  # live tasks per deployment after the step


def reconcile(
    service: Service,
    tasks: Sequence[Task],
    instances: Sequence[Host],
    now: float,
    settings: ControllerSettings | None = None,
    new_id: NewId = _uuid,
    targets: Mapping[str, TargetState] | None = None,
) -> Decision:
    settings = settings or ControllerSettings()
    targets = targets or {}
    if service.status is ServiceStatus.INACTIVE:
        return Decision(service)
    hosts = {h.id: h for h in instances}
    grace = service.health_check_grace_period
    checked = {d.id: has_health_check(d.task_definition) for d in service.deployments}
    assessed = [
        assess(
            t,
            t.started_by if t.started_by in checked else None,
            checked=checked.get(t.started_by or "", False),
            settings=settings,
            grace_period=grace,
            now=now,
            target=targets.get(t.id),
        )
        for t in tasks
    ]
    plan = _Plan()
    lost = _lost(assessed, hosts, now, settings, plan)

    if service.status is ServiceStatus.DRAINING:
        return _drain(service, assessed, lost, plan, now, settings, new_id)

    counted = _count_failures(service, assessed, now)
    lost_stops = [events.stopped(service.name, [s.task_id for s in plan.stops])] if plan.stops else []
    tripped = _breaker(counted, assessed, now, plan)
    if tripped is not None:  # a change of deployments is a step of its own
        return Decision(
            events.add(tripped, [*lost_stops, *plan.messages], now, new_id, settings.max_events),
            stops=tuple(plan.stops),
            wake_at=_first(plan.wake),
            write=True,
        )

    primary = counted.primary
    if primary is None:  # not a state the use cases make; nothing sensible to do
        return Decision(service, stops=tuple(plan.stops))
    if service.scheduling_strategy is SchedulingStrategy.DAEMON:
        _plan_daemon(counted, primary, assessed, lost, hosts, now, settings, plan)
    else:
        _plan_replica(counted, primary, assessed, lost, hosts, now, settings, plan)

    stopped = [s.task_id for s in plan.stops]
    if stopped:
        plan.messages.insert(0, events.stopped(service.name, stopped))
    nxt = events.add(_rollout(counted, primary, plan, now), plan.messages, now, new_id, settings.max_events)
    write = nxt != service
    if write or plan.stops or plan.starts:
        nxt = _soft(nxt, primary, plan)
    return Decision(
        nxt,
        stops=tuple(plan.stops),
        starts=tuple(plan.starts),
        wake_at=_first(plan.wake),
        write=write,
    )


# ---- steps ------------------------------------------------------------------------------------------


def _first(times: list[float]) -> float | None:
    return min(times) if times else None


def _lost(
    assessed: list[Assessed], hosts: dict[str, Host], now: float, settings: ControllerSettings, plan: _Plan
) -> set[str]:
    """Tasks not yet STOPPED whose agent cannot stop them; they are stopped at once."""
    lost: set[str] = set()
    grace = settings.disconnect_grace_seconds
    for a in assessed:
        if a.task.last_status is TaskStatus.STOPPED:
            continue
        host = hosts.get(a.instance_id)
        gone = host is None or host.status is InstanceStatus.INACTIVE
        if not gone and host is not None and not host.connected:
            since = host.disconnected_since if host.disconnected_since is not None else now
            if now >= since + grace:
                gone = True
            elif a.live:
                plan.wake.append(since + grace)
        if gone:
            lost.add(a.id)
            plan.stops.append(Stop(a.id, events.disconnected_reason(grace), at_once=True))
    return lost


def _drain(
    service: Service,
    assessed: list[Assessed],
    lost: set[str],
    plan: _Plan,
    now: float,
    settings: ControllerSettings,
    new_id: NewId,
) -> Decision:
    primary = service.primary
    reason = events.scaling_reason(primary.id) if primary is not None else "Service is being deleted"
    for a in assessed:
        if a.live and a.id not in lost:
            plan.stops.append(Stop(a.id, reason))
    if plan.stops:
        message = events.stopped(service.name, [s.task_id for s in plan.stops])
        nxt = events.add(service, [message], now, new_id, settings.max_events)
        return Decision(nxt, stops=tuple(plan.stops), wake_at=_first(plan.wake), write=True)
    if any(a.task.last_status is not TaskStatus.STOPPED for a in assessed):
        return Decision(service, wake_at=_first(plan.wake))  # waiting for the agents
    return Decision(inactive(service, now), write=True)


def _count_failures(service: Service, assessed: list[Assessed], now: float) -> Service:
    """Each deployment's failedTasks, raised to what the tasks show (it never goes down)."""
    changed = False
    deployments: list[Deployment] = []
    for d in service.deployments:
        total = failures(a for a in assessed if a.deployment_id == d.id).total
        if total > d.failed_tasks:
            d = replace(d, failed_tasks=total, updated_at=now)
            changed = True
        deployments.append(d)
    return replace(service, deployments=tuple(deployments)) if changed else service


def _breaker(service: Service, assessed: list[Assessed], now: float, plan: _Plan) -> Service | None:
    """The circuit breaker: the next service when the PRIMARY deployment just failed, else None."""
    primary = service.primary
    breaker = service.deployment_configuration.circuit_breaker
    if primary is None or not breaker.enable or primary.rollout_state is not RolloutState.IN_PROGRESS:
        return None
    f = failures(a for a in assessed if a.deployment_id == primary.id)
    if f.consecutive < failure_threshold(primary.desired_count):
        return None
    plan.messages.append(events.deployment_failed(service.name, primary.id))
    target = rollback_target(service.deployments, primary) if breaker.rollback else None
    if target is None:
        deployments = tuple(failed(d, now) if d.id == primary.id else d for d in service.deployments)
        return replace(service, deployments=deployments, steady=False)
    plan.messages.append(events.rolling_back(service.name, target.id))
    back = promoted(target, service.desired_count, now)
    gone = replace(
        failed(primary, now),
        status=DeploymentStatus.ACTIVE,
        rollout_state_reason=rolled_back_reason(target.id),
    )
    others = tuple(d for d in service.deployments if d.id not in (primary.id, target.id))
    return replace(service, deployments=(back, gone, *others), steady=False)


def _launch_hold(
    service: Service, primary: Deployment, assessed: list[Assessed], settings: ControllerSettings, now: float
) -> float | None:
    """Until when the back-off holds launches of the PRIMARY deployment (None: it does not)."""
    until = next_launch(failures(a for a in assessed if a.deployment_id == primary.id), settings)
    return until if until is not None and now < until else None


def _healthiest_first(a: Assessed) -> tuple[bool, int, float, str]:
    return (not a.healthy, -int(a.task.last_status), a.task.created_at, a.id)


def _stop_order(
    service: Service, primary: Deployment
) -> Callable[[Assessed], tuple[bool, bool, float, float]]:
    created = {d.id: d.created_at for d in service.deployments}

    def rank(a: Assessed) -> tuple[bool, bool, float, float]:
        # unhealthy first, then older deployments (oldest first), then the newest tasks
        dep_created = created.get(a.deployment_id or "", 0.0)
        return (a.healthy, a.deployment_id == primary.id, dep_created, -a.task.created_at)

    return rank


def _stop_surplus(
    candidates: list[Assessed],
    *,
    service: Service,
    primary: Deployment,
    healthy: int,
    min_healthy: int,
    plan: _Plan,
) -> int:
    """Stop ``candidates``: unhealthy ones freely, healthy ones while ``min_healthy`` holds.
    Returns how many were stopped."""
    reason = events.scaling_reason(primary.id)
    stopped = 0
    for a in sorted(candidates, key=_stop_order(service, primary)):
        if a.healthy:
            if healthy - 1 < min_healthy:
                continue
            healthy -= 1
        plan.stops.append(Stop(a.id, reason))
        stopped += 1
    return stopped


def _replace_unhealthy(live: list[Assessed], plan: _Plan) -> list[Assessed]:
    for a in live:
        if a.replace_unhealthy:
            plan.stops.append(Stop(a.id, a.unhealthy_reason))
        if a.wake_at is not None:
            plan.wake.append(a.wake_at)
    return [a for a in live if not a.replace_unhealthy]


def _plan_replica(
    service: Service,
    primary: Deployment,
    assessed: list[Assessed],
    lost: set[str],
    hosts: dict[str, Host],
    now: float,
    settings: ControllerSettings,
    plan: _Plan,
) -> None:
    desired = service.desired_count
    config = service.deployment_configuration
    min_healthy, max_live = config.min_healthy(desired), config.max_tasks(desired)
    frozen = primary.rollout_state is RolloutState.FAILED
    live = _replace_unhealthy([a for a in assessed if a.live and a.id not in lost], plan)

    def placeable(a: Assessed) -> bool:
        host = hosts.get(a.instance_id)
        return host is not None and host.status is InstanceStatus.ACTIVE

    pool = sorted((a for a in live if a.deployment_id == primary.id and placeable(a)), key=_healthiest_first)
    keep = pool[:desired]
    kept = {a.id for a in keep}
    surplus = [a for a in live if a.id not in kept]
    healthy = sum(a.healthy for a in live)
    count = len(live)
    excess = count - max_live
    if excess > 0:  # the desired count went down: back under the maximum, unhealthy tasks first
        rank = _stop_order(service, primary)
        over = sorted(live, key=lambda a: (a.healthy, a.id in kept, rank(a)))[:excess]
        reason = events.scaling_reason(primary.id)
        plan.stops.extend(Stop(a.id, reason) for a in over)
        healthy -= sum(a.healthy for a in over)
        count -= excess
        gone = {a.id for a in over}
        keep = [a for a in keep if a.id not in gone]
        surplus = [a for a in surplus if a.id not in gone]
    stoppable = [a for a in surplus if not frozen or a.deployment_id == primary.id]
    count -= _stop_surplus(
        stoppable, service=service, primary=primary, healthy=healthy, min_healthy=min_healthy, plan=plan
    )
    want = desired - len(keep)
    room = max(0, max_live - count)
    n = 0 if frozen else min(want, room)
    held = _launch_hold(service, primary, assessed, settings, now) if n > 0 else None
    if held is not None:
        plan.wake.append(held)
        plan.messages.append(events.throttled(service.name))
        n = 0
    if n > 0:
        plan.starts.append(Start(primary.id, n))
    stopped = {s.task_id for s in plan.stops}
    if (
        not frozen
        and held is None
        and not plan.stops
        and n == 0
        and (want > 0 or surplus)
        and all(a.healthy for a in live)
    ):
        plan.messages.append(events.stuck(service.name))
    plan.settled = (
        not plan.stops
        and not plan.starts
        and len(keep) == desired
        and not surplus
        and all(a.healthy for a in keep)
    )
    for a in live:
        if a.id not in stopped and a.deployment_id is not None:
            plan.remaining[a.deployment_id] = plan.remaining.get(a.deployment_id, 0) + 1
    plan.desired = desired


def _plan_daemon(
    service: Service,
    primary: Deployment,
    assessed: list[Assessed],
    lost: set[str],
    hosts: dict[str, Host],
    now: float,
    settings: ControllerSettings,
    plan: _Plan,
) -> None:
    eligible = sorted(
        (h for h in hosts.values() if h.status is InstanceStatus.ACTIVE and h.eligible), key=lambda h: h.id
    )
    desired = len(eligible)
    config = service.deployment_configuration
    frozen = primary.rollout_state is RolloutState.FAILED
    live = _replace_unhealthy([a for a in assessed if a.live and a.id not in lost], plan)
    reason = events.scaling_reason(primary.id)
    occupied = {
        a.instance_id for a in assessed if a.task.last_status is not TaskStatus.STOPPED and a.id not in lost
    }
    by_host: dict[str, list[Assessed]] = {}
    for a in live:
        by_host.setdefault(a.instance_id, []).append(a)
    eligible_ids = {h.id for h in eligible}
    candidates: list[Assessed] = []
    keep: list[Assessed] = []
    for a in live:
        if a.instance_id not in eligible_ids:  # DRAINING, deregistering, or no longer a member
            plan.stops.append(Stop(a.id, reason))
    for h in eligible:
        on = by_host.get(h.id, [])
        mine = sorted((a for a in on if a.deployment_id == primary.id), key=_healthiest_first)
        keep.extend(mine[:1])
        candidates.extend(mine[1:])
        if not frozen:
            candidates.extend(a for a in on if a.deployment_id != primary.id)
    healthy = sum(a.healthy for a in live if a.instance_id in eligible_ids)
    _stop_surplus(
        candidates,
        service=service,
        primary=primary,
        healthy=healthy,
        min_healthy=config.min_healthy(desired),
        plan=plan,
    )
    missing = [h for h in eligible if h.id not in occupied and h.connected]
    held = _launch_hold(service, primary, assessed, settings, now) if missing and not frozen else None
    if held is not None:
        plan.wake.append(held)
        plan.messages.append(events.throttled(service.name))
    elif not frozen:
        plan.starts.extend(Start(primary.id, 1, h.id) for h in missing)
    stopped = {s.task_id for s in plan.stops}
    plan.settled = (
        not plan.stops
        and not plan.starts
        and not candidates
        and len(keep) == desired
        and all(a.healthy for a in keep)
        and len(live) == len(keep)
    )
    for a in live:
        if a.id not in stopped and a.deployment_id is not None:
            plan.remaining[a.deployment_id] = plan.remaining.get(a.deployment_id, 0) + 1
    plan.desired = desired


def _rollout(service: Service, primary: Deployment, plan: _Plan, now: float) -> Service:
    """The PRIMARY's desired count, completion and the steady state after the step (changes that
    are written on their own)."""
    out = service
    if primary.desired_count != plan.desired or service.desired_count != plan.desired:
        deployments = tuple(
            replace(d, desired_count=plan.desired, updated_at=now) if d.id == primary.id else d
            for d in service.deployments
        )
        out = replace(out, deployments=deployments, desired_count=plan.desired)
    if not plan.settled:
        return out
    primary_now = out.primary
    assert primary_now is not None
    if primary_now.rollout_state is RolloutState.IN_PROGRESS:
        plan.messages.append(events.deployment_completed(service.name, primary.id))
        primary_now = completed(primary_now, now)
        out = replace(out, deployments=(primary_now,))
    elif primary_now.rollout_state is RolloutState.COMPLETED and len(out.deployments) > 1:
        out = replace(out, deployments=(primary_now,))
    if primary_now.rollout_state is RolloutState.COMPLETED and not service.steady:
        plan.messages.append(events.steady(service.name))
        out = replace(out, steady=True)
    return out


def _soft(service: Service, primary: Deployment, plan: _Plan) -> Service:
    """Changes carried by a write that happens anyway: the older deployments' desired counts (the
    tasks they still have) and a steady state that no longer holds."""
    deployments = tuple(
        d if d.id == primary.id else replace(d, desired_count=plan.remaining.get(d.id, 0))
        for d in service.deployments
    )
    return replace(service, deployments=deployments, steady=service.steady and plan.settled)
