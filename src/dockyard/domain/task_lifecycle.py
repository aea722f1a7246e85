"""The task lifecycle: merging agent reports monotonically, and the control plane's own steps.

    PROVISIONING -> PENDING -> ACTIVATING -> RUNNING -> DEACTIVATING -> STOPPING
      -> DEPROVISIONING -> STOPPED

Owners (docs/agent-protocol.md section 4): the agent reports PENDING, RUNNING and STOPPED and
container states; the control plane owns the rest. An agent status maps onto the step it opens:

    agent PENDING  -> PENDING
    agent RUNNING  -> ACTIVATING   (load-balancer/discovery registration will happen here)
    agent STOPPED  -> DEPROVISIONING  (resources are released here)

``settle`` then advances every control-plane step that has no work to do (ACTIVATING -> RUNNING,
DEACTIVATING -> STOPPING, DEPROVISIONING -> STOPPED). A task with ``gates`` (a service task behind
load balancers) has work there: it stays ACTIVATING until the services controller registered its
targets (``activated``), and, once it had reached ACTIVATING, stays DEACTIVATING until its targets
drained (``deactivated``). Meanwhile its agent is told to keep it running (``agent_desired_status``),
so a draining task still serves its in-flight requests. Every function is pure: it takes ``now`` and
returns a new ``Task``.

Rules of the merge:

- a report carries a per-task ``seq``; one not greater than the task's ``reportedSeq`` is dropped
  (STALE) and changes nothing. ECS's SubmitTaskStateChange/SubmitContainerStateChange carry no
  sequence: they merge without the check (and without moving ``reportedSeq``);
- statuses only move forward (the later of the stored and the reported step), tasks and containers
  alike; timestamps are set once; the user's stop reason and code win over the agent's;
- a task that stops by itself gets ``desiredStatus: STOPPED``, a ``stopCode`` (the agent's, else
  TaskFailedToStart before RUNNING and EssentialContainerExited after) and a ``stoppedReason``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, NamedTuple, TypeVar

from dockyard.domain.task_status import ContainerStatus, HealthStatus, StopCode, TaskStatus
from dockyard.domain.tasks import Container, Task

STALE = "STALE"
LOAD_BALANCERS = "loadBalancers"  # a gate: targets registered while ACTIVATING, drained while DEACTIVATING
USER_STOP_REASON = "Task stopped by user"
ESSENTIAL_EXITED_REASON = "Essential container in task exited"

_OPENS = {
    TaskStatus.PENDING: TaskStatus.PENDING,
    TaskStatus.RUNNING: TaskStatus.ACTIVATING,
    TaskStatus.STOPPED: TaskStatus.DEPROVISIONING,
}


# The reports and a merge's outcome are NamedTuples rather than frozen dataclasses: as immutable,
# and built three times faster (every report an agent sends builds one of each).


class ContainerReport(NamedTuple):
    name: str
    status: ContainerStatus | None = None
    exit_code: int | None = None
    reason: str | None = None
    runtime_id: str | None = None
    network_bindings: tuple[Mapping[str, Any], ...] | None = None
    health_status: HealthStatus | None = None


class TaskReport(NamedTuple):
    """What the agent observed of one task. ``seq`` None: an unsequenced ECS state change."""

    seq: int | None = None
    status: TaskStatus | None = None  # PENDING | RUNNING | STOPPED
    reason: str | None = None
    stop_code: str | None = None
    pull_started_at: float | None = None
    pull_stopped_at: float | None = None
    started_at: float | None = None
    execution_stopped_at: float | None = None
    health_status: HealthStatus | None = None
    containers: tuple[ContainerReport, ...] = ()


class Merged(NamedTuple):
    task: Task
    accepted: bool = True
    reason: str | None = None  # why a report was dropped (STALE)
    changed: bool = False  # write ``task`` back
    released: bool = False  # the task reached STOPPED now: release its reservation in the same write


def in_desired_set(task: Task) -> bool:
    """Whether the agent is told about the task (docs/agent-protocol.md section 2): desired RUNNING,
    or desired STOPPED and not yet STOPPED. A STOPPED task always has desiredStatus STOPPED."""
    return not task.stopped


def agent_desired_status(task: Task) -> TaskStatus:
    """The desiredStatus the agent is told: RUNNING while the control plane deactivates the task (its
    targets drain before the agent stops it), else the task's own."""
    if task.last_status is TaskStatus.DEACTIVATING:
        return TaskStatus.RUNNING
    return task.desired_status


def desired_set_changed(old: Task | None, new: Task | None) -> bool:
    """Whether a write from ``old`` to ``new`` (None: absent) changes the desired set as its agent
    must learn it (docs/agent-protocol.md section 2), i.e. whether the instance's desired-set
    revision advances and its long-polls wake.

    A task entering the set, leaving it by the control plane's doing (StopTask of a task its agent
    never ran, an instance gone, a deletion) or changing the desiredStatus its agent is told
    (``agent_desired_status``) does. A ``lastStatus``
    or container change does not, nor does the task leaving the set because the agent's own
    sequenced report stopped it (``reportedSeq`` moved in the same write): the agent knows already,
    and waking it would cost a Poll answer per report.
    """
    was = old is not None and in_desired_set(old)
    now = new is not None and in_desired_set(new)
    if old is not None and new is not None and old.instance_id != new.instance_id:
        return was or now
    if was and now:
        assert old is not None and new is not None
        return agent_desired_status(old) is not agent_desired_status(new)
    if now:
        return True  # entered the set
    if not was:
        return False  # never in it (e.g. a STOPPED task updated or expired)
    assert old is not None
    return new is None or new.reported_seq == old.reported_seq


def settle(task: Task, now: float, *, fresh: bool = False) -> Task:
    """Advance the control-plane steps that have nothing to do (a gated task's wait for the controller).

    ``fresh``: ``task`` was just built by the caller and nobody else holds it yet, so the steps are
    set on it rather than on copies (a report's merge would otherwise build the task twice)."""
    t = task
    step = _set if fresh else _evolve
    gated = bool(t.gates)
    if t.last_status is TaskStatus.ACTIVATING and not gated:
        t = step(t, last_status=TaskStatus.RUNNING, started_at=_first(t.started_at, now))
    drain = gated
    if t.desired_status is TaskStatus.STOPPED and t.last_status < TaskStatus.DEACTIVATING:
        drain = gated and t.last_status >= TaskStatus.ACTIVATING  # before that, nothing was registered
        t = step(t, last_status=TaskStatus.DEACTIVATING)
    if t.last_status is TaskStatus.DEACTIVATING and not drain:
        t = step(t, last_status=TaskStatus.STOPPING, stopping_at=_first(t.stopping_at, now))
    if t.last_status is TaskStatus.DEPROVISIONING:
        t = _stopped(t, now, step)
    return t


def _stopped(t: Task, now: float, step: Callable[..., Task] | None = None) -> Task:
    return (step or _evolve)(
        t,
        last_status=TaskStatus.STOPPED,
        desired_status=TaskStatus.STOPPED,
        stopping_at=_first(t.stopping_at, now),
        execution_stopped_at=_first(t.execution_stopped_at, now),
        stopped_at=_first(t.stopped_at, now),
        containers=tuple(_evolve(c, last_status=ContainerStatus.STOPPED) for c in t.containers),
    )


_T = TypeVar("_T", Task, Container)


def _copy(obj: _T) -> _T:
    """A copy of a ``Task``/``Container`` (frozen, no ``__post_init__``, no slots) without running
    ``__init__`` over every field: a report's merge builds several, and building tasks was most of
    what applying a report cost. Only for the caller to set fields on before anyone else sees it."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    return new


def _evolve(obj: _T, **changes: Any) -> _T:
    """``dataclasses.replace`` for ``Task``/``Container`` by way of ``_copy``."""
    new = _copy(obj)
    new.__dict__.update(changes)
    return new


def _set(obj: Task, **changes: Any) -> Task:
    """``_evolve`` in place, for a task no one else holds yet (``settle(fresh=True)``)."""
    obj.__dict__.update(changes)
    return obj


def _first(current: float | None, value: float | None) -> float | None:
    return current if current is not None else value


def _bump(before: Task, after: Task) -> Merged:
    if after == before:
        return Merged(before)
    return Merged(
        _evolve(after, version=before.version + 1),
        changed=True,
        released=after.stopped and not before.stopped,
    )


def merge_container(c: Container, r: ContainerReport) -> Container:
    new = _copy(c)
    fields = new.__dict__  # (written in place: ``new`` is nobody else's yet)
    if r.status is not None and r.status > c.last_status:
        fields["last_status"] = r.status
    if r.exit_code is not None and (c.exit_code is None or r.status is ContainerStatus.STOPPED):
        fields["exit_code"] = r.exit_code
    if r.reason:
        fields["reason"] = r.reason
    if r.runtime_id:
        fields["runtime_id"] = r.runtime_id
    if r.network_bindings:
        fields["network_bindings"] = r.network_bindings
    if r.health_status is not None:
        fields["health_status"] = r.health_status
    return new


def merge_report(task: Task, report: TaskReport, now: float) -> Merged:
    """Merge one agent report into ``task`` (see the module docstring). One new ``Task`` for the
    report's fields (building a task is what a merge costs), then ``settle``."""
    seq = report.seq
    if seq is not None and seq <= task.reported_seq:
        return Merged(task, accepted=False, reason=STALE)
    new = _copy(task)
    fields = new.__dict__  # (written in place: ``new`` is nobody else's yet)
    if report.containers:
        by_name = {r.name: r for r in report.containers}
        fields["containers"] = tuple(
            [merge_container(c, by_name[c.name]) if c.name in by_name else c for c in task.containers]
        )
    if report.pull_started_at is not None and task.pull_started_at is None:
        fields["pull_started_at"] = report.pull_started_at
    if report.pull_stopped_at is not None and task.pull_stopped_at is None:
        fields["pull_stopped_at"] = report.pull_stopped_at
    if report.started_at is not None and task.started_at is None:
        fields["started_at"] = report.started_at
    if report.health_status is not None:
        fields["health_status"] = report.health_status
    if seq is not None:  # moves reportedSeq: a new version for sure
        fields["reported_seq"] = seq
        fields["version"] = task.version + 1
    was_stopped = task.stopped
    if report.status is not None and not was_stopped:
        opens = _OPENS[report.status]
        if opens > task.last_status:
            fields["last_status"] = opens
        if report.status is TaskStatus.STOPPED:
            reached_running = task.last_status >= TaskStatus.RUNNING or task.started_at is not None
            default_code = (
                StopCode.ESSENTIAL_CONTAINER_EXITED if reached_running else StopCode.TASK_FAILED_TO_START
            )
            fields.update(
                desired_status=TaskStatus.STOPPED,
                stop_code=task.stop_code or report.stop_code or default_code,
                stopped_reason=task.stopped_reason or report.reason or ESSENTIAL_EXITED_REASON,
                execution_stopped_at=_first(task.execution_stopped_at, report.execution_stopped_at),
            )
    after = settle(new, now, fresh=True)
    if seq is None:  # may change nothing: compare
        return _bump(task, after)
    return Merged(after, changed=True, released=after.stopped and not was_stopped)


def request_stop(task: Task, *, reason: str | None, stop_code: str, now: float) -> Merged:
    """StopTask (or a scheduler's stop): desiredStatus STOPPED, then DEACTIVATING -> STOPPING.

    Stopping a task that is already to stop changes nothing (ECS answers with the task as it is).
    """
    if task.desired_status is TaskStatus.STOPPED:
        return Merged(task)
    t = replace(
        task,
        desired_status=TaskStatus.STOPPED,
        stopped_reason=task.stopped_reason or reason or USER_STOP_REASON,
        stop_code=task.stop_code or stop_code,
        stopping_at=_first(task.stopping_at, now),
    )
    return _bump(task, settle(t, now))


def stop_now(task: Task, *, reason: str, stop_code: str, now: float) -> Merged:
    """STOPPED at once, without the agent: its instance is gone (deregistered with force)."""
    if task.stopped:
        return Merged(task)
    t = replace(
        task,
        stopped_reason=task.stopped_reason or reason,
        stop_code=task.stop_code or stop_code,
    )
    return _bump(task, _stopped(t, now))


def activated(task: Task, now: float) -> Merged:
    """The controller registered a gated task's targets: ACTIVATING -> RUNNING."""
    if task.last_status is not TaskStatus.ACTIVATING or task.desired_status is not TaskStatus.RUNNING:
        return Merged(task)
    t = replace(task, last_status=TaskStatus.RUNNING, started_at=_first(task.started_at, now))
    return _bump(task, t)


def deactivated(task: Task, now: float) -> Merged:
    """A gated task's targets drained: DEACTIVATING -> STOPPING (its agent is told to stop it now)."""
    if task.last_status is not TaskStatus.DEACTIVATING:
        return Merged(task)
    t = replace(task, last_status=TaskStatus.STOPPING, stopping_at=_first(task.stopping_at, now))
    return _bump(task, t)
