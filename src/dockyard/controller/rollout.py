"""Task health, failures, the circuit breaker and the launch back-off (pure).

Health:

- a task is **live** while its desiredStatus is RUNNING and it is not being stopped (lastStatus
  before DEACTIVATING): it counts toward maximumPercent ("RUNNING or PENDING");
- a live task is **healthy** when RUNNING and, if an essential container of its task definition has
  a health check, the task's healthStatus is HEALTHY; with no health check, once it has been
  RUNNING for the settle time (ECS's 40 s; ``ControllerSettings.settle_seconds``);
- a task of a service behind load balancers (``target`` given) is healthy when RUNNING, its
  targets are healthy in every target group and, if it has a container health check, that passes
  too; no settle time applies (the load balancer's healthy threshold is the settling);
- a RUNNING task whose container health checks report UNHEALTHY, or whose target fails the load
  balancer's checks, is replaced, but not before ``healthCheckGracePeriodSeconds`` after it started.

Failures (what the circuit breaker and the back-off count), per deployment:

- a task **failed to start** when it stopped by itself (TaskFailedToStart or
  EssentialContainerExited) without ever being healthy. ECS throttles only tasks that never reach
  RUNNING; here a container that exits at once reaches RUNNING within a fraction of a second, so
  Dockyard counts "never healthy" instead, which is what keeps a crash-looping service from spinning;
- a task **failed its health checks** when the scheduler stopped it for that reason (breaker only);
- failures count from the moment the deployment last had a task become healthy (ECS's default
  ``resetOnHealthyTask``), so one bad task among healthy ones does not trip the breaker.

Everything is derived from the tasks the cache still holds (STOPPED tasks are retained for an hour by
default), so it needs no counters and is the same after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dockyard.domain.deployments import Deployment, RolloutState
from dockyard.domain.task_definitions import TaskDefinition
from dockyard.domain.task_status import HealthStatus, StopCode, TaskStatus
from dockyard.domain.tasks import Task

from .events import (
    ELB_UNHEALTHY_PREFIX,
    SCHEDULER_STOP_CODE,
    UNHEALTHY_REASON,
    elb_unhealthy_reason,
    failed_health_checks,
)
from .model import TARGET_HEALTHY, TARGET_UNHEALTHY, ControllerSettings, TargetState

SELF_STOP_CODES = frozenset({StopCode.TASK_FAILED_TO_START, StopCode.ESSENTIAL_CONTAINER_EXITED})


def has_health_check(td: TaskDefinition | None) -> bool:
    """Whether an essential container of ``td`` has a health check (then the task's health decides)."""
    if td is None:
        return False
    return any(
        c.essential and c.health_check is not None and bool(c.health_check.command)
        for c in td.container_definitions
    )


@dataclass(frozen=True)
class Assessed:
    """One task of the service, judged at ``now``."""

    task: Task
    deployment_id: str | None  # None: started by a deployment the service no longer has
    live: bool
    healthy: bool = False
    replace_unhealthy: bool = False  # failing health checks past the grace period
    unhealthy_reason: str = UNHEALTHY_REASON  # the stoppedReason when it is replaced for that
    healthy_since: float | None = None  # when it became healthy (if it ever was)
    failed_start_at: float | None = None
    failed_health_at: float | None = None
    wake_at: float | None = None  # when time alone changes this judgement

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def instance_id(self) -> str:
        return self.task.instance_id


def _end(task: Task) -> float:
    for at in (task.execution_stopped_at, task.stopped_at, task.stopping_at):
        if at is not None:
            return at
    return task.created_at


def assess(
    task: Task,
    dep_id: str | None,
    *,
    checked: bool,
    settings: ControllerSettings,
    grace_period: int | None,
    now: float,
    target: TargetState | None = None,
) -> Assessed:
    """Judge ``task`` of deployment ``dep_id`` (None: unknown); ``checked``: its task definition has
    an essential container with a health check; ``target``: its targets' health when the service is
    behind load balancers."""
    settle = settings.settle_seconds
    started = task.started_at if task.started_at is not None else task.created_at
    if task.desired_status is TaskStatus.RUNNING and task.last_status < TaskStatus.DEACTIVATING:
        if task.last_status is not TaskStatus.RUNNING:
            return Assessed(task, dep_id, live=True)
        if target is not None:
            return _assess_balanced(task, dep_id, checked, target, started + (grace_period or 0), now)
        if checked:
            if task.health_status is HealthStatus.HEALTHY:
                return Assessed(task, dep_id, live=True, healthy=True, healthy_since=started)
            if task.health_status is HealthStatus.UNHEALTHY:
                grace_end = started + (grace_period or 0)
                if now >= grace_end:
                    return Assessed(task, dep_id, live=True, replace_unhealthy=True)
                return Assessed(task, dep_id, live=True, wake_at=grace_end)
            return Assessed(task, dep_id, live=True)
        settled = started + settle
        if now >= settled:
            return Assessed(task, dep_id, live=True, healthy=True, healthy_since=settled)
        return Assessed(task, dep_id, live=True, wake_at=settled)
    # being stopped, or stopped
    end = _end(task)
    healthy_since: float | None = None
    if task.started_at is not None:
        elb_failed = (task.stopped_reason or "").startswith(ELB_UNHEALTHY_PREFIX)
        if checked and task.health_status is HealthStatus.HEALTHY and not elb_failed:
            healthy_since = task.started_at
        elif not checked and end - task.started_at >= settle and not elb_failed:
            healthy_since = task.started_at + settle
    failed_start = None
    failed_health = None
    if task.desired_status is TaskStatus.STOPPED:
        if task.stop_code in SELF_STOP_CODES and healthy_since is None:
            failed_start = end
        elif task.stop_code == SCHEDULER_STOP_CODE and failed_health_checks(task.stopped_reason):
            failed_health = task.stopping_at if task.stopping_at is not None else end
    return Assessed(
        task,
        dep_id,
        live=False,
        healthy_since=healthy_since,
        failed_start_at=failed_start,
        failed_health_at=failed_health,
    )


def _assess_balanced(
    task: Task, dep_id: str | None, checked: bool, target: TargetState, grace_end: float, now: float
) -> Assessed:
    """A RUNNING task behind load balancers: healthy when its targets (and its container health
    check, if any) are; replaced when either fails past the grace period."""
    container_failing = checked and task.health_status is HealthStatus.UNHEALTHY
    target_failing = target.state == TARGET_UNHEALTHY
    if container_failing or target_failing:
        if now < grace_end:
            return Assessed(task, dep_id, live=True, wake_at=grace_end)
        reason = UNHEALTHY_REASON
        if target_failing and not container_failing:
            reason = elb_unhealthy_reason(target.target_group_arn or "")
        return Assessed(task, dep_id, live=True, replace_unhealthy=True, unhealthy_reason=reason)
    containers_ok = not checked or task.health_status is HealthStatus.HEALTHY
    if target.state == TARGET_HEALTHY and containers_ok:
        return Assessed(task, dep_id, live=True, healthy=True, healthy_since=task.started_at or now)
    return Assessed(task, dep_id, live=True)


@dataclass(frozen=True)
class Failures:
    """A deployment's failures since it last had a task become healthy."""

    consecutive: int = 0  # failed starts + failed health checks (the circuit breaker)
    starts: int = 0  # failed starts only (the back-off)
    last_start_failure: float | None = None
    total: int = 0  # every failure the cache still holds (failedTasks)


def failures(tasks: Iterable[Assessed]) -> Failures:
    """Failures of one deployment's tasks (``tasks`` are that deployment's)."""
    items = list(tasks)
    last_healthy = max((a.healthy_since for a in items if a.healthy_since is not None), default=None)
    consecutive = starts = total = 0
    last: float | None = None
    for a in items:
        for at, is_start in ((a.failed_start_at, True), (a.failed_health_at, False)):
            if at is None:
                continue
            total += 1
            if last_healthy is not None and at <= last_healthy:
                continue
            consecutive += 1
            if is_start:
                starts += 1
                last = at if last is None else max(last, at)
    return Failures(consecutive, starts, last, total)


def next_launch(f: Failures, settings: ControllerSettings) -> float | None:
    """When the deployment may launch again after consecutive failed starts (None: now)."""
    n = f.starts
    if n < settings.backoff_after or f.last_start_failure is None:
        return None
    delay = min(settings.backoff_max_seconds, settings.backoff_seconds * 2.0 ** (n - settings.backoff_after))
    return f.last_start_failure + delay


def rollback_target(deployments: Iterable[Deployment], primary: Deployment) -> Deployment | None:
    """The most recent deployment other than ``primary`` that COMPLETED (ECS's rollback target)."""
    done = [d for d in deployments if d.id != primary.id and d.rollout_state is RolloutState.COMPLETED]
    return max(done, key=lambda d: d.created_at, default=None)
