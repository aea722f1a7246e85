"""Target groups, their health checks and attributes, target registrations and target health (PURE).

A registration is one (target id, port) in a target group. Deregistering does not delete it: it
records ``drainUntil`` (now + ``deregistration_delay.timeout_seconds``); until then the target is
``draining`` (the data plane stops sending it new requests and lets in-flight ones finish), after it
the registration is gone, whoever removes the document. Time is an input everywhere here.

Target health as DescribeTargetHealth reports it (``describe_health``)::

    not registered / drained         unused     Target.NotRegistered
    deregistered, delay running      draining   Target.DeregistrationInProgress
    group not used by a listener     unused     Target.NotInUse
    no observation for this          initial    Elb.RegistrationInProgress
      registration yet
    data plane: checks not decided   initial    Elb.InitialHealthChecking
    data plane: UP                   healthy
    data plane: DOWN                 unhealthy  Target.ResponseCodeMismatch | Target.Timeout |
                                                Target.FailedHealthChecks

The data plane's observations (``HealthRecord``) carry the registration id they were made for, so a
target registered again after a deregistration never inherits the old verdict.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dockyard.domain.elb_errors import InvalidConfigurationRequest, ValidationError
from dockyard.domain.load_balancers import APPLICATION, NETWORK, Tag, tags_from_document

INSTANCE = "instance"
IP = "ip"
TRAFFIC_PORT = "traffic-port"
_MATCHER = re.compile(r"^\d{3}(?:-\d{3})?(?:,\d{3}(?:-\d{3})?)*$")
_INSTANCE_ID = re.compile(r"^i-[0-9a-zA-Z]{1,64}$")
_SHOWN = 300

# ---- health checks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheck:
    protocol: str  # HTTP | TCP
    port: str  # "traffic-port" or a port number
    path: str | None
    interval: int
    timeout: int
    healthy_threshold: int
    unhealthy_threshold: int
    matcher: str | None  # HTTP codes: "200", "200,202", "200-299"
    enabled: bool = True

    def to_document(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "port": self.port,
            "path": self.path,
            "interval": self.interval,
            "timeout": self.timeout,
            "healthy": self.healthy_threshold,
            "unhealthy": self.unhealthy_threshold,
            "matcher": self.matcher,
            "enabled": self.enabled,
        }

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> HealthCheck:
        return HealthCheck(
            protocol=doc["protocol"],
            port=doc["port"],
            path=doc.get("path"),
            interval=int(doc["interval"]),
            timeout=int(doc["timeout"]),
            healthy_threshold=int(doc["healthy"]),
            unhealthy_threshold=int(doc["unhealthy"]),
            matcher=doc.get("matcher"),
            enabled=bool(doc.get("enabled", True)),
        )

    def port_number(self, traffic_port: int) -> int:
        return traffic_port if self.port == TRAFFIC_PORT else int(self.port)


def default_health_check(protocol: str) -> HealthCheck:
    """AWS's defaults: HTTP groups check ``GET /`` every 30 s; TCP groups open a connection."""
    if protocol == "HTTP":
        return HealthCheck("HTTP", TRAFFIC_PORT, "/", 30, 5, 5, 2, "200")
    return HealthCheck("TCP", TRAFFIC_PORT, None, 30, 10, 5, 2, None)


def apply_health_check(base: HealthCheck, req: Mapping[str, Any], target_type: str) -> HealthCheck:
    """``base`` with the request's HealthCheck* members applied, checked against ELBv2's rules."""
    hc = base
    protocol = req.get("HealthCheckProtocol")
    if protocol is not None:
        if protocol not in ("HTTP", "TCP"):
            raise ValidationError(
                f"Health check protocol '{protocol}' is not supported by Dockyard; use HTTP or TCP"
            )
        if protocol != hc.protocol:
            hc = replace(
                hc,
                protocol=protocol,
                path=(hc.path or "/") if protocol == "HTTP" else None,
                matcher=(hc.matcher or "200") if protocol == "HTTP" else None,
            )
    if "HealthCheckPort" in req:
        port = str(req["HealthCheckPort"])
        if port != TRAFFIC_PORT and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValidationError(f"Health check port '{port[:_SHOWN]}' must be 'traffic-port' or 1 to 65535")
        hc = replace(hc, port=port)
    if "HealthCheckPath" in req:
        path = str(req["HealthCheckPath"])
        if hc.protocol != "HTTP":
            raise ValidationError("A health check path can be set only for HTTP health checks")
        if not path.startswith("/") or any(c.isspace() for c in path):
            raise ValidationError(
                f"Health check path '{path[:_SHOWN]}' must start with '/' and contain no spaces"
            )
        hc = replace(hc, path=path)
    matcher = (req.get("Matcher") or {}).get("HttpCode")
    if matcher is not None:
        if hc.protocol != "HTTP":
            raise ValidationError("A matcher can be set only for HTTP health checks")
        hc = replace(hc, matcher=check_matcher(str(matcher)))
    hc = replace(
        hc,
        interval=int(req.get("HealthCheckIntervalSeconds", hc.interval)),
        timeout=int(req.get("HealthCheckTimeoutSeconds", hc.timeout)),
        healthy_threshold=int(req.get("HealthyThresholdCount", hc.healthy_threshold)),
        unhealthy_threshold=int(req.get("UnhealthyThresholdCount", hc.unhealthy_threshold)),
    )
    if "HealthCheckEnabled" in req:
        if not req["HealthCheckEnabled"] and target_type in (INSTANCE, IP):
            raise InvalidConfigurationRequest(
                "Health checks cannot be disabled for target groups with target type 'instance' or 'ip'"
            )
        hc = replace(hc, enabled=bool(req["HealthCheckEnabled"]))
    if hc.timeout >= hc.interval:
        raise ValidationError("Health check interval must be greater than the timeout")
    return hc


def check_matcher(text: str) -> str:
    if not _MATCHER.match(text):
        raise ValidationError(
            f"Matcher HttpCode '{text[:_SHOWN]}' must be codes like 200, 200,202 or 200-299"
        )
    for part in text.split(","):
        low, _, high = part.partition("-")
        if not (200 <= int(low) <= 599 and 200 <= int(high or low) <= 599 and int(low) <= int(high or low)):
            raise ValidationError(f"Matcher HttpCode '{text}' must use codes from 200 to 599")
    return text


def matched_codes(matcher: str) -> list[tuple[int, int]]:
    """``"200,202-204"`` -> ``[(200, 200), (202, 204)]``."""
    out = []
    for part in matcher.split(","):
        low, _, high = part.partition("-")
        out.append((int(low), int(high or low)))
    return out


# ---- attributes ----------------------------------------------------------------------------------

DEREGISTRATION_DELAY = "deregistration_delay.timeout_seconds"
ALGORITHM = "load_balancing.algorithm.type"
SLOW_START = "slow_start.duration_seconds"
PROXY_PROTOCOL = "proxy_protocol_v2.enabled"

_BOOL = ("true", "false")
# key -> (default for application target groups, default for network ones, check); None: not offered
_ATTRIBUTES: dict[str, tuple[str | None, str | None, Any]] = {
    DEREGISTRATION_DELAY: ("300", "300", (0, 3600)),
    "stickiness.enabled": ("false", "false", _BOOL),
    "stickiness.type": ("lb_cookie", "source_ip", ("lb_cookie", "app_cookie", "source_ip")),
    "stickiness.lb_cookie.duration_seconds": ("86400", None, (1, 604800)),
    ALGORITHM: ("round_robin", None, ("round_robin", "least_outstanding_requests")),
    SLOW_START: ("0", None, (0, 900)),
    "deregistration_delay.connection_termination.enabled": (None, "false", _BOOL),
    "preserve_client_ip.enabled": (None, "false", ("false",)),
    PROXY_PROTOCOL: (None, "false", _BOOL),
}


def default_attributes(lb_type: str) -> dict[str, str]:
    column = 0 if lb_type == APPLICATION else 1
    return {k: v[column] for k, v in _ATTRIBUTES.items() if v[column] is not None}  # type: ignore[misc]


def apply_attributes(current: Mapping[str, str], changes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """``current`` with ``[{Key, Value}]`` applied; unknown keys and bad values are ValidationErrors."""
    out = dict(current)
    for change in changes:
        key, value = str(change.get("Key", "")), str(change.get("Value", ""))
        if key not in out:
            raise ValidationError(f"Target group attribute key '{key[:_SHOWN]}' is not recognized")
        check = _ATTRIBUTES[key][2]
        if isinstance(check, tuple) and len(check) == 2 and all(isinstance(b, int) for b in check):
            low, high = check
            if not (value.isdigit() and low <= int(value) <= high):
                raise ValidationError(
                    f"'{key}' must be a whole number from {low} to {high}, not '{value[:_SHOWN]}'"
                )
            if key == SLOW_START and 0 < int(value) < 30:
                raise ValidationError(f"'{key}' must be 0 or from 30 to 900")
        elif value not in check:
            raise ValidationError(f"'{key}' must be one of {', '.join(check)}, not '{value[:_SHOWN]}'")
        out[key] = value
    return out


# ---- target groups -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetGroup:
    arn: str
    name: str
    id: str
    protocol: str
    port: int
    vpc_id: str
    target_type: str
    health_check: HealthCheck
    attributes: Mapping[str, str]
    created_at: float
    # listeners and rules that forward here -> the load balancer each belongs to
    users: Mapping[str, str] = field(default_factory=dict)
    ip_address_type: str = "ipv4"
    tags: tuple[Tag, ...] = ()

    @property
    def lb_type(self) -> str:
        return APPLICATION if self.protocol == "HTTP" else NETWORK

    def load_balancer_arns(self) -> list[str]:
        return sorted(set(self.users.values()))

    def in_use(self) -> bool:
        return bool(self.users)

    def deregistration_delay(self) -> int:
        return int(self.attributes.get(DEREGISTRATION_DELAY, "300"))

    def to_document(self) -> dict[str, Any]:
        return {
            "arn": self.arn,
            "name": self.name,
            "id": self.id,
            "protocol": self.protocol,
            "port": self.port,
            "vpcId": self.vpc_id,
            "targetType": self.target_type,
            "healthCheck": self.health_check.to_document(),
            "attributes": dict(self.attributes),
            "createdAt": self.created_at,
            "users": dict(self.users),
            "ipAddressType": self.ip_address_type,
            "tags": [list(t) for t in self.tags],
        }

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> TargetGroup:
        return TargetGroup(
            arn=doc["arn"],
            name=doc["name"],
            id=doc["id"],
            protocol=doc["protocol"],
            port=int(doc["port"]),
            vpc_id=doc["vpcId"],
            target_type=doc["targetType"],
            health_check=HealthCheck.from_document(doc["healthCheck"]),
            attributes=dict(doc["attributes"]),
            created_at=float(doc["createdAt"]),
            users=dict(doc.get("users") or {}),
            ip_address_type=doc.get("ipAddressType", "ipv4"),
            tags=tags_from_document(doc),
        )

    def to_wire(self) -> dict[str, Any]:
        hc = self.health_check
        out: dict[str, Any] = {
            "TargetGroupArn": self.arn,
            "TargetGroupName": self.name,
            "Protocol": self.protocol,
            "Port": self.port,
            "VpcId": self.vpc_id,
            "HealthCheckProtocol": hc.protocol,
            "HealthCheckPort": hc.port,
            "HealthCheckEnabled": hc.enabled,
            "HealthCheckIntervalSeconds": hc.interval,
            "HealthCheckTimeoutSeconds": hc.timeout,
            "HealthyThresholdCount": hc.healthy_threshold,
            "UnhealthyThresholdCount": hc.unhealthy_threshold,
            "LoadBalancerArns": self.load_balancer_arns(),
            "TargetType": self.target_type,
            "IpAddressType": self.ip_address_type,
        }
        if hc.path is not None:
            out["HealthCheckPath"] = hc.path
        if hc.matcher is not None:
            out["Matcher"] = {"HttpCode": hc.matcher}
        if self.protocol == "HTTP":
            out["ProtocolVersion"] = "HTTP1"
        return out

    def attributes_wire(self) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in sorted(self.attributes.items())]


def check_target_group_request(req: Mapping[str, Any]) -> tuple[str, int, str]:
    """CreateTargetGroup's protocol, port and target type, or the error AWS gives for them."""
    target_type = req.get("TargetType") or INSTANCE
    if target_type not in (INSTANCE, IP):
        raise ValidationError(
            f"Target type '{target_type}' is not supported by Dockyard; use 'instance' or 'ip'"
        )
    protocol, port = req.get("Protocol"), req.get("Port")
    if protocol is None or port is None:
        raise ValidationError(f"A protocol and port must be specified for target type '{target_type}'")
    if protocol not in ("HTTP", "TCP"):
        raise ValidationError(
            f"Target group protocol '{protocol}' is not supported by Dockyard; use HTTP or TCP"
        )
    if not req.get("VpcId"):
        raise ValidationError(f"A VPC ID must be specified for target type '{target_type}'")
    if req.get("ProtocolVersion") not in (None, "HTTP1"):
        raise ValidationError("Only protocol version HTTP1 is supported by Dockyard")
    if req.get("IpAddressType") not in (None, "ipv4"):
        raise ValidationError("Only IPv4 target groups are supported by Dockyard")
    return protocol, int(port), target_type


# ---- registrations and health --------------------------------------------------------------------


def target_key(target_id: str, port: int) -> str:
    """One registration's key segment; also its server name in the data plane."""
    return f"{target_id}_{port}"


def check_target(target_type: str, target_id: str) -> None:
    if target_type == INSTANCE:
        if not _INSTANCE_ID.match(target_id):
            raise ValidationError(f"Target id '{target_id[:_SHOWN]}' is not a valid instance id")
        return
    try:
        address = ipaddress.ip_address(target_id)
    except ValueError:
        raise ValidationError(f"Target id '{target_id[:_SHOWN]}' is not a valid IPv4 address") from None
    if address.version != 4:
        raise ValidationError("Only IPv4 targets are supported by Dockyard")


@dataclass(frozen=True)
class Registration:
    target_id: str
    port: int
    address: str  # where the data plane sends traffic: the instance's address, or the ip itself
    registered_at: float
    registration_id: str
    availability_zone: str | None = None
    drain_until: float | None = None  # set by DeregisterTargets

    @property
    def key(self) -> str:
        return target_key(self.target_id, self.port)

    def draining(self, now: float) -> bool:
        return self.drain_until is not None and now < self.drain_until

    def gone(self, now: float) -> bool:
        return self.drain_until is not None and now >= self.drain_until

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "targetId": self.target_id,
            "port": self.port,
            "address": self.address,
            "registeredAt": self.registered_at,
            "registrationId": self.registration_id,
        }
        if self.availability_zone is not None:
            doc["availabilityZone"] = self.availability_zone
        if self.drain_until is not None:
            doc["drainUntil"] = self.drain_until
        return doc

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> Registration:
        return Registration(
            target_id=doc["targetId"],
            port=int(doc["port"]),
            address=doc["address"],
            registered_at=float(doc["registeredAt"]),
            registration_id=doc["registrationId"],
            availability_zone=doc.get("availabilityZone"),
            drain_until=doc.get("drainUntil"),
        )

    def target_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Id": self.target_id, "Port": self.port}
        if self.availability_zone is not None:
            out["AvailabilityZone"] = self.availability_zone
        return out


INITIAL, HEALTHY, UNHEALTHY, DRAINING, UNUSED = "initial", "healthy", "unhealthy", "draining", "unused"


@dataclass(frozen=True)
class TargetHealth:
    state: str
    reason: str | None = None
    description: str | None = None

    def to_wire(self) -> dict[str, str]:
        out = {"State": self.state}
        if self.reason:
            out["Reason"] = self.reason
        if self.description:
            out["Description"] = self.description
        return out


@dataclass(frozen=True)
class HealthRecord:
    """What the data plane observed of one registration (written by the load-balancer reconciler)."""

    registration_id: str
    state: str  # initial | healthy | unhealthy
    reason: str | None = None
    description: str | None = None

    def to_document(self) -> dict[str, Any]:
        return {
            "registrationId": self.registration_id,
            "state": self.state,
            "reason": self.reason,
            "description": self.description,
        }

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> HealthRecord:
        return HealthRecord(doc["registrationId"], doc["state"], doc.get("reason"), doc.get("description"))


NOT_REGISTERED = TargetHealth(UNUSED, "Target.NotRegistered", "Target is not registered to the target group")


def describe_health(
    registration: Registration | None, in_use: bool, record: HealthRecord | None, now: float
) -> TargetHealth:
    if registration is None or registration.gone(now):
        return NOT_REGISTERED
    if registration.draining(now):
        return TargetHealth(
            DRAINING, "Target.DeregistrationInProgress", "Target deregistration is in progress"
        )
    if not in_use:
        return TargetHealth(
            UNUSED,
            "Target.NotInUse",
            "Target group is not configured to receive traffic from the load balancer",
        )
    if record is None or record.registration_id != registration.registration_id:
        return TargetHealth(INITIAL, "Elb.RegistrationInProgress", "Target registration is in progress")
    if record.state == INITIAL:
        return TargetHealth(INITIAL, "Elb.InitialHealthChecking", "Initial health checks in progress")
    if record.state == HEALTHY:
        return TargetHealth(HEALTHY)
    return TargetHealth(UNHEALTHY, record.reason, record.description)
