"""Task definitions: the ECS TaskDefinition object, its container definitions and its lifecycle.

Representation. A task definition carries some fifty wire fields, most of which Dockyard passes
through to Docker unchanged (environment, ulimits, linuxParameters, logConfiguration, ...). Typing all
of them would double the code without making any decision clearer, so the dataclasses below give
typed fields only to what the control plane and the agent reason about (family, revision, status,
task cpu/memory, networkMode, compatibilities, and per container name, image, cpu, memory,
memoryReservation, essential, portMappings, dependsOn, healthCheck) and keep the complete wire
mapping beside them (``wire``), so a definition round-trips exactly as registered. ``to_wire``
overlays the typed fields on that mapping. The stored document is the wire JSON (camelCase) plus
the resource's ``tags``; ``from_wire`` reads either.

Validation, normalisation of task cpu/memory and the derived ``compatibilities`` and
``requiresAttributes`` live in ``task_definition_rules``; this module is the data and its
lifecycle: ACTIVE -> (DeregisterTaskDefinition) INACTIVE -> (DeleteTaskDefinitions)
DELETE_IN_PROGRESS -> removed by the retention loop. Revisions are never reused.

``TaskDefinitionFamily`` is a family's revision counter and counts, O(1) in size however many
revisions the family has; the revisions themselves are documents of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from dockyard.domain.tags import Tag


class TaskDefinitionStatus(StrEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"


class Compatibility(StrEnum):
    EC2 = "EC2"
    FARGATE = "FARGATE"
    EXTERNAL = "EXTERNAL"
    MANAGED_INSTANCES = "MANAGED_INSTANCES"


class NetworkMode(StrEnum):
    BRIDGE = "bridge"
    HOST = "host"
    AWSVPC = "awsvpc"
    NONE = "none"


class DependencyCondition(StrEnum):
    START = "START"
    COMPLETE = "COMPLETE"
    SUCCESS = "SUCCESS"
    HEALTHY = "HEALTHY"


DEFAULT_NETWORK_MODE = NetworkMode.BRIDGE
_NETWORK_MODES = frozenset(m.value for m in NetworkMode)

# healthCheck defaults, as ECS fills them in
HEALTH_CHECK_INTERVAL = 30
HEALTH_CHECK_TIMEOUT = 5
HEALTH_CHECK_RETRIES = 3
HEALTH_CHECK_START_PERIOD = 0


def _opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _opt_str(value: Any) -> str | None:
    return str(value) if value is not None else None


@dataclass(frozen=True)
class PortMapping:
    container_port: int | None
    host_port: int | None = None  # None (or 0 in bridge mode): a dynamic host port
    protocol: str = "tcp"
    container_port_range: str | None = None
    wire: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def from_wire(m: Mapping[str, Any]) -> PortMapping:
        return PortMapping(
            container_port=_opt_int(m.get("containerPort")),
            host_port=_opt_int(m.get("hostPort")),
            protocol=str(m.get("protocol") or "tcp"),
            container_port_range=_opt_str(m.get("containerPortRange")),
            wire=dict(m),
        )

    def to_wire(self) -> dict[str, Any]:
        out = dict(self.wire)
        if self.container_port is not None:
            out["containerPort"] = self.container_port
        if self.host_port is not None:
            out["hostPort"] = self.host_port
        out["protocol"] = self.protocol
        if self.container_port_range is not None:
            out["containerPortRange"] = self.container_port_range
        return out


@dataclass(frozen=True)
class ContainerDependency:
    container_name: str
    condition: str

    @staticmethod
    def from_wire(m: Mapping[str, Any]) -> ContainerDependency:
        return ContainerDependency(
            container_name=str(m.get("containerName") or ""), condition=str(m.get("condition") or "")
        )

    def to_wire(self) -> dict[str, Any]:
        return {"containerName": self.container_name, "condition": self.condition}


@dataclass(frozen=True)
class HealthCheck:
    command: tuple[str, ...]
    interval: int = HEALTH_CHECK_INTERVAL
    timeout: int = HEALTH_CHECK_TIMEOUT
    retries: int = HEALTH_CHECK_RETRIES
    start_period: int = HEALTH_CHECK_START_PERIOD

    @staticmethod
    def from_wire(m: Mapping[str, Any]) -> HealthCheck:
        def get(name: str, default: int) -> int:
            value = m.get(name)
            return default if value is None else int(value)

        return HealthCheck(
            command=tuple(str(c) for c in m.get("command") or ()),
            interval=get("interval", HEALTH_CHECK_INTERVAL),
            timeout=get("timeout", HEALTH_CHECK_TIMEOUT),
            retries=get("retries", HEALTH_CHECK_RETRIES),
            start_period=get("startPeriod", HEALTH_CHECK_START_PERIOD),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "command": list(self.command),
            "interval": self.interval,
            "timeout": self.timeout,
            "retries": self.retries,
            "startPeriod": self.start_period,
        }


@dataclass(frozen=True)
class ContainerDefinition:
    name: str
    image: str
    cpu: int = 0
    memory: int | None = None  # hard limit, MiB
    memory_reservation: int | None = None  # soft limit, MiB
    essential: bool = True
    port_mappings: tuple[PortMapping, ...] = ()
    depends_on: tuple[ContainerDependency, ...] = ()
    health_check: HealthCheck | None = None
    wire: Mapping[str, Any] = field(default_factory=dict)  # every field as registered

    @property
    def reserved_memory(self) -> int | None:
        """What placement reserves for the container: memoryReservation if set, else memory."""
        return self.memory_reservation if self.memory_reservation is not None else self.memory

    @staticmethod
    def from_wire(m: Mapping[str, Any]) -> ContainerDefinition:
        health = m.get("healthCheck")
        essential = m.get("essential")
        return ContainerDefinition(
            name=str(m.get("name") or ""),
            image=str(m.get("image") or ""),
            cpu=int(m.get("cpu") or 0),
            memory=_opt_int(m.get("memory")),
            memory_reservation=_opt_int(m.get("memoryReservation")),
            essential=True if essential is None else bool(essential),
            port_mappings=tuple(PortMapping.from_wire(p) for p in m.get("portMappings") or ()),
            depends_on=tuple(ContainerDependency.from_wire(d) for d in m.get("dependsOn") or ()),
            health_check=HealthCheck.from_wire(health) if health is not None else None,
            wire=dict(m),
        )

    def to_wire(self) -> dict[str, Any]:
        """The container as ECS describes it: as registered, with ECS's defaults filled in."""
        out: dict[str, Any] = {"name": self.name, "image": self.image, "cpu": self.cpu}
        if self.memory is not None:
            out["memory"] = self.memory
        if self.memory_reservation is not None:
            out["memoryReservation"] = self.memory_reservation
        out["portMappings"] = [p.to_wire() for p in self.port_mappings]
        out["essential"] = self.essential
        for name in ("environment", "mountPoints", "volumesFrom"):
            out[name] = self.wire.get(name, [])
        if self.depends_on:
            out["dependsOn"] = [d.to_wire() for d in self.depends_on]
        if self.health_check is not None:
            out["healthCheck"] = self.health_check.to_wire()
        for name, value in self.wire.items():
            if name not in _CONTAINER_TYPED:
                out.setdefault(name, value)
        return out


# wire fields that the typed attributes above own
_CONTAINER_TYPED = frozenset(
    {
        "name",
        "image",
        "cpu",
        "memory",
        "memoryReservation",
        "essential",
        "portMappings",
        "dependsOn",
        "healthCheck",
    }
)


@dataclass(frozen=True)
class TaskDefinition:
    family: str
    container_definitions: tuple[ContainerDefinition, ...]
    revision: int = 0  # 0 until registered
    arn: str = ""
    status: TaskDefinitionStatus = TaskDefinitionStatus.ACTIVE
    network_mode: NetworkMode | None = None  # None: not given (bridge on Linux)
    cpu: int | None = None  # CPU units (1 vCPU = 1024)
    memory: int | None = None  # MiB
    requires_compatibilities: tuple[str, ...] = ()
    compatibilities: tuple[str, ...] = ()
    requires_attributes: tuple[str, ...] = ()
    task_role_arn: str | None = None
    execution_role_arn: str | None = None
    registered_at: float | None = None
    registered_by: str | None = None
    deregistered_at: float | None = None
    delete_requested_at: float | None = None
    tags: tuple[Tag, ...] = ()
    wire: Mapping[str, Any] = field(default_factory=dict)  # every task-level field as registered

    @property
    def effective_network_mode(self) -> NetworkMode:
        return self.network_mode or DEFAULT_NETWORK_MODE

    @property
    def family_revision(self) -> str:
        return f"{self.family}:{self.revision}"

    def container(self, name: str) -> ContainerDefinition | None:
        for c in self.container_definitions:
            if c.name == name:
                return c
        return None

    @staticmethod
    def from_wire(doc: Mapping[str, Any]) -> TaskDefinition:
        """From a stored document or a RegisterTaskDefinition request (validate that separately)."""
        network_mode = doc.get("networkMode")
        tags = doc.get("tags") or ()
        return TaskDefinition(
            family=str(doc.get("family") or ""),
            container_definitions=tuple(
                ContainerDefinition.from_wire(c) for c in doc.get("containerDefinitions") or ()
            ),
            revision=int(doc.get("revision") or 0),
            arn=str(doc.get("taskDefinitionArn") or ""),
            status=TaskDefinitionStatus(doc.get("status") or TaskDefinitionStatus.ACTIVE),
            network_mode=NetworkMode(network_mode) if network_mode in _NETWORK_MODES else None,
            cpu=_opt_int(doc.get("cpu")) if _is_int_text(doc.get("cpu")) else None,
            memory=_opt_int(doc.get("memory")) if _is_int_text(doc.get("memory")) else None,
            requires_compatibilities=tuple(str(c) for c in doc.get("requiresCompatibilities") or ()),
            compatibilities=tuple(str(c) for c in doc.get("compatibilities") or ()),
            requires_attributes=tuple(str(a["name"]) for a in doc.get("requiresAttributes") or ()),
            task_role_arn=_opt_str(doc.get("taskRoleArn")),
            execution_role_arn=_opt_str(doc.get("executionRoleArn")),
            registered_at=_opt_float(doc.get("registeredAt")),
            registered_by=_opt_str(doc.get("registeredBy")),
            deregistered_at=_opt_float(doc.get("deregisteredAt")),
            delete_requested_at=_opt_float(doc.get("deleteRequestedAt")),
            tags=tuple((str(t["key"]), str(t.get("value", ""))) for t in tags),
            wire={k: v for k, v in doc.items() if k != "tags"},
        )

    def to_wire(self) -> dict[str, Any]:
        """The TaskDefinition shape of the ECS API (tags are not part of it)."""
        out: dict[str, Any] = {}
        if self.arn:
            out["taskDefinitionArn"] = self.arn
        out["containerDefinitions"] = [c.to_wire() for c in self.container_definitions]
        out["family"] = self.family
        if self.task_role_arn is not None:
            out["taskRoleArn"] = self.task_role_arn
        if self.execution_role_arn is not None:
            out["executionRoleArn"] = self.execution_role_arn
        if self.network_mode is not None:
            out["networkMode"] = self.network_mode.value
        if self.revision:
            out["revision"] = self.revision
        out["volumes"] = self.wire.get("volumes", [])
        out["status"] = self.status.value
        out["requiresAttributes"] = [{"name": a} for a in self.requires_attributes]
        out["placementConstraints"] = self.wire.get("placementConstraints", [])
        out["compatibilities"] = list(self.compatibilities)
        if self.requires_compatibilities:
            out["requiresCompatibilities"] = list(self.requires_compatibilities)
        if self.cpu is not None:
            out["cpu"] = str(self.cpu)
        if self.memory is not None:
            out["memory"] = str(self.memory)
        for name, value in self.wire.items():
            if name not in _TASK_TYPED:
                out.setdefault(name, value)
        for name, at in (
            ("registeredAt", self.registered_at),
            ("deregisteredAt", self.deregistered_at),
            ("deleteRequestedAt", self.delete_requested_at),
        ):
            if at is not None:
                out[name] = at
        if self.registered_by is not None:
            out["registeredBy"] = self.registered_by
        return out

    def to_document(self) -> dict[str, Any]:
        """What the store keeps: the wire shape plus the resource's tags."""
        doc = self.to_wire()
        doc["tags"] = [{"key": k, "value": v} for k, v in self.tags]
        return doc


# wire fields that the typed attributes of TaskDefinition own
_TASK_TYPED = frozenset(
    {
        "taskDefinitionArn",
        "containerDefinitions",
        "family",
        "taskRoleArn",
        "executionRoleArn",
        "networkMode",
        "revision",
        "status",
        "requiresAttributes",
        "compatibilities",
        "requiresCompatibilities",
        "cpu",
        "memory",
        "registeredAt",
        "registeredBy",
        "deregisteredAt",
        "deleteRequestedAt",
        "tags",
    }
)


def _is_int_text(value: Any) -> bool:
    return isinstance(value, int | str) and str(value).isascii() and str(value).isdigit()


def _opt_float(value: Any) -> float | None:
    return float(value) if value is not None else None


def registered(
    draft: TaskDefinition, *, arn: str, revision: int, now: float, registered_by: str
) -> TaskDefinition:
    """The draft of a RegisterTaskDefinition request, as registered under ``revision``."""
    return replace(
        draft,
        arn=arn,
        revision=revision,
        status=TaskDefinitionStatus.ACTIVE,
        registered_at=now,
        registered_by=registered_by,
        deregistered_at=None,
        delete_requested_at=None,
    )


def deregistered(td: TaskDefinition, now: float) -> TaskDefinition:
    """ACTIVE -> INACTIVE; deregistering an INACTIVE one changes nothing."""
    if td.status is not TaskDefinitionStatus.ACTIVE:
        return td
    return replace(td, status=TaskDefinitionStatus.INACTIVE, deregistered_at=now)


def delete_requested(td: TaskDefinition, now: float) -> TaskDefinition:
    """INACTIVE -> DELETE_IN_PROGRESS (the caller checks the status first); idempotent."""
    if td.status is TaskDefinitionStatus.DELETE_IN_PROGRESS:
        return td
    return replace(td, status=TaskDefinitionStatus.DELETE_IN_PROGRESS, delete_requested_at=now)


def retagged(td: TaskDefinition, tags: Sequence[Tag]) -> TaskDefinition:
    return replace(td, tags=tuple(tags))


# ---- the family record ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskDefinitionFamily:
    """One family's revision counter and counts; never deleted, so revisions are never reused.

    ``last_revision`` only grows (registration takes the next ones); ``active`` counts ACTIVE
    revisions and ``stored`` every revision not yet removed (ACTIVE, INACTIVE or DELETE_IN_PROGRESS);
    ``latest_active`` is what the bare family name resolves to (None when nothing is ACTIVE).
    """

    name: str
    last_revision: int = 0
    active: int = 0
    stored: int = 0
    latest_active: int | None = None

    @staticmethod
    def from_document(doc: Mapping[str, Any], name: str) -> TaskDefinitionFamily:
        legacy = doc.get("activeRevisions")  # the earlier shape listed every ACTIVE revision
        if legacy is not None and "activeCount" not in doc:
            active, latest = len(legacy), max(legacy, default=None)
        else:
            active, latest = int(doc.get("activeCount", 0)), _opt_int(doc.get("latestActiveRevision"))
        return TaskDefinitionFamily(
            name=str(doc.get("family", name)),
            last_revision=int(doc.get("lastRevision", 0)),
            active=active,
            stored=int(doc.get("storedRevisions", 0)),
            latest_active=latest,
        )

    def to_document(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "lastRevision": self.last_revision,
            "activeCount": self.active,
            "storedRevisions": self.stored,
            "latestActiveRevision": self.latest_active,
        }

    @property
    def all_active(self) -> bool:
        """Every stored revision is ACTIVE."""
        return self.active == self.stored

    @property
    def every_revision_active(self) -> bool:
        """The ACTIVE revisions are exactly 1..last_revision (none deregistered or removed)."""
        return self.active == self.stored == self.last_revision

    def listed(self, status: str) -> bool:
        """Whether ListTaskDefinitionFamilies shows the family for ``status`` (ACTIVE, INACTIVE, ALL)."""
        if status == "ACTIVE":
            return self.active > 0
        if status == "INACTIVE":
            return self.active == 0 and self.stored > 0
        return self.stored > 0

    def registered(self, count: int) -> tuple[TaskDefinitionFamily, range]:
        """After registering ``count`` revisions at once: the record and their (consecutive) revisions."""
        revisions = range(self.last_revision + 1, self.last_revision + count + 1)
        return (
            replace(
                self,
                last_revision=revisions[-1] if count else self.last_revision,
                active=self.active + count,
                stored=self.stored + count,
                latest_active=revisions[-1] if count else self.latest_active,
            ),
            revisions,
        )

    def needs_new_latest(self, revision: int) -> bool:
        """Deregistering ``revision`` leaves another ACTIVE revision to find as the latest."""
        return revision == self.latest_active and self.active > 1

    def deregistered(self, revision: int, next_latest: int | None = None) -> TaskDefinitionFamily:
        """After ACTIVE ``revision`` became INACTIVE; ``next_latest``: the highest ACTIVE one below it,
        needed when ``needs_new_latest(revision)``."""
        latest = self.latest_active
        if revision == latest:
            latest = next_latest if self.active > 1 else None
        return replace(self, active=max(0, self.active - 1), latest_active=latest)

    def removed(self) -> TaskDefinitionFamily:
        """After a DELETE_IN_PROGRESS revision's document was removed."""
        return replace(self, stored=max(0, self.stored - 1))
