"""Service events, worded as ECS writes them, and the rule that keeps repeats out (pure).

ECS shows the newest events first, at most 100, and omits a message that repeats one already shown
until its cause is resolved. Dockyard's rule: a message is not added again while it appears among
the events newer than the last "has reached a steady state." (reaching a steady state resolves every
cause); the started/stopped events name their tasks, so they never repeat.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dockyard.domain.services import Service, ServiceEvent, with_events
from dockyard.scheduler import Failure

from .model import NewId

SCHEDULER_STOP_CODE = "ServiceSchedulerInitiated"
UNHEALTHY_REASON = "Task failed container health checks"
ELB_UNHEALTHY_PREFIX = "Task failed ELB health checks in "


def elb_unhealthy_reason(target_group_arn: str) -> str:
    """The stoppedReason of a task replaced because its target fails the load balancer's checks."""
    return f"{ELB_UNHEALTHY_PREFIX}(target-group {target_group_arn})"


def failed_health_checks(reason: str | None) -> bool:
    """Whether a scheduler's stoppedReason says the task failed health checks (container or ELB)."""
    return reason == UNHEALTHY_REASON or (reason or "").startswith(ELB_UNHEALTHY_PREFIX)


def _ids(task_ids: Sequence[str]) -> str:
    return " ".join(f"(task {t})" for t in task_ids)


def started(name: str, task_ids: Sequence[str]) -> str:
    return f"(service {name}) has started {len(task_ids)} tasks: {_ids(task_ids)}."


def stopped(name: str, task_ids: Sequence[str]) -> str:
    return f"(service {name}) has stopped {len(task_ids)} running tasks: {_ids(task_ids)}."


def steady(name: str) -> str:
    return f"(service {name}) has reached a steady state."


def deployment_completed(name: str, dep_id: str) -> str:
    return f"(service {name}) (deployment {dep_id}) deployment completed."


def deployment_failed(name: str, dep_id: str) -> str:
    return f"(service {name}) (deployment {dep_id}) deployment failed: tasks failed to start."


def rolling_back(name: str, dep_id: str) -> str:
    return f"(service {name}) rolling back to deployment {dep_id}."


def throttled(name: str) -> str:
    return f"(service {name}) is unable to consistently start tasks successfully."


def stuck(name: str) -> str:
    return (
        f"(service {name}) was unable to stop or start tasks during a deployment because of the service "
        "deployment configuration. Update the minimumHealthyPercent or maximumPercent value and try again."
    )


def scaling_reason(dep_id: str) -> str:
    """The stoppedReason of a task the scheduler stops to scale in or roll out."""
    return f"Scaling activity initiated by (deployment {dep_id})"


def disconnected_reason(grace: float) -> str:
    return (
        f"Task stopped because its container instance's agent was disconnected for more than {grace:g} "
        "seconds; the service scheduler replaced it."
    )


_PHRASES = {
    "RESOURCE:CPU": "has insufficient CPU units available",
    "RESOURCE:MEMORY": "has insufficient memory available",
    "RESOURCE:PORTS": "is already using a port required by your task",
    "RESOURCE:PORTS_UDP": "is already using a port required by your task",
    "ATTRIBUTE": "is missing an attribute required by your task",
}
# the closest match is the instance rejected latest in the filter chain
_CLOSENESS = ("RESOURCE:", "ATTRIBUTE", "AGENT", "INACTIVE", "MISSING")
NO_INSTANCES = "No Container Instances were found in your cluster."


def _closeness(f: Failure) -> int:
    for rank, prefix in enumerate(_CLOSENESS):
        if f.reason.startswith(prefix):
            return rank
    return len(_CLOSENESS)


def unable_to_place(name: str, failures: Iterable[Failure]) -> str:
    head = (
        f"(service {name}) was unable to place a task because no container instance met all of its "
        "requirements."
    )
    ranked = sorted(failures, key=lambda f: (_closeness(f), f.arn))
    if not ranked:
        return f"{head} Reason: {NO_INSTANCES}"
    closest = ranked[0]
    instance = closest.arn.rsplit("/", 1)[-1]
    phrase = _PHRASES.get(closest.reason, f'encountered error "{closest.reason}"')
    # no amounts in it (as ECS): the same cause makes the same message, which is not repeated
    return f"{head} The closest matching (container-instance {instance}) {phrase}."


def launch_failed(name: str, error: str) -> str:
    """A task could not be given what it needs before placement (e.g. an awsvpc address)."""
    return f"(service {name}) failed to launch a task with (error {error})."


def is_new(service: Service, message: str, pending: Sequence[str] = ()) -> bool:
    """Whether ``message`` is not already shown since the last steady state (nor about to be)."""
    if message in pending:
        return False
    marker = steady(service.name)
    if message == marker:
        return True  # reaching a steady state is reported at each transition (the ``steady`` flag)
    for event in service.events:
        if event.message == message:
            return False
        if event.message == marker:
            return True
    return True


def add(service: Service, messages: Sequence[str], now: float, new_id: NewId, limit: int = 100) -> Service:
    """``messages`` (in the order they happened) added newest first, repeats left out."""
    kept: list[str] = []
    for m in messages:
        if is_new(service, m, kept):
            kept.append(m)
    events = [ServiceEvent(new_id(), now, m) for m in reversed(kept)]
    return with_events(service, events, limit)
