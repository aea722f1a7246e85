"""What the service reconciler reads and returns (pure values).

    reconcile(service, tasks, instances, now, settings, new_id, targets) -> Decision

- ``service``: the stored Service, with its deployments (PRIMARY, ACTIVE) and events;
- ``tasks``: the service's tasks (its ``group``) as the task cache holds them, STOPPED ones included
  while they are retained (the circuit breaker and the back-off count them);
- ``instances``: the cluster's container instances (``Host``): status, agent connection, since when
  the agent has been disconnected;
- ``targets``: for each RUNNING task of a service behind load balancers, its targets' health
  (``TargetState``, by task id); such a task counts as healthy only when its targets are;
- ``now``: wall-clock seconds; ``new_id``: event ids.

A ``Decision`` holds the service as it should be stored next (deployment states, counts, events),
the tasks to stop (``Stop``; ``at_once`` for tasks whose agent is gone: STOPPED without it) and the
tasks to start (``Start``: how many of which deployment, or one pinned to an instance for DAEMON),
and ``wake_at``: when time alone would change the decision (a task settling, a back-off ending).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dockyard.domain.container_instances import InstanceStatus
from dockyard.domain.services import Service

NewId = Callable[[], str]


@dataclass(frozen=True)
class ControllerSettings:
    # a task with no health check counts as healthy once RUNNING this long (ECS waits 40 s)
    settle_seconds: float = 40.0
    # back-off of launches after consecutive failed starts: none for the first ``backoff_after``
    # failures, then backoff_seconds x 2^(n - backoff_after), at most backoff_max_seconds (ECS: 27 min)
    backoff_after: int = 3
    backoff_seconds: float = 5.0
    backoff_max_seconds: float = 1620.0
    # tasks on an instance whose agent has been disconnected this long are stopped and replaced
    disconnect_grace_seconds: float = 300.0
    max_events: int = 100


# a load-balanced task's health as its target groups judge it
TARGET_HEALTHY, TARGET_UNHEALTHY, TARGET_INITIAL = "healthy", "unhealthy", "initial"


@dataclass(frozen=True)
class TargetState:
    """The targets of one load-balanced task as the load balancers see them (an input: the loop reads
    DescribeTargetHealth's view, the reconciler stays pure)."""

    state: str  # healthy: every target is; unhealthy: one fails its checks; initial: not decided yet
    target_group_arn: str | None = None  # the group whose checks fail (unhealthy)


@dataclass(frozen=True)
class Host:
    """A container instance as the reconciler sees it."""

    id: str
    arn: str
    status: InstanceStatus
    connected: bool = True
    disconnected_since: float | None = None  # None while connected
    eligible: bool = True  # meets the service's memberOf constraints (DAEMON: gets a task)


@dataclass(frozen=True)
class Stop:
    task_id: str
    reason: str
    at_once: bool = False  # the agent cannot stop it: mark it STOPPED now (and release its resources)


@dataclass(frozen=True)
class Start:
    deployment_id: str
    count: int = 1
    instance_id: str | None = None  # DAEMON: on this instance only


@dataclass(frozen=True)
class Decision:
    service: Service  # the next stored value (equal to the input when nothing changes)
    stops: tuple[Stop, ...] = ()
    starts: tuple[Start, ...] = ()
    wake_at: float | None = None
    write: bool = False  # the service document must be written even without task actions

    @property
    def start_count(self) -> int:
        return sum(s.count for s in self.starts)

    @property
    def idle(self) -> bool:
        return not (self.stops or self.starts or self.write)
