"""Tasks: instantiations of a task definition on a container instance, and what they reserve.

A task's **needs** (what placement reserves): its task-level ``cpu``/``memory`` when set (after the
RunTask overrides), else the sum over its containers of ``cpu`` and of ``memoryReservation`` (or
``memory`` when no reservation is set), each after the container overrides; plus its static host
ports by protocol (``host`` mode: every mapping's port; ``bridge``: mappings with a ``hostPort`` > 0;
``awsvpc``/``none``: none, the task has its own namespace or no network).

Statuses and the merge of agent reports live in ``task_lifecycle``; this module is the data, its
ECS wire shape and the rules that build a new task.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dockyard.domain import arns, task_eni
from dockyard.domain.errors import InvalidParameter
from dockyard.domain.resources import Resources
from dockyard.domain.tags import Tag
from dockyard.domain.task_definition_rules import MIN_MEMORY, parse_task_cpu, parse_task_memory
from dockyard.domain.task_definitions import NetworkMode, TaskDefinition
from dockyard.domain.task_status import ContainerStatus, HealthStatus, TaskStatus

EC2 = "EC2"


@dataclass(frozen=True)
class Container:
    name: str
    arn: str
    image: str
    cpu: int = 0
    memory: int | None = None
    memory_reservation: int | None = None
    last_status: ContainerStatus = ContainerStatus.PENDING
    exit_code: int | None = None
    reason: str | None = None
    runtime_id: str | None = None
    network_bindings: tuple[Mapping[str, Any], ...] = ()
    health_status: HealthStatus = HealthStatus.UNKNOWN

    def to_document(self) -> dict[str, Any]:
        # (enums by ``_name_``, the attribute ``.name`` reads through a property: this runs for
        # every task write)
        doc: dict[str, Any] = {
            "name": self.name,
            "containerArn": self.arn,
            "image": self.image,
            "cpu": self.cpu,
            "lastStatus": self.last_status._name_,
            "healthStatus": self.health_status._name_,
            "networkBindings": [dict(b) for b in self.network_bindings] if self.network_bindings else [],
        }
        fields = self.__dict__
        for key, attr in _CONTAINER_OPTIONAL:
            value = fields[attr]
            if value is not None:
                doc[key] = value
        return doc

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> Container:
        bindings = doc.get("networkBindings")
        return _built(
            Container,
            _CONTAINER_DEFAULTS,
            {
                "name": doc["name"],
                "arn": doc["containerArn"],
                "image": doc.get("image", ""),
                "cpu": int(doc.get("cpu", 0)),
                "memory": doc.get("memory"),
                "memory_reservation": doc.get("memoryReservation"),
                "last_status": ContainerStatus[doc.get("lastStatus", "PENDING")],
                "exit_code": doc.get("exitCode"),
                "reason": doc.get("reason"),
                "runtime_id": doc.get("runtimeId"),
                "network_bindings": tuple(bindings) if bindings else (),
                "health_status": HealthStatus[doc.get("healthStatus", "UNKNOWN")],
            },
        )

    def to_wire(self, task_arn: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "containerArn": self.arn,
            "taskArn": task_arn,
            "name": self.name,
            "image": self.image,
            "lastStatus": self.last_status._name_,  # (``_name_``: see to_document)
            "networkBindings": [dict(b) for b in self.network_bindings] if self.network_bindings else [],
            "networkInterfaces": [],
            "healthStatus": self.health_status._name_,
            "cpu": str(self.cpu),
        }
        if self.memory is not None:
            out["memory"] = str(self.memory)
        if self.memory_reservation is not None:
            out["memoryReservation"] = str(self.memory_reservation)
        if self.exit_code is not None:
            out["exitCode"] = self.exit_code
        if self.reason is not None:
            out["reason"] = self.reason
        if self.runtime_id is not None:
            out["runtimeId"] = self.runtime_id
        return out


# the container document's optional fields (written when not None), after its others
_CONTAINER_OPTIONAL = (
    ("memory", "memory"),
    ("memoryReservation", "memory_reservation"),
    ("exitCode", "exit_code"),
    ("reason", "reason"),
    ("runtimeId", "runtime_id"),
)
_TIMES = (
    ("pullStartedAt", "pull_started_at"),
    ("pullStoppedAt", "pull_stopped_at"),
    ("startedAt", "started_at"),
    ("stoppingAt", "stopping_at"),
    ("executionStoppedAt", "execution_stopped_at"),
    ("stoppedAt", "stopped_at"),
)
# the document's optional fields (written when not None), after its others: wire name, attribute
_OPTIONAL = (
    ("cpu", "cpu"),
    ("memory", "memory"),
    ("startedBy", "started_by"),
    ("stopCode", "stop_code"),
    ("stoppedReason", "stopped_reason"),
    ("availabilityZone", "availability_zone"),
    ("service", "service"),
    *_TIMES,
)
# the wire shape's optional fields given as they are (written when not None), after its others
_WIRE_OPTIONAL = (
    ("startedBy", "started_by"),
    ("stopCode", "stop_code"),
    ("stoppedReason", "stopped_reason"),
    ("availabilityZone", "availability_zone"),
    *_TIMES,
)


@dataclass(frozen=True)
class Task:
    arn: str
    id: str
    cluster: str
    cluster_arn: str
    task_definition_arn: str
    container_instance_arn: str
    instance_id: str
    containers: tuple[Container, ...]
    reservation: Resources
    created_at: float
    group: str
    cpu: int | None = None  # task level, after overrides
    memory: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    last_status: TaskStatus = TaskStatus.PROVISIONING
    desired_status: TaskStatus = TaskStatus.RUNNING
    launch_type: str = EC2
    started_by: str | None = None
    tags: tuple[Tag, ...] = ()
    pull_started_at: float | None = None
    pull_stopped_at: float | None = None
    started_at: float | None = None
    stopping_at: float | None = None
    execution_stopped_at: float | None = None
    stopped_at: float | None = None
    stop_code: str | None = None
    stopped_reason: str | None = None
    health_status: HealthStatus = HealthStatus.UNKNOWN
    version: int = 1
    reported_seq: int = 0
    availability_zone: str | None = None
    # control-plane work that holds ACTIVATING (before RUNNING) and DEACTIVATING (before STOPPING)
    # until the controller has done it: ``task_lifecycle.LOAD_BALANCERS`` (register/drain targets)
    gates: tuple[str, ...] = ()
    eni: Mapping[str, Any] | None = None  # awsvpc: the task's interface (domain/task_eni.py)
    # the service whose controller started it. Membership is this, never ``group``: a user's RunTask
    # may name any group, including "service:NAME", without joining (or being scaled in by) it
    service: str | None = None

    @property
    def family(self) -> str:
        return arns.parse_task_definition(self.task_definition_arn).family

    @property
    def stopped(self) -> bool:
        return self.last_status is TaskStatus.STOPPED

    def container(self, name: str) -> Container | None:
        for c in self.containers:
            if c.name == name:
                return c
        return None

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "taskArn": self.arn,
            "id": self.id,
            "cluster": self.cluster,
            "clusterArn": self.cluster_arn,
            "taskDefinitionArn": self.task_definition_arn,
            "containerInstanceArn": self.container_instance_arn,
            "instanceId": self.instance_id,
            "containers": [c.to_document() for c in self.containers],
            "reservation": self.reservation.to_document(),
            "createdAt": self.created_at,
            "group": self.group,
            "overrides": dict(self.overrides),
            "lastStatus": self.last_status._name_,  # (``_name_``: see Container.to_document)
            "desiredStatus": self.desired_status._name_,
            "launchType": self.launch_type,
            "tags": [{"key": k, "value": v} for k, v in self.tags] if self.tags else [],
            "healthStatus": self.health_status._name_,
            "version": self.version,
            "reportedSeq": self.reported_seq,
        }
        fields = self.__dict__  # (read once: this runs for every task write)
        for key, attr in _OPTIONAL:
            value = fields[attr]
            if value is not None:
                doc[key] = value
        if self.gates:
            doc["gates"] = list(self.gates)
        if self.eni is not None:
            doc["eni"] = dict(self.eni)
        return doc

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> Task:
        tags = doc.get("tags")
        values = {
            "arn": doc["taskArn"],
            "id": doc["id"],
            "cluster": doc["cluster"],
            "cluster_arn": doc["clusterArn"],
            "task_definition_arn": doc["taskDefinitionArn"],
            "container_instance_arn": doc["containerInstanceArn"],
            "instance_id": doc["instanceId"],
            "containers": tuple([Container.from_document(c) for c in doc.get("containers", ())]),
            "reservation": Resources.from_document(doc.get("reservation") or {}),
            "created_at": float(doc["createdAt"]),
            "group": doc.get("group", ""),
            "cpu": doc.get("cpu"),
            "memory": doc.get("memory"),
            "overrides": doc.get("overrides") or {},
            "last_status": TaskStatus[doc["lastStatus"]],
            "desired_status": TaskStatus[doc["desiredStatus"]],
            "launch_type": doc.get("launchType", EC2),
            "started_by": doc.get("startedBy"),
            "tags": tuple([(t["key"], t.get("value", "")) for t in tags]) if tags else (),
            "stop_code": doc.get("stopCode"),
            "stopped_reason": doc.get("stoppedReason"),
            "health_status": HealthStatus[doc.get("healthStatus", "UNKNOWN")],
            "version": int(doc.get("version", 1)),
            "reported_seq": int(doc.get("reportedSeq", 0)),
            "availability_zone": doc.get("availabilityZone"),
            "gates": tuple(doc.get("gates") or ()),
            "eni": doc.get("eni"),
            "service": doc["service"] if "service" in doc else _legacy_service(doc),
        }
        for wire_name, attr in _TIMES:
            values[attr] = doc.get(wire_name)
        return _built(Task, _TASK_DEFAULTS, values)

    def to_wire(self, include_tags: bool = False) -> dict[str, Any]:
        """ECS's Task shape (DescribeTasks, RunTask, StopTask)."""
        out: dict[str, Any] = {
            "taskArn": self.arn,
            "clusterArn": self.cluster_arn,
            "taskDefinitionArn": self.task_definition_arn,
            "containerInstanceArn": self.container_instance_arn,
            "overrides": _overrides_wire(self.overrides),
            "lastStatus": self.last_status._name_,  # (``_name_``: see Container.to_document)
            "desiredStatus": self.desired_status._name_,
            "containers": [c.to_wire(self.arn) for c in self.containers],
            "version": self.version,
            "createdAt": self.created_at,
            "group": self.group,
            "launchType": self.launch_type,
            "healthStatus": self.health_status._name_,
            "attachments": [],
            "enableExecuteCommand": False,
        }
        if self.cpu is not None:
            out["cpu"] = str(self.cpu)
        if self.memory is not None:
            out["memory"] = str(self.memory)
        fields = self.__dict__
        for key, attr in _WIRE_OPTIONAL:
            value = fields[attr]
            if value is not None:
                out[key] = value
        if include_tags:
            out["tags"] = [{"key": k, "value": v} for k, v in self.tags]
        if self.eni is not None:
            out["attachments"] = [task_eni.attachment_wire(self.eni, self.last_status)]
            for c in out["containers"]:
                c["networkInterfaces"] = task_eni.container_interfaces(self.eni)
        return out


def _legacy_service(doc: Mapping[str, Any]) -> str | None:
    """Documents written before ``service`` existed: a controller's task (started by a deployment)."""
    group, started_by = str(doc.get("group", "")), str(doc.get("startedBy", ""))
    if group.startswith("service:") and started_by.startswith("ecs-svc/"):
        return group.removeprefix("service:")
    return None


def _overrides_wire(overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(overrides)
    out.setdefault("containerOverrides", [])
    out.setdefault("inferenceAcceleratorOverrides", [])
    return out


# ---- overrides and needs -------------------------------------------------------------------------


def container_overrides(overrides: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(o.get("name")): o for o in overrides.get("containerOverrides") or ()}


def check_overrides(td: TaskDefinition, overrides: Mapping[str, Any]) -> None:
    """RunTask/StartTask ``overrides``: known container names, sane cpu and memory values."""
    names = {c.name for c in td.container_definitions}
    for o in overrides.get("containerOverrides") or ():
        name = o.get("name")
        if name not in names:
            raise InvalidParameter(
                f"Override for container named '{str(name)[:255]}' is not a container in the TaskDefinition."
            )
        if (o.get("cpu") or 0) < 0:
            raise InvalidParameter(f"Invalid cpu override for container '{name}': it cannot be negative.")
        for key in ("memory", "memoryReservation"):
            value = o.get(key)
            if value is not None and value < MIN_MEMORY:
                raise InvalidParameter(
                    f"Invalid {key} override for container '{name}': the minimum is {MIN_MEMORY} MiB."
                )
    task_size(td, overrides)


def task_size(td: TaskDefinition, overrides: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """Task-level (cpu, memory) after overrides; None where neither sets one."""
    cpu, memory = td.cpu, td.memory
    if overrides.get("cpu"):
        cpu = parse_task_cpu(str(overrides["cpu"]))
    if overrides.get("memory"):
        memory = parse_task_memory(str(overrides["memory"]))
    return cpu, memory


def _container_limits(
    td: TaskDefinition, overrides: Mapping[str, Any]
) -> list[tuple[int, int | None, int | None]]:
    """(cpu, memory, memoryReservation) of each container after its override."""
    by_name = container_overrides(overrides)
    out: list[tuple[int, int | None, int | None]] = []
    for c in td.container_definitions:
        o = by_name.get(c.name, {})
        cpu = o.get("cpu")
        memory = o.get("memory")
        reservation = o.get("memoryReservation")
        out.append(
            (
                int(cpu) if cpu is not None else c.cpu,
                int(memory) if memory is not None else c.memory,
                int(reservation) if reservation is not None else c.memory_reservation,
            )
        )
    return out


def host_ports(td: TaskDefinition) -> tuple[frozenset[int], frozenset[int]]:
    """The static host ports the task binds: (TCP, UDP)."""
    mode = td.effective_network_mode
    tcp: set[int] = set()
    udp: set[int] = set()
    if mode in (NetworkMode.AWSVPC, NetworkMode.NONE):
        return frozenset(), frozenset()
    for c in td.container_definitions:
        for p in c.port_mappings:
            port = p.host_port if mode is NetworkMode.BRIDGE else (p.host_port or p.container_port)
            if port:
                (udp if p.protocol == "udp" else tcp).add(port)
    return frozenset(tcp), frozenset(udp)


def needs(td: TaskDefinition, overrides: Mapping[str, Any]) -> Resources:
    """What a task of ``td`` with ``overrides`` reserves on its instance (see the module docstring)."""
    task_cpu, task_memory = task_size(td, overrides)
    limits = _container_limits(td, overrides)
    cpu = task_cpu if task_cpu is not None else sum(c for c, _, _ in limits)
    if task_memory is not None:
        memory = task_memory
    else:
        memory = sum((r if r is not None else (m or 0)) for _, m, r in limits)
    tcp, udp = host_ports(td)
    enis = 1 if td.effective_network_mode is NetworkMode.AWSVPC else 0  # RESOURCE:ENI
    return Resources(cpu=cpu, memory=memory, ports=tcp, ports_udp=udp, enis=enis)


@dataclass(frozen=True)
class TaskShape:
    """What every task of one definition with one set of overrides shares (``task_shape``), so a
    RunTask of several tasks works it out once rather than once per task."""

    cpu: int | None  # task level, after overrides
    memory: int | None
    limits: tuple[tuple[int, int | None, int | None], ...]  # per container: cpu, memory, reservation
    reservation: Resources  # ``needs``


def task_shape(td: TaskDefinition, overrides: Mapping[str, Any]) -> TaskShape:
    cpu, memory = task_size(td, overrides)
    return TaskShape(cpu, memory, tuple(_container_limits(td, overrides)), needs(td, overrides))


def new_task(
    *,
    region: str,
    account: str,
    cluster: str,
    task_id: str,
    container_ids: Sequence[str],
    td: TaskDefinition,
    overrides: Mapping[str, Any],
    instance_arn: str,
    instance_id: str,
    group: str,
    started_by: str | None,
    tags: tuple[Tag, ...],
    now: float,
    availability_zone: str | None = None,
    gates: tuple[str, ...] = (),
    service: str | None = None,
    shape: TaskShape | None = None,
) -> Task:
    """A task just placed on ``instance_arn``: PROVISIONING, desired RUNNING. ``shape``: the
    ``task_shape(td, overrides)`` the caller already has."""
    if shape is None:
        shape = task_shape(td, overrides)
    containers = tuple(
        _built(
            Container,
            _CONTAINER_DEFAULTS,
            {
                "name": c.name,
                "arn": arns.container_arn(region, account, cluster, task_id, cid),
                "image": c.image,
                "cpu": cpu,
                "memory": memory,
                "memory_reservation": reservation,
            },
        )
        for c, cid, (cpu, memory, reservation) in zip(
            td.container_definitions, container_ids, shape.limits, strict=True
        )
    )
    return _built(
        Task,
        _TASK_DEFAULTS,
        {
            "arn": arns.task_arn(region, account, cluster, task_id),
            "id": task_id,
            "cluster": cluster,
            "cluster_arn": arns.cluster_arn(region, account, cluster),
            "task_definition_arn": td.arn,
            "container_instance_arn": instance_arn,
            "instance_id": instance_id,
            "containers": containers,
            "reservation": shape.reservation,
            "created_at": now,
            "group": group,
            "cpu": shape.cpu,
            "memory": shape.memory,
            "overrides": dict(overrides),
            "started_by": started_by,
            "tags": tags,
            "availability_zone": availability_zone,
            "gates": gates,
            "service": service,
        },
    )


_T = TypeVar("_T", Task, Container)


def _defaults(cls: type[_T]) -> dict[str, Any]:
    """The default of each field of ``cls`` that has a plain one (not a factory's)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


_TASK_DEFAULTS = _defaults(Task)
_CONTAINER_DEFAULTS = _defaults(Container)


def _built(cls: type[_T], defaults: Mapping[str, Any], values: Mapping[str, Any]) -> _T:
    """``cls(**values)`` without ``__init__`` (these classes have no ``__post_init__``): a frozen
    dataclass's ``__init__`` sets every field through ``object.__setattr__``, which for a task's 34
    fields was most of what building a task cost, and RunTask builds one per task placed. ``values``
    must give every field that ``defaults`` (``_defaults(cls)``) does not. (``from_document`` uses it
    too: decoding builds every task the cache loads or another process writes.)"""
    new = object.__new__(cls)
    new.__dict__.update(defaults)
    new.__dict__.update(values)
    return new
