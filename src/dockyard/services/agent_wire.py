"""The agent protocol's wire shapes (docs/agent-protocol.md), validated by hand.

``DockyardAgentV1.*`` operations are not in the ECS model, so their requests are checked here: every
field's type and range, with the field's path in the ``InvalidParameterException`` message. The
ECS state-change operations (validated against the model by the api layer) are turned into the same
``TaskReport`` value, unsequenced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from dockyard.domain.errors import InvalidParameter
from dockyard.domain.task_lifecycle import ContainerReport, TaskReport, agent_desired_status
from dockyard.domain.task_status import AGENT_REPORTED, ContainerStatus, HealthStatus, StopCode, TaskStatus
from dockyard.domain.tasks import Task

MAX_WAIT_SECONDS = 20.0
MAX_REPORTS = 256
MAX_TEXT = 1024
STOP_CODES = frozenset(v for k, v in vars(StopCode).items() if k.isupper())
_MAX_INT = 2**63


def _fail(path: str, expected: str) -> InvalidParameter:
    return InvalidParameter(f"Invalid value for {path}: expected {expected}.")


# The field readers take the path of the object that holds the field ("" for the request itself)
# and spell the field's own path only for an error message.


def _path(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def text(doc: Mapping[str, Any], name: str, where: str = "", *, required: bool = False) -> str | None:
    value = doc.get(name)
    if type(value) is str and len(value) <= MAX_TEXT:  # the usual case first (a report has many fields)
        return value
    if value is None:
        if required:
            raise InvalidParameter(f"Missing required parameter {_path(where, name)}.")
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _fail(_path(where, name), f"a string of at most {MAX_TEXT} characters")
    return value


def integer(doc: Mapping[str, Any], name: str, where: str = "", *, low: int = 0) -> int | None:
    value = doc.get(name)
    if type(value) is int and low <= value < _MAX_INT:
        return value
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < _MAX_INT:
        raise _fail(_path(where, name), f"an integer >= {low}")
    return value


def number(doc: Mapping[str, Any], name: str, where: str = "") -> float | None:
    value = doc.get(name)
    if type(value) is float and 0.0 <= value < math.inf:  # (NaN fails both)
        return value
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise _fail(_path(where, name), "a non-negative number of seconds")
    return float(value)


def choice(doc: Mapping[str, Any], name: str, where: str, allowed: Mapping[str, Any]) -> Any:
    """One of ``allowed``'s values, named by its key (a string field), or None when absent."""
    value = doc.get(name)
    if value is None:
        return None
    hit = allowed.get(value) if isinstance(value, str) else None
    if hit is None:
        text(doc, name, where)  # not a string (of at most MAX_TEXT characters): say that first
        raise _fail(_path(where, name), " | ".join(allowed))
    return hit


def _enum(value: str | None, path: str, allowed: Mapping[str, Any]) -> Any:
    if value is None:
        return None
    if value not in allowed:
        raise _fail(path, " | ".join(allowed))
    return allowed[value]


_TASK_STATUSES = {s.name: s for s in sorted(AGENT_REPORTED)}
_CONTAINER_STATUSES = {s.name: s for s in ContainerStatus}
_HEALTH = {s.name: s for s in HealthStatus}


# ---- Poll ---------------------------------------------------------------------------------------


class PollRequest(NamedTuple):
    known_revision: int
    wait_seconds: float


def parse_poll(req: Mapping[str, Any]) -> PollRequest:
    known = integer(req, "knownRevision") or 0
    wait = number(req, "waitSeconds") or 0.0
    return PollRequest(known, min(wait, MAX_WAIT_SECONDS))


def agent_task(task: Task) -> dict[str, Any]:
    """One ``AgentTask`` of a Poll response; its task definition is named, not embedded (the answer
    carries each definition once, in ``taskDefinitions``)."""
    return {
        "taskArn": task.arn,
        "clusterArn": task.cluster_arn,
        "desiredStatus": agent_desired_status(task).name,  # RUNNING while its targets drain
        "taskDefinitionArn": task.task_definition_arn,
        "overrides": dict(task.overrides),
        "cpu": str(task.cpu) if task.cpu is not None else None,
        "memory": str(task.memory) if task.memory is not None else None,
        "containers": [{"name": c.name, "containerArn": c.arn} for c in task.containers],
        "startedBy": task.started_by,
        "group": task.group,
        "createdAt": task.created_at,
        "reportedSeq": task.reported_seq,
        **({"networkInterface": dict(task.eni)} if task.eni is not None else {}),  # awsvpc
    }


# ---- Report -------------------------------------------------------------------------------------


def _bindings(value: Any, path: str) -> tuple[Mapping[str, Any], ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 100:
        raise _fail(path, "a list of at most 100 network bindings")
    out: list[dict[str, Any]] = []
    for i, b in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(b, dict):
            raise _fail(where, "an object")
        binding: dict[str, Any] = {}
        ip = text(b, "bindIP", where)
        if ip is not None:
            binding["bindIP"] = ip
        for name in ("containerPort", "hostPort"):
            port = integer(b, name, where)
            if port is not None:
                if port > 65535:
                    raise _fail(f"{where}.{name}", "a port from 0 to 65535")
                binding[name] = port
        protocol = text(b, "protocol", where) or "tcp"
        if protocol not in ("tcp", "udp"):
            raise _fail(f"{where}.protocol", "tcp | udp")
        binding["protocol"] = protocol
        out.append(binding)
    return tuple(out)


def parse_container_report(doc: Any, path: str, name_field: str = "name") -> ContainerReport:
    if not isinstance(doc, dict):
        raise _fail(path, "an object")
    name = text(doc, name_field, path, required=True)
    assert name is not None
    bindings = doc.get("networkBindings")
    return ContainerReport(
        name=name,
        status=choice(doc, "status", path, _CONTAINER_STATUSES),
        exit_code=integer(doc, "exitCode", path, low=-(2**31)),
        reason=text(doc, "reason", path),
        runtime_id=text(doc, "runtimeId", path),
        network_bindings=_bindings(bindings, f"{path}.networkBindings") if bindings is not None else None,
        health_status=choice(doc, "healthStatus", path, _HEALTH),
    )


def _containers(value: Any, path: str, name_field: str = "name") -> tuple[ContainerReport, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 100:
        raise _fail(path, "a list of at most 100 containers")
    return tuple([parse_container_report(c, f"{path}[{i}]", name_field) for i, c in enumerate(value)])


def _stop_code(doc: Mapping[str, Any], where: str) -> str | None:
    code = text(doc, "stopCode", where)
    if code is not None and code not in STOP_CODES:
        raise _fail(_path(where, "stopCode"), " | ".join(sorted(STOP_CODES)))
    return code


def parse_reports(req: Mapping[str, Any], *, required: bool = True) -> list[tuple[str, TaskReport]]:
    """``reports`` of a Report request (or, optional, of a Poll): (taskArn, report) pairs, in order."""
    reports = req.get("reports")
    if reports is None and not required:
        return []
    if not isinstance(reports, list) or len(reports) > MAX_REPORTS:
        raise _fail("reports", f"a list of at most {MAX_REPORTS} task reports")
    out: list[tuple[str, TaskReport]] = []
    for i, r in enumerate(reports):
        path = f"reports[{i}]"
        if not isinstance(r, dict):
            raise _fail(path, "an object")
        arn = text(r, "taskArn", path, required=True)
        seq = integer(r, "seq", path, low=1)
        if seq is None:
            raise InvalidParameter(f"Missing required parameter {path}.seq.")
        assert arn is not None
        out.append(
            (
                arn,
                TaskReport(
                    seq=seq,
                    status=choice(r, "status", path, _TASK_STATUSES),
                    reason=text(r, "reason", path),
                    stop_code=_stop_code(r, path),
                    pull_started_at=number(r, "pullStartedAt", path),
                    pull_stopped_at=number(r, "pullStoppedAt", path),
                    started_at=number(r, "startedAt", path),
                    execution_stopped_at=number(r, "executionStoppedAt", path),
                    health_status=choice(r, "healthStatus", path, _HEALTH),
                    containers=_containers(r.get("containers"), f"{path}.containers"),
                ),
            )
        )
    return out


# ---- ECS SubmitTaskStateChange / SubmitContainerStateChange --------------------------------------


def _status(value: str | None, path: str) -> TaskStatus | None:
    return _enum(value, path, _TASK_STATUSES)  # type: ignore[no-any-return]


def from_task_state_change(req: Mapping[str, Any]) -> TaskReport:
    return TaskReport(
        status=_status(req.get("status"), "status"),
        reason=req.get("reason"),
        pull_started_at=req.get("pullStartedAt"),
        pull_stopped_at=req.get("pullStoppedAt"),
        execution_stopped_at=req.get("executionStoppedAt"),
        containers=_containers(req.get("containers"), "containers", name_field="containerName"),
    )


def from_container_state_change(req: Mapping[str, Any]) -> TaskReport:
    fields = ("containerName", "runtimeId", "status", "exitCode", "reason", "networkBindings")
    container = {k: req[k] for k in fields if k in req}
    return TaskReport(containers=(parse_container_report(container, "request", name_field="containerName"),))
