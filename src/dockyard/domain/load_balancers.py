"""Load balancers, listeners and rules as ELBv2 defines them (PURE: values in, values out).

ARNs, in AWS's formats (``<kind>`` is ``app`` for application and ``net`` for network)::

    arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/<kind>/<name>/<lb id>
    arn:aws:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<tg id>
    arn:aws:elasticloadbalancing:<region>:<account>:listener/<kind>/<lb name>/<lb id>/<listener id>
    arn:aws:elasticloadbalancing:<region>:<account>:listener-rule/<kind>/<lb name>/<lb id>/<listener>/<rule>

Ids are 16 hex digits. A listener's default rule is not stored: it is derived from the listener
(``default_rule``), priority ``default``, its actions the listener's default actions.

What Dockyard supports today: application load balancers with HTTP listeners and network load
balancers with TCP listeners; ``forward`` actions to one target group; ``path-pattern`` and
``host-header`` conditions. Everything else is refused with the error AWS would use for an
unsupported combination, and a message that says what is supported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dockyard.domain.elb_errors import (
    DuplicateTagKeys,
    InvalidLoadBalancerAction,
    TooManyTags,
    ValidationError,
)

PARTITION = "aws"
SERVICE = "elasticloadbalancing"
APPLICATION = "application"
NETWORK = "network"
KIND = {APPLICATION: "app", NETWORK: "net"}
TYPE_OF_KIND = {v: k for k, v in KIND.items()}
INTERNET_FACING = "internet-facing"
INTERNAL = "internal"
HOSTED_ZONE_ID = "ZDOCKYARDELB0001"  # CanonicalHostedZoneId: Dockyard has no Route 53 zone
MAX_TAGS = 50
MAX_CONDITION_VALUES = 5
MAX_PATTERN_LENGTH = 128

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$")
_ID = re.compile(r"^[0-9a-f]{16}$")
_PATH_PATTERN = re.compile(r"^[A-Za-z0-9_\-.$/~\"'@:+&*?]+$")
_HOST_PATTERN = re.compile(r"^[A-Za-z0-9\-.*?]+$")
_SHOWN = 300

Tag = tuple[str, str]


# ---- names and ARNs ------------------------------------------------------------------------------


def check_name(name: str, what: str = "load balancer") -> str:
    """ELBv2 names: 1 to 32 letters, digits and hyphens, not starting or ending with a hyphen."""
    if not _NAME.match(name):
        raise ValidationError(
            f"{what.capitalize()} name '{name[:_SHOWN]}' cannot be longer than '32' characters, must "
            "contain only alphanumeric characters or hyphens, and cannot begin or end with a hyphen"
        )
    if what == "load balancer" and name.lower().startswith("internal-"):
        raise ValidationError(f"Load balancer name '{name}' cannot begin with 'internal-'")
    return name


def _arn(region: str, account: str, resource: str) -> str:
    return f"arn:{PARTITION}:{SERVICE}:{region}:{account}:{resource}"


def load_balancer_arn(region: str, account: str, lb_type: str, name: str, lb_id: str) -> str:
    return _arn(region, account, f"loadbalancer/{KIND[lb_type]}/{name}/{lb_id}")


def target_group_arn(region: str, account: str, name: str, tg_id: str) -> str:
    return _arn(region, account, f"targetgroup/{name}/{tg_id}")


def listener_arn(region: str, account: str, lb_type: str, lb_name: str, lb_id: str, listener_id: str) -> str:
    return _arn(region, account, f"listener/{KIND[lb_type]}/{lb_name}/{lb_id}/{listener_id}")


def rule_arn(
    region: str, account: str, lb_type: str, lb_name: str, lb_id: str, listener_id: str, rule_id: str
) -> str:
    return _arn(region, account, f"listener-rule/{KIND[lb_type]}/{lb_name}/{lb_id}/{listener_id}/{rule_id}")


@dataclass(frozen=True)
class ElbArn:
    """A parsed ELBv2 ARN. ``parts`` are the resource's path segments after its kind."""

    region: str
    account: str
    resource_type: str  # loadbalancer | targetgroup | listener | listener-rule
    parts: tuple[str, ...]

    @property
    def lb_type(self) -> str:
        return TYPE_OF_KIND[self.parts[0]]


_ARN_SHAPES = {
    # resource type: (segments after the type, whether the first one is the kind app|net)
    "loadbalancer": (3, True),
    "targetgroup": (2, False),
    "listener": (4, True),
    "listener-rule": (5, True),
}


def parse_arn(text: str, resource_type: str) -> ElbArn:
    """Split an ELBv2 ARN of ``resource_type``; ``ValidationError`` when it is not one."""
    bad = ValidationError(f"'{text[:_SHOWN]}' is not a valid {resource_type.replace('-', ' ')} ARN")
    pieces = text.split(":", 5)
    if len(pieces) != 6 or pieces[0] != "arn" or pieces[2] != SERVICE or not pieces[3] or not pieces[4]:
        raise bad
    path = pieces[5].split("/")
    count, has_kind = _ARN_SHAPES[resource_type]
    if path[0] != resource_type or len(path) != count + 1 or not all(path[1:]):
        raise bad
    segments = tuple(path[1:])
    if has_kind and segments[0] not in TYPE_OF_KIND:
        raise bad
    ids = segments[2:] if has_kind else segments[1:]
    if not all(_ID.match(i) for i in ids):
        raise bad
    return ElbArn(region=pieces[3], account=pieces[4], resource_type=resource_type, parts=segments)


def dns_name(name: str, lb_id: str, region: str, scheme: str, suffix: str) -> str:
    """``<name>-<digits>.<region>.<suffix>`` (``internal-`` first for internal load balancers)."""
    digits = str(int(lb_id[:8], 16)).rjust(10, "0")
    prefix = "internal-" if scheme == INTERNAL else ""
    return f"{prefix}{name}-{digits}.{region}.{suffix}".lower()


# ---- tags ----------------------------------------------------------------------------------------


def parse_tags(wire: Sequence[Mapping[str, Any]] | None) -> tuple[Tag, ...]:
    """ELBv2 tags ``[{Key, Value}]``: keys unique in one request, the ``aws:`` prefix reserved."""
    out: dict[str, str] = {}
    for t in wire or ():
        key = str(t.get("Key", ""))
        if key.lower().startswith("aws:"):
            raise ValidationError(f"Tag key '{key[:_SHOWN]}' uses the reserved prefix 'aws:'")
        if key in out:
            raise DuplicateTagKeys(f"Tag key '{key[:_SHOWN]}' is duplicated")
        out[key] = str(t.get("Value", ""))
    if len(out) > MAX_TAGS:
        raise TooManyTags(f"A resource can have at most {MAX_TAGS} tags")
    return tuple(out.items())


def merge_tags(current: Iterable[Tag], added: Iterable[Tag]) -> tuple[Tag, ...]:
    merged = dict(current)
    merged.update(added)
    if len(merged) > MAX_TAGS:
        raise TooManyTags(f"A resource can have at most {MAX_TAGS} tags; this would make {len(merged)}")
    return tuple(merged.items())


def remove_tags(current: Iterable[Tag], keys: Iterable[str]) -> tuple[Tag, ...]:
    drop = set(keys)
    return tuple((k, v) for k, v in current if k not in drop)


def tags_wire(tags: Iterable[Tag]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags]


def tags_from_document(doc: Mapping[str, Any]) -> tuple[Tag, ...]:
    return tuple((str(k), str(v)) for k, v in doc.get("tags", ()))


# ---- load balancers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadBalancer:
    arn: str
    name: str
    id: str
    type: str
    scheme: str
    ip_address_type: str
    address: str  # the loopback address it listens on and reaches targets from
    dns_name: str
    created_at: float
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    tags: tuple[Tag, ...] = ()
    deleting: bool = False  # DeleteLoadBalancer's first step: no listener may be added any more
    attributes: Mapping[str, str] = field(default_factory=dict)  # as given; defaults in ``attribute_map``
    # its address in its first subnet, where it reaches targets from: {subnetId, address, cidr,
    # gateway, networkName, networkInterfaceId}; empty when CreateLoadBalancer named no subnets
    interface: Mapping[str, str] = field(default_factory=dict)

    def attribute_map(self) -> dict[str, str]:
        return {**default_lb_attributes(self.type), **self.attributes}

    def idle_timeout(self) -> int:
        return int(self.attribute_map().get(IDLE_TIMEOUT, "60"))

    def to_document(self) -> dict[str, Any]:
        return {
            "arn": self.arn,
            "name": self.name,
            "id": self.id,
            "deleting": self.deleting,
            "attributes": dict(self.attributes),
            "type": self.type,
            "scheme": self.scheme,
            "ipAddressType": self.ip_address_type,
            "address": self.address,
            "dnsName": self.dns_name,
            "createdAt": self.created_at,
            "subnets": list(self.subnets),
            "securityGroups": list(self.security_groups),
            "tags": [list(t) for t in self.tags],
            "interface": dict(self.interface),
        }

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> LoadBalancer:
        return LoadBalancer(
            arn=doc["arn"],
            name=doc["name"],
            id=doc["id"],
            type=doc["type"],
            scheme=doc["scheme"],
            ip_address_type=doc.get("ipAddressType", "ipv4"),
            address=doc["address"],
            dns_name=doc["dnsName"],
            created_at=float(doc["createdAt"]),
            subnets=tuple(doc.get("subnets", ())),
            security_groups=tuple(doc.get("securityGroups", ())),
            tags=tags_from_document(doc),
            deleting=bool(doc.get("deleting", False)),
            attributes=dict(doc.get("attributes") or {}),
            interface={str(k): str(v) for k, v in (doc.get("interface") or {}).items()},
        )

    def to_wire(self, state: str, reason: str | None = None, zone: str = "") -> dict[str, Any]:
        zones = [
            {
                "ZoneName": zone,
                "SubnetId": subnet,
                "LoadBalancerAddresses": [{"IpAddress": self.address}] if self.type == NETWORK else [],
            }
            for subnet in self.subnets
        ]
        out: dict[str, Any] = {
            "LoadBalancerArn": self.arn,
            "DNSName": self.dns_name,
            "CanonicalHostedZoneId": HOSTED_ZONE_ID,
            "CreatedTime": self.created_at,
            "LoadBalancerName": self.name,
            "Scheme": self.scheme,
            "State": {"Code": state, **({"Reason": reason} if reason else {})},
            "Type": self.type,
            "AvailabilityZones": zones,
            "IpAddressType": self.ip_address_type,
        }
        if self.type == APPLICATION or self.security_groups:
            out["SecurityGroups"] = list(self.security_groups)
        return out


# ---- load balancer attributes ----

DELETION_PROTECTION = "deletion_protection.enabled"
IDLE_TIMEOUT = "idle_timeout.timeout_seconds"
_LB_BOOL = ("true", "false")
# key -> (application default, network default, allowed values or an inclusive integer range)
_LB_ATTRIBUTES: dict[str, tuple[str | None, str | None, tuple[str, ...] | tuple[int, int]]] = {
    DELETION_PROTECTION: ("false", "false", _LB_BOOL),
    IDLE_TIMEOUT: ("60", None, (1, 4000)),
    "routing.http2.enabled": ("true", None, _LB_BOOL),
    "routing.http.drop_invalid_header_fields.enabled": ("false", None, _LB_BOOL),
    "load_balancing.cross_zone.enabled": ("true", "false", _LB_BOOL),
    "access_logs.s3.enabled": ("false", "false", ("false",)),  # nothing leaves the machine
    "access_logs.s3.bucket": ("", "", ()),
    "access_logs.s3.prefix": ("", "", ()),
}


def default_lb_attributes(lb_type: str) -> dict[str, str]:
    column = 0 if lb_type == APPLICATION else 1
    out: dict[str, str] = {}
    for key, row in _LB_ATTRIBUTES.items():
        value = row[column]
        if isinstance(value, str):
            out[key] = value
    return out


def apply_lb_attributes(
    lb_type: str, current: Mapping[str, str], changes: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """``current`` with ``[{Key, Value}]`` applied, checked; keys are those of ``lb_type``."""
    known = default_lb_attributes(lb_type)
    out = dict(current)
    for change in changes:
        key, value = str(change.get("Key", "")), str(change.get("Value", ""))
        if key not in known:
            raise ValidationError(f"Load balancer attribute key '{key[:_SHOWN]}' is not recognized")
        allowed = _LB_ATTRIBUTES[key][2]
        if len(allowed) == 2 and all(isinstance(a, int) for a in allowed):
            low, high = int(allowed[0]), int(allowed[1])
            if not (value.isdigit() and low <= int(value) <= high):
                raise ValidationError(f"'{key}' must be a whole number from {low} to {high}")
        elif allowed and value not in allowed:
            raise ValidationError(f"'{key}' must be one of {', '.join(str(a) for a in allowed)}")
        out[key] = value
    return out


# ---- actions and conditions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """A ``forward`` action to one target group (the only action type Dockyard carries today)."""

    target_group_arn: str
    order: int | None = None

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "forward", "targetGroupArn": self.target_group_arn}
        if self.order is not None:
            doc["order"] = self.order
        return doc

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> Action:
        return Action(target_group_arn=doc["targetGroupArn"], order=doc.get("order"))

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Type": "forward",
            "TargetGroupArn": self.target_group_arn,
            "ForwardConfig": {
                "TargetGroups": [{"TargetGroupArn": self.target_group_arn, "Weight": 1}],
                "TargetGroupStickinessConfig": {"Enabled": False},
            },
        }
        if self.order is not None:
            out["Order"] = self.order
        return out


def parse_actions(wire: Sequence[Mapping[str, Any]]) -> tuple[Action, ...]:
    """``DefaultActions``/``Actions``: exactly one ``forward`` to one target group."""
    if len(wire) != 1:
        raise InvalidLoadBalancerAction(
            "Dockyard supports exactly one action per listener or rule: a forward action"
        )
    action = wire[0]
    if action.get("Type") != "forward":
        raise InvalidLoadBalancerAction(
            f"Action type '{action.get('Type')}' is not supported by Dockyard; use 'forward'"
        )
    arns: list[str] = []
    if action.get("TargetGroupArn"):
        arns.append(str(action["TargetGroupArn"]))
    forward = action.get("ForwardConfig") or {}
    for group in forward.get("TargetGroups") or ():
        arn = str(group.get("TargetGroupArn", ""))
        if arn and arn not in arns:
            arns.append(arn)
    if not arns:
        raise ValidationError("A target group ARN must be specified for a forward action")
    if len(arns) > 1:
        raise InvalidLoadBalancerAction(
            "Dockyard forwards to one target group per action; got " + str(len(arns))
        )
    parse_arn(arns[0], "targetgroup")
    return (Action(target_group_arn=arns[0], order=action.get("Order")),)


PATH_PATTERN = "path-pattern"
HOST_HEADER = "host-header"


@dataclass(frozen=True)
class Condition:
    field: str  # path-pattern | host-header
    values: tuple[str, ...]

    def to_document(self) -> dict[str, Any]:
        return {"field": self.field, "values": list(self.values)}

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> Condition:
        return Condition(field=doc["field"], values=tuple(doc["values"]))

    def to_wire(self) -> dict[str, Any]:
        config = "PathPatternConfig" if self.field == PATH_PATTERN else "HostHeaderConfig"
        return {"Field": self.field, "Values": list(self.values), config: {"Values": list(self.values)}}


def parse_conditions(wire: Sequence[Mapping[str, Any]]) -> tuple[Condition, ...]:
    """``Conditions``: path-pattern and host-header, in the old (``Values``) or new (``*Config``) form."""
    out: list[Condition] = []
    seen: set[str] = set()
    for item in wire:
        name = item.get("Field")
        if name not in (PATH_PATTERN, HOST_HEADER):
            raise ValidationError(
                f"Condition field '{name}' is not supported by Dockyard; use 'path-pattern' or 'host-header'"
            )
        config = item.get("PathPatternConfig" if name == PATH_PATTERN else "HostHeaderConfig") or {}
        if config.get("RegexValues") or item.get("RegexValues"):
            raise ValidationError("Regular-expression condition values are not supported by Dockyard")
        values = [str(v) for v in (item.get("Values") or ())]
        config_values = [str(v) for v in (config.get("Values") or ())]
        if values and config_values:
            raise ValidationError(
                f"Specify the values of the '{name}' condition either in Values or in its config"
            )
        values = values or config_values
        if not values:
            raise ValidationError(f"A '{name}' condition needs at least one value")
        if name in seen:
            raise ValidationError(f"A rule can have only one '{name}' condition")
        seen.add(name)
        pattern = _PATH_PATTERN if name == PATH_PATTERN else _HOST_PATTERN
        for value in values:
            if len(value) > MAX_PATTERN_LENGTH or not pattern.match(value):
                raise ValidationError(
                    f"Condition value '{value[:_SHOWN]}' is not a valid {name} pattern: up to "
                    f"{MAX_PATTERN_LENGTH} characters of letters, digits, the allowed punctuation and * or ?"
                )
        out.append(Condition(field=name, values=tuple(values)))
    if not out:
        raise ValidationError("A rule must have at least one condition")
    if sum(len(c.values) for c in out) > MAX_CONDITION_VALUES:
        raise ValidationError(f"A rule can have at most {MAX_CONDITION_VALUES} condition values in total")
    return tuple(out)


# ---- listeners and rules -------------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    arn: str
    load_balancer_arn: str
    id: str
    port: int
    protocol: str
    default_actions: tuple[Action, ...]
    default_rule_id: str
    tags: tuple[Tag, ...] = ()

    def to_document(self) -> dict[str, Any]:
        return {
            "arn": self.arn,
            "loadBalancerArn": self.load_balancer_arn,
            "id": self.id,
            "port": self.port,
            "protocol": self.protocol,
            "defaultActions": [a.to_document() for a in self.default_actions],
            "defaultRuleId": self.default_rule_id,
            "tags": [list(t) for t in self.tags],
        }

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> Listener:
        return Listener(
            arn=doc["arn"],
            load_balancer_arn=doc["loadBalancerArn"],
            id=doc["id"],
            port=int(doc["port"]),
            protocol=doc["protocol"],
            default_actions=tuple(Action.from_document(a) for a in doc["defaultActions"]),
            default_rule_id=doc["defaultRuleId"],
            tags=tags_from_document(doc),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "ListenerArn": self.arn,
            "LoadBalancerArn": self.load_balancer_arn,
            "Port": self.port,
            "Protocol": self.protocol,
            "DefaultActions": [a.to_wire() for a in self.default_actions],
        }

    def default_rule_arn(self) -> str:
        arn = parse_arn(self.arn, "listener")
        kind, lb_name, lb_id, listener_id = arn.parts
        return rule_arn(
            arn.region, arn.account, TYPE_OF_KIND[kind], lb_name, lb_id, listener_id, self.default_rule_id
        )

    def target_group_arns(self) -> tuple[str, ...]:
        return tuple(a.target_group_arn for a in self.default_actions)


@dataclass(frozen=True)
class Rule:
    arn: str
    listener_arn: str
    id: str
    priority: int
    conditions: tuple[Condition, ...]
    actions: tuple[Action, ...]
    tags: tuple[Tag, ...] = field(default=())

    def to_document(self) -> dict[str, Any]:
        return {
            "arn": self.arn,
            "listenerArn": self.listener_arn,
            "id": self.id,
            "priority": self.priority,
            "conditions": [c.to_document() for c in self.conditions],
            "actions": [a.to_document() for a in self.actions],
            "tags": [list(t) for t in self.tags],
        }

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> Rule:
        return Rule(
            arn=doc["arn"],
            listener_arn=doc["listenerArn"],
            id=doc["id"],
            priority=int(doc["priority"]),
            conditions=tuple(Condition.from_document(c) for c in doc["conditions"]),
            actions=tuple(Action.from_document(a) for a in doc["actions"]),
            tags=tags_from_document(doc),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "RuleArn": self.arn,
            "Priority": str(self.priority),
            "Conditions": [c.to_wire() for c in self.conditions],
            "Actions": [a.to_wire() for a in self.actions],
            "IsDefault": False,
        }

    def target_group_arns(self) -> tuple[str, ...]:
        return tuple(a.target_group_arn for a in self.actions)


def default_rule_wire(listener: Listener) -> dict[str, Any]:
    """The listener's default rule as DescribeRules shows it."""
    return {
        "RuleArn": listener.default_rule_arn(),
        "Priority": "default",
        "Conditions": [],
        "Actions": [a.to_wire() for a in listener.default_actions],
        "IsDefault": True,
    }


LISTENER_PROTOCOLS = {APPLICATION: ("HTTP",), NETWORK: ("TCP",)}
TARGET_GROUP_PROTOCOLS = {"HTTP": ("HTTP",), "TCP": ("TCP",)}
