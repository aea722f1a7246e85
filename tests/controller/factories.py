"""Factories for the pure controller tests: services, tasks, hosts, and a small simulated world.

``World`` plays the agents and the store for ``reconcile``: it applies a decision (stops move a
task to STOPPING, starts create PROVISIONING tasks), then lets time pass and tasks progress
(PROVISIONING -> RUNNING after ``start_delay``, STOPPING -> STOPPED after ``stop_delay``), as the real
system would, without any I/O.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from dockyard.controller import events
from dockyard.controller.model import ControllerSettings, Decision, Host
from dockyard.controller.reconcile import reconcile
from dockyard.domain.container_instances import InstanceStatus
from dockyard.domain.deployments import deployment_id
from dockyard.domain.services import (
    CircuitBreaker,
    DeploymentConfiguration,
    SchedulingStrategy,
    Service,
    new_service,
    scaled,
    with_new_deployment,
)
from dockyard.domain.task_definitions import ContainerDefinition, HealthCheck, TaskDefinition
from dockyard.domain.task_lifecycle import request_stop, stop_now
from dockyard.domain.task_status import HealthStatus, StopCode, TaskStatus
from dockyard.domain.tasks import Task, new_task

REGION, ACCOUNT, CLUSTER = "us-east-1", "000000000000", "c"
T0 = 1_700_000_000.0
SETTINGS = ControllerSettings(settle_seconds=10.0, backoff_seconds=5.0, disconnect_grace_seconds=60.0)
_ids = itertools.count(1)


def td(revision: int = 1, *, health_check: bool = False, family: str = "web") -> TaskDefinition:
    check = HealthCheck(("CMD-SHELL", "true")) if health_check else None
    return TaskDefinition(
        family=family,
        container_definitions=(
            ContainerDefinition(name="web", image="busybox", memory=64, health_check=check),
        ),
        revision=revision,
        arn=f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{revision}",
    )


def service(
    desired: int = 3,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    breaker: bool = False,
    rollback: bool = False,
    daemon: bool = False,
    definition: TaskDefinition | None = None,
    grace: int | None = None,
) -> Service:
    strategy = SchedulingStrategy.DAEMON if daemon else SchedulingStrategy.REPLICA
    config = DeploymentConfiguration(
        minimum_healthy_percent=minimum if minimum is not None else (0 if daemon else 100),
        maximum_percent=maximum if maximum is not None else (100 if daemon else 200),
        circuit_breaker=CircuitBreaker(breaker, rollback),
    )
    return new_service(
        arn=f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{CLUSTER}/svc",
        name="svc",
        cluster=CLUSTER,
        cluster_arn=f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}",
        td=definition or td(),
        strategy=strategy,
        desired_count=0 if daemon else desired,
        configuration=config,
        deployment_id=deployment_id(next(_ids)),
        now=T0,
        health_check_grace_period=grace,
    )


def host(name: str, status: InstanceStatus = InstanceStatus.ACTIVE, **kw: object) -> Host:
    return Host(name, f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{CLUSTER}/{name}", status, **kw)  # type: ignore[arg-type]


def task(
    svc: Service,
    *,
    dep: str | None = None,
    on: str = "h1",
    status: TaskStatus = TaskStatus.RUNNING,
    started_at: float | None = T0,
    created_at: float = T0,
    health: HealthStatus = HealthStatus.UNKNOWN,
) -> Task:
    deployment = svc.deployment(dep) if dep else svc.primary
    assert deployment is not None
    n = next(_ids)
    t = new_task(
        region=REGION,
        account=ACCOUNT,
        cluster=CLUSTER,
        task_id=f"t{n:05d}",
        container_ids=[f"c{n}"],
        td=deployment.task_definition,
        overrides={},
        instance_arn=f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{CLUSTER}/{on}",
        instance_id=on,
        group=svc.group,
        started_by=deployment.id,
        tags=(),
        now=created_at,
    )
    return replace(
        t,
        last_status=status,
        started_at=started_at if status >= TaskStatus.RUNNING else None,
        health_status=health,
    )


def failed_task(svc: Service, *, dep: str | None = None, at: float = T0, on: str = "h1") -> Task:
    """A task that exited right after it started (never healthy)."""
    t = task(svc, dep=dep, on=on, started_at=at, created_at=at)
    return replace(
        t,
        last_status=TaskStatus.STOPPED,
        desired_status=TaskStatus.STOPPED,
        stop_code=StopCode.ESSENTIAL_CONTAINER_EXITED,
        stopped_reason="Essential container in task exited",
        execution_stopped_at=at + 0.5,
        stopped_at=at + 0.5,
    )


def new_revision(svc: Service, revision: int = 2, **kw: object) -> Service:
    return with_new_deployment(svc, td(revision, **kw), deployment_id(next(_ids)), T0)  # type: ignore[arg-type]


# ---- a simulated world -------------------------------------------------------------------------


@dataclass
class World:
    service: Service
    hosts: list[Host]
    settings: ControllerSettings = SETTINGS
    now: float = T0
    tasks: dict[str, Task] = field(default_factory=dict)
    start_delay: float = 1.0
    stop_delay: float = 1.0
    crash_on_start: bool = False  # every started task exits at once (a broken revision)
    crash_revisions: frozenset[str] = frozenset()  # task definition ARNs whose tasks exit at once
    _born: dict[str, float] = field(default_factory=dict)
    _stopping: dict[str, float] = field(default_factory=dict)
    decisions: int = 0

    def decide(self) -> Decision:
        d = reconcile(self.service, list(self.tasks.values()), self.hosts, self.now, self.settings, self._id)
        self.decisions += 1
        return d

    def _id(self) -> str:
        return f"e{next(_ids)}"

    def apply(self, d: Decision) -> None:
        self.service = d.service
        for s in d.stops:
            t = self.tasks[s.task_id]
            code = "ServiceSchedulerInitiated"
            m = (
                stop_now(t, reason=s.reason, stop_code=code, now=self.now)
                if s.at_once
                else request_stop(t, reason=s.reason, stop_code=code, now=self.now)
            )
            self.tasks[t.id] = m.task
            self._stopping[t.id] = self.now
        active = [h for h in self.hosts if h.status is InstanceStatus.ACTIVE and h.connected]
        started: list[str] = []
        for i, s in enumerate(d.starts):
            for k in range(s.count):
                on = s.instance_id or active[(i + k + len(self.tasks)) % len(active)].id
                t = task(
                    self.service,
                    dep=s.deployment_id,
                    on=on,
                    status=TaskStatus.PROVISIONING,
                    created_at=self.now,
                )
                self.tasks[t.id] = t
                self._born[t.id] = self.now
                started.append(t.id)
        if started:  # what the loop writes with the tasks it placed
            self.service = events.add(
                self.service, [events.started(self.service.name, started)], self.now, self._id
            )

    def advance(self, dt: float) -> None:
        """Let ``dt`` pass: tasks start and stop as their delays say."""
        self.now += dt
        for tid, t in list(self.tasks.items()):
            if t.last_status < TaskStatus.RUNNING and t.desired_status is TaskStatus.RUNNING:
                if self.now - self._born.get(tid, self.now) >= self.start_delay:
                    crash = self.crash_on_start or t.task_definition_arn in self.crash_revisions
                    if crash:
                        self.tasks[tid] = replace(
                            t,
                            last_status=TaskStatus.STOPPED,
                            desired_status=TaskStatus.STOPPED,
                            started_at=self.now,
                            stop_code=StopCode.ESSENTIAL_CONTAINER_EXITED,
                            stopped_reason="Essential container in task exited",
                            execution_stopped_at=self.now,
                            stopped_at=self.now,
                        )
                    else:
                        self.tasks[tid] = replace(t, last_status=TaskStatus.RUNNING, started_at=self.now)
            elif (
                TaskStatus.DEACTIVATING <= t.last_status < TaskStatus.STOPPED
                and self.now - self._stopping.get(tid, self.now) >= self.stop_delay
            ):
                self.tasks[tid] = replace(t, last_status=TaskStatus.STOPPED, stopped_at=self.now)

    def scale(self, desired: int) -> None:
        self.service = scaled(self.service, desired, self.now)

    def deploy(self, revision: int, **kw: object) -> None:
        self.service = with_new_deployment(
            self.service,
            td(revision, **kw),
            deployment_id(next(_ids)),
            self.now,  # type: ignore[arg-type]
        )

    # ---- what the bounds count ----------------------------------------------------------------

    def live(self) -> list[Task]:
        return [
            t
            for t in self.tasks.values()
            if t.desired_status is TaskStatus.RUNNING and t.last_status < TaskStatus.DEACTIVATING
        ]

    def healthy(self) -> int:
        return sum(
            1
            for t in self.live()
            if t.last_status is TaskStatus.RUNNING
            and t.started_at is not None
            and self.now - t.started_at >= self.settings.settle_seconds
        )

    def steady(self) -> bool:
        primary = self.service.primary
        return (
            primary is not None
            and len(self.service.deployments) == 1
            and primary.rollout_state.value == "COMPLETED"
            and self.healthy() == len(self.live()) == self.service.desired_count
        )
