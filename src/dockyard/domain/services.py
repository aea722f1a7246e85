"""Services: a desired number of tasks of a task definition kept running (REPLICA), or one task on
every ACTIVE container instance (DAEMON), rolled out through deployments (``domain.deployments``).

    status:  ACTIVE -> DRAINING (DeleteService: its tasks are stopped) -> INACTIVE (no task left;
             describable for a while, then expired; the name may then be used again)

The service document holds its deployments and its events (newest first, bounded), so the one
``mod_revision`` of the document covers both: a controller that compares it when it starts or stops
tasks compares the service *and* its deployments, and any change to either (UpdateService, another
controller's decision) makes it re-read and re-decide.

Counts (runningCount, pendingCount, per deployment too) are never stored: DescribeServices derives
them from the watch-fed task cache.

Pure: validation of the request members that only concern the service, the wire shapes, and the
builders that UpdateService, DeleteService and the controller use to make the next value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from dockyard.domain.deployments import Deployment, DeploymentStatus, demoted, new_deployment
from dockyard.domain.errors import InvalidParameter
from dockyard.domain.tags import Tag
from dockyard.domain.task_definitions import TaskDefinition

SERVICE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
MAX_EVENTS = 100
MAX_CLIENT_TOKEN = 36
MAX_GRACE_PERIOD = 2_147_483_647
GROUP_PREFIX = "service:"


class SchedulingStrategy(StrEnum):
    REPLICA = "REPLICA"
    DAEMON = "DAEMON"


class ServiceStatus(StrEnum):
    ACTIVE = "ACTIVE"
    DRAINING = "DRAINING"
    INACTIVE = "INACTIVE"


class PropagateTags(StrEnum):
    NONE = "NONE"
    SERVICE = "SERVICE"
    TASK_DEFINITION = "TASK_DEFINITION"


# ---- deployment configuration --------------------------------------------------------------------


@dataclass(frozen=True)
class CircuitBreaker:
    enable: bool = False
    rollback: bool = False


@dataclass(frozen=True)
class DeploymentConfiguration:
    minimum_healthy_percent: int = 100
    maximum_percent: int = 200
    circuit_breaker: CircuitBreaker = field(default_factory=CircuitBreaker)

    def min_healthy(self, desired: int) -> int:
        """Healthy tasks that must remain: ceil(minimumHealthyPercent x desired / 100)."""
        return (self.minimum_healthy_percent * desired + 99) // 100

    def max_tasks(self, desired: int) -> int:
        """Tasks allowed in RUNNING or PENDING: floor(maximumPercent x desired / 100)."""
        return self.maximum_percent * desired // 100

    def to_wire(self) -> dict[str, Any]:
        return {
            "deploymentCircuitBreaker": {
                "enable": self.circuit_breaker.enable,
                "rollback": self.circuit_breaker.rollback,
            },
            "maximumPercent": self.maximum_percent,
            "minimumHealthyPercent": self.minimum_healthy_percent,
        }

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> DeploymentConfiguration:
        breaker = doc.get("deploymentCircuitBreaker") or {}
        return DeploymentConfiguration(
            minimum_healthy_percent=int(doc.get("minimumHealthyPercent", 100)),
            maximum_percent=int(doc.get("maximumPercent", 200)),
            circuit_breaker=CircuitBreaker(bool(breaker.get("enable")), bool(breaker.get("rollback"))),
        )


def default_configuration(strategy: SchedulingStrategy) -> DeploymentConfiguration:
    """100/200 for REPLICA, 0/100 for DAEMON (ECS's defaults)."""
    if strategy is SchedulingStrategy.DAEMON:
        return DeploymentConfiguration(minimum_healthy_percent=0, maximum_percent=100)
    return DeploymentConfiguration()


_UNSUPPORTED_DEPLOYMENT_MEMBERS = ("alarms", "bakeTimeInMinutes", "lifecycleHooks", "linearConfiguration")


def parse_deployment_configuration(
    wire: Mapping[str, Any] | None, strategy: SchedulingStrategy, base: DeploymentConfiguration | None = None
) -> DeploymentConfiguration:
    """CreateService/UpdateService ``deploymentConfiguration`` over ``base`` (the defaults when None).

    What Dockyard does not do (alarms, blue/green strategies, bake time, lifecycle hooks, custom
    breaker thresholds) is refused with InvalidParameterException naming it, never ignored.
    """
    out = base or default_configuration(strategy)
    if not wire:
        return out
    for member in _UNSUPPORTED_DEPLOYMENT_MEMBERS:
        value = wire.get(member)
        if value and not (member == "alarms" and not value.get("enable")):
            raise InvalidParameter(f"deploymentConfiguration.{member} is not supported by Dockyard yet.")
    if wire.get("strategy") not in (None, "ROLLING"):
        raise InvalidParameter("Dockyard supports only the ROLLING deployment strategy.")
    if wire.get("canaryConfiguration"):
        raise InvalidParameter(
            "deploymentConfiguration.canaryConfiguration is not supported by Dockyard yet."
        )
    minimum = wire.get("minimumHealthyPercent", out.minimum_healthy_percent)
    maximum = wire.get("maximumPercent", out.maximum_percent)
    if not 0 <= minimum <= 100:
        raise InvalidParameter("deploymentConfiguration.minimumHealthyPercent must be between 0 and 100.")
    if strategy is SchedulingStrategy.DAEMON:
        if maximum != 100:
            raise InvalidParameter("deploymentConfiguration.maximumPercent must be 100 for a DAEMON service.")
    elif not 100 <= maximum <= 200:
        raise InvalidParameter("deploymentConfiguration.maximumPercent must be between 100 and 200.")
    breaker = out.circuit_breaker
    wire_breaker = wire.get("deploymentCircuitBreaker")
    if wire_breaker is not None:
        if wire_breaker.get("thresholdConfiguration") or wire_breaker.get("resetOnHealthyTask") is False:
            raise InvalidParameter(
                "Dockyard's circuit breaker uses ECS's default threshold (0.5 x desiredCount, 3..200, reset "
                "on a healthy task); thresholdConfiguration and resetOnHealthyTask=false are not supported."
            )
        breaker = CircuitBreaker(bool(wire_breaker.get("enable")), bool(wire_breaker.get("rollback")))
    return DeploymentConfiguration(int(minimum), int(maximum), breaker)


# ---- request members -------------------------------------------------------------------------------


def check_service_name(name: str) -> str:
    if not SERVICE_NAME.match(name or ""):
        raise InvalidParameter(
            "Service names can have up to 255 letters (uppercase and lowercase), numbers, underscores, "
            "and hyphens."
        )
    return name


def check_grace_period(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= MAX_GRACE_PERIOD:
        raise InvalidParameter(f"healthCheckGracePeriodSeconds must be between 0 and {MAX_GRACE_PERIOD}.")
    return value


def check_desired_count(value: int | None) -> int | None:
    if value is not None and value < 0:
        raise InvalidParameter("desiredCount cannot be negative.")
    return value


# ---- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceEvent:
    id: str
    created_at: float
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "createdAt": self.created_at, "message": self.message}

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> ServiceEvent:
        return ServiceEvent(str(doc["id"]), float(doc["createdAt"]), str(doc["message"]))


# ---- the service ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceCounts:
    """Task counts derived from the task cache: per service, and per deployment id."""

    running: int = 0
    pending: int = 0
    by_deployment: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # id -> (running, pending)


@dataclass(frozen=True)
class Service:
    arn: str
    name: str
    cluster: str
    cluster_arn: str
    scheduling_strategy: SchedulingStrategy
    desired_count: int
    deployment_configuration: DeploymentConfiguration
    deployments: tuple[Deployment, ...]
    created_at: float
    status: ServiceStatus = ServiceStatus.ACTIVE
    launch_type: str = "EC2"
    events: tuple[ServiceEvent, ...] = ()  # newest first
    created_by: str | None = None
    role_arn: str | None = None
    # as the wire has them (validated by the scheduler's parsers); empty strategy: ECS's default
    placement_constraints: tuple[Mapping[str, str], ...] = ()
    placement_strategy: tuple[Mapping[str, str], ...] = ()
    health_check_grace_period: int | None = None
    tags: tuple[Tag, ...] = ()
    enable_ecs_managed_tags: bool = False
    propagate_tags: PropagateTags = PropagateTags.NONE
    enable_execute_command: bool = False
    availability_zone_rebalancing: str = "DISABLED"
    client_token: str | None = None
    fingerprint: str = ""  # of the CreateService request, for its idempotency
    steady: bool = False  # the last "has reached a steady state" still holds
    inactive_since: float | None = None
    # ELBv2 target groups its tasks are registered with, as the wire has them (checked by
    # CreateService): {targetGroupArn, containerName, containerPort}
    load_balancers: tuple[Mapping[str, Any], ...] = ()
    # awsvpc: {"awsvpcConfiguration": {subnets, securityGroups, assignPublicIp}} as CreateService
    # or UpdateService last checked it (the VPC's default group filled in): what a new deployment
    # takes. Each deployment keeps its own copy, which its tasks get (``network_for``)
    network_configuration: Mapping[str, Any] | None = None

    @property
    def group(self) -> str:
        """The ``group`` of the service's tasks (ECS's ``service:NAME``)."""
        return GROUP_PREFIX + self.name

    @property
    def primary(self) -> Deployment | None:
        for d in self.deployments:
            if d.status is DeploymentStatus.PRIMARY:
                return d
        return None

    @property
    def task_definition_arn(self) -> str:
        primary = self.primary
        return primary.task_definition_arn if primary is not None else ""

    def deployment(self, dep_id: str | None) -> Deployment | None:
        for d in self.deployments:
            if d.id == dep_id:
                return d
        return None

    def network_for(self, deployment: Deployment) -> Mapping[str, Any] | None:
        """The ``networkConfiguration`` the tasks of ``deployment`` get: its own (the service's for
        a deployment stored before deployments carried one)."""
        if deployment.network_configuration is not None:
            return deployment.network_configuration
        return self.network_configuration

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "serviceArn": self.arn,
            "serviceName": self.name,
            "cluster": self.cluster,
            "clusterArn": self.cluster_arn,
            "schedulingStrategy": self.scheduling_strategy.value,
            "desiredCount": self.desired_count,
            "deploymentConfiguration": self.deployment_configuration.to_wire(),
            "deployments": [d.to_document() for d in self.deployments],
            "createdAt": self.created_at,
            "status": self.status.value,
            "launchType": self.launch_type,
            "events": [e.to_wire() for e in self.events],
            "placementConstraints": [dict(c) for c in self.placement_constraints],
            "placementStrategy": [dict(s) for s in self.placement_strategy],
            "tags": [{"key": k, "value": v} for k, v in self.tags],
            "enableECSManagedTags": self.enable_ecs_managed_tags,
            "propagateTags": self.propagate_tags.value,
            "enableExecuteCommand": self.enable_execute_command,
            "availabilityZoneRebalancing": self.availability_zone_rebalancing,
            "fingerprint": self.fingerprint,
            "steady": self.steady,
            "loadBalancers": [dict(lb) for lb in self.load_balancers],
        }
        for key, value in (
            ("createdBy", self.created_by),
            ("roleArn", self.role_arn),
            ("healthCheckGracePeriodSeconds", self.health_check_grace_period),
            ("clientToken", self.client_token),
            ("inactiveSince", self.inactive_since),
            ("networkConfiguration", self.network_configuration),
        ):
            if value is not None:
                doc[key] = value
        return doc

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> Service:
        return Service(
            arn=doc["serviceArn"],
            name=doc["serviceName"],
            cluster=doc["cluster"],
            cluster_arn=doc["clusterArn"],
            scheduling_strategy=SchedulingStrategy(doc.get("schedulingStrategy", "REPLICA")),
            desired_count=int(doc.get("desiredCount", 0)),
            deployment_configuration=DeploymentConfiguration.from_document(
                doc.get("deploymentConfiguration") or {}
            ),
            deployments=tuple(Deployment.from_document(d) for d in doc.get("deployments", ())),
            created_at=float(doc.get("createdAt", 0.0)),
            status=ServiceStatus(doc.get("status", "ACTIVE")),
            launch_type=str(doc.get("launchType", "EC2")),
            events=tuple(ServiceEvent.from_document(e) for e in doc.get("events", ())),
            created_by=doc.get("createdBy"),
            role_arn=doc.get("roleArn"),
            placement_constraints=tuple(doc.get("placementConstraints") or ()),
            placement_strategy=tuple(doc.get("placementStrategy") or ()),
            health_check_grace_period=doc.get("healthCheckGracePeriodSeconds"),
            tags=tuple((t["key"], t.get("value", "")) for t in doc.get("tags", ())),
            enable_ecs_managed_tags=bool(doc.get("enableECSManagedTags", False)),
            propagate_tags=PropagateTags(doc.get("propagateTags", "NONE")),
            enable_execute_command=bool(doc.get("enableExecuteCommand", False)),
            availability_zone_rebalancing=str(doc.get("availabilityZoneRebalancing", "DISABLED")),
            client_token=doc.get("clientToken"),
            fingerprint=str(doc.get("fingerprint", "")),
            steady=bool(doc.get("steady", False)),
            inactive_since=doc.get("inactiveSince"),
            load_balancers=tuple(doc.get("loadBalancers") or ()),
            network_configuration=doc.get("networkConfiguration"),
        )

    def to_wire(self, counts: ServiceCounts, include_tags: bool = False) -> dict[str, Any]:
        """ECS's Service shape (DescribeServices, CreateService, ...)."""
        deployments = []
        for d in self.deployments:
            running, pending = counts.by_deployment.get(d.id, (0, 0))
            shown = d.to_wire(running, pending)
            network = self.network_for(d)
            if network is not None:
                shown["networkConfiguration"] = network
            deployments.append(shown)
        primary = self.primary
        network = self.network_for(primary) if primary is not None else self.network_configuration
        out: dict[str, Any] = {
            "serviceArn": self.arn,
            "serviceName": self.name,
            "clusterArn": self.cluster_arn,
            "loadBalancers": [dict(lb) for lb in self.load_balancers],
            "serviceRegistries": [],
            "status": self.status.value,
            "desiredCount": self.desired_count,
            "runningCount": counts.running,
            "pendingCount": counts.pending,
            "launchType": self.launch_type,
            "taskDefinition": self.task_definition_arn,
            "deploymentConfiguration": self.deployment_configuration.to_wire(),
            "deployments": deployments,
            "events": [e.to_wire() for e in self.events],
            "createdAt": self.created_at,
            "placementConstraints": [dict(c) for c in self.placement_constraints],
            "placementStrategy": [dict(s) for s in self.placement_strategy],
            "schedulingStrategy": self.scheduling_strategy.value,
            "deploymentController": {"type": "ECS"},
            "enableECSManagedTags": self.enable_ecs_managed_tags,
            "propagateTags": self.propagate_tags.value,
            "enableExecuteCommand": self.enable_execute_command,
            "availabilityZoneRebalancing": self.availability_zone_rebalancing,
        }
        for key, value in (
            ("createdBy", self.created_by),
            ("roleArn", self.role_arn),
            ("healthCheckGracePeriodSeconds", self.health_check_grace_period),
            ("networkConfiguration", network),
        ):
            if value is not None:
                out[key] = value
        if include_tags:
            out["tags"] = [{"key": k, "value": v} for k, v in self.tags]
        return out


# ---- builders -------------------------------------------------------------------------------------


def new_service(
    *,
    arn: str,
    name: str,
    cluster: str,
    cluster_arn: str,
    td: TaskDefinition,
    strategy: SchedulingStrategy,
    desired_count: int,
    configuration: DeploymentConfiguration,
    deployment_id: str,
    now: float,
    **options: Any,
) -> Service:
    """A new ACTIVE service with its first PRIMARY deployment (``options``: the other fields)."""
    first = new_deployment(deployment_id, td, desired_count, now)
    first = replace(first, network_configuration=options.get("network_configuration"))
    return Service(
        arn=arn,
        name=name,
        cluster=cluster,
        cluster_arn=cluster_arn,
        scheduling_strategy=strategy,
        desired_count=desired_count,
        deployment_configuration=configuration,
        deployments=(first,),
        created_at=now,
        **options,
    )


_KEEP: Any = object()


def with_new_deployment(
    service: Service,
    td: TaskDefinition,
    deployment_id: str,
    now: float,
    network_configuration: Mapping[str, Any] | None = _KEEP,
) -> Service:
    """UpdateService with a new task definition, network configuration or forceNewDeployment: a new
    PRIMARY with ``network_configuration`` (the service's when not given), which becomes the
    service's; the old PRIMARY becomes ACTIVE and drains; older ACTIVE ones keep draining. Each
    keeps its own configuration (the service's former one copied into those stored before
    deployments carried one)."""
    network = service.network_configuration if network_configuration is _KEEP else network_configuration
    older = tuple(
        replace(demoted(d, now), network_configuration=service.network_for(d)) for d in service.deployments
    )
    primary = new_deployment(deployment_id, td, service.desired_count, now)
    primary = replace(primary, network_configuration=network)
    return replace(service, deployments=(primary, *older), network_configuration=network, steady=False)


def scaled(service: Service, desired_count: int, now: float) -> Service:
    """A new desiredCount; the PRIMARY deployment follows it."""
    if desired_count == service.desired_count:
        return service
    deployments = tuple(
        replace(d, desired_count=desired_count, updated_at=now) if d.status is DeploymentStatus.PRIMARY else d
        for d in service.deployments
    )
    return replace(service, desired_count=desired_count, deployments=deployments, steady=False)


def draining(service: Service, now: float) -> Service:
    """DeleteService: DRAINING with desiredCount 0 (the controller stops the tasks)."""
    return replace(scaled(service, 0, now), status=ServiceStatus.DRAINING, steady=False)


def inactive(service: Service, now: float) -> Service:
    """The last task of a DRAINING service stopped: INACTIVE, without deployments."""
    return replace(service, status=ServiceStatus.INACTIVE, deployments=(), inactive_since=now, steady=False)


def with_events(service: Service, events: Sequence[ServiceEvent], limit: int = MAX_EVENTS) -> Service:
    """``events`` (newest first) put before the service's, keeping the newest ``limit``."""
    if not events:
        return service
    return replace(service, events=(*events, *service.events)[:limit])
