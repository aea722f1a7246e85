"""Clusters: the ECS Cluster object, its settings and tags, and the pure rules that apply to them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dockyard.domain.errors import InvalidParameter

CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
SETTING_NAMES = frozenset({"containerInsights"})
CONTAINER_INSIGHTS_VALUES = frozenset({"enabled", "disabled", "enhanced"})
ACTIVE = "ACTIVE"
INACTIVE = "INACTIVE"

Tag = tuple[str, str]


@dataclass(frozen=True)
class ClusterCounts:
    """Counts shown to users; derived from what exists, never stored as counters."""

    registered_container_instances: int = 0
    running_tasks: int = 0
    pending_tasks: int = 0
    active_services: int = 0
    draining_services: int = 0


@dataclass(frozen=True)
class Cluster:
    arn: str
    name: str
    status: str = ACTIVE
    settings: tuple[Tag, ...] = (("containerInsights", "disabled"),)
    tags: tuple[Tag, ...] = ()
    configuration: Mapping[str, Any] | None = None
    service_connect_defaults: Mapping[str, Any] | None = None
    capacity_providers: tuple[str, ...] = ()
    default_capacity_provider_strategy: tuple[Mapping[str, Any], ...] = ()
    created_at: float = 0.0
    inactive_since: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "clusterArn": self.arn,
            "clusterName": self.name,
            "status": self.status,
            "settings": [{"name": k, "value": v} for k, v in self.settings],
            "tags": [{"key": k, "value": v} for k, v in self.tags],
            "capacityProviders": list(self.capacity_providers),
            "defaultCapacityProviderStrategy": [dict(s) for s in self.default_capacity_provider_strategy],
            "createdAt": self.created_at,
        }
        if self.configuration is not None:
            doc["configuration"] = dict(self.configuration)
        if self.service_connect_defaults is not None:
            doc["serviceConnectDefaults"] = dict(self.service_connect_defaults)
        if self.inactive_since is not None:
            doc["inactiveSince"] = self.inactive_since
        return doc

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> Cluster:
        return Cluster(
            arn=doc["clusterArn"],
            name=doc["clusterName"],
            status=doc["status"],
            settings=tuple((s["name"], s["value"]) for s in doc.get("settings", ())),
            tags=tuple((t["key"], t.get("value", "")) for t in doc.get("tags", ())),
            configuration=doc.get("configuration"),
            service_connect_defaults=doc.get("serviceConnectDefaults"),
            capacity_providers=tuple(doc.get("capacityProviders", ())),
            default_capacity_provider_strategy=tuple(doc.get("defaultCapacityProviderStrategy", ())),
            created_at=float(doc.get("createdAt", 0.0)),
            inactive_since=doc.get("inactiveSince"),
        )

    def to_wire(self, counts: ClusterCounts, include: frozenset[str]) -> dict[str, Any]:
        """The DescribeClusters shape; SETTINGS, TAGS, STATISTICS and CONFIGURATIONS only when asked."""
        out: dict[str, Any] = {
            "clusterArn": self.arn,
            "clusterName": self.name,
            "status": self.status,
            "registeredContainerInstancesCount": counts.registered_container_instances,
            "runningTasksCount": counts.running_tasks,
            "pendingTasksCount": counts.pending_tasks,
            "activeServicesCount": counts.active_services,
            "statistics": [],
            "tags": [],
            "capacityProviders": list(self.capacity_providers),
            "defaultCapacityProviderStrategy": [dict(s) for s in self.default_capacity_provider_strategy],
        }
        if "SETTINGS" in include:
            out["settings"] = [{"name": k, "value": v} for k, v in self.settings]
        if "TAGS" in include:
            out["tags"] = [{"key": k, "value": v} for k, v in self.tags]
        if "STATISTICS" in include:
            out["statistics"] = [
                {"name": "runningEC2TasksCount", "value": str(counts.running_tasks)},
                {"name": "pendingEC2TasksCount", "value": str(counts.pending_tasks)},
                {"name": "activeEC2ServiceCount", "value": str(counts.active_services)},
                {"name": "drainingEC2ServiceCount", "value": str(counts.draining_services)},
                {"name": "runningFargateTasksCount", "value": "0"},
                {"name": "pendingFargateTasksCount", "value": "0"},
                {"name": "activeFargateServiceCount", "value": "0"},
                {"name": "drainingFargateServiceCount", "value": "0"},
            ]
        if "CONFIGURATIONS" in include and self.configuration is not None:
            out["configuration"] = dict(self.configuration)
        if self.service_connect_defaults is not None:
            out["serviceConnectDefaults"] = dict(self.service_connect_defaults)
        return out


def check_cluster_name(name: str) -> str:
    if not CLUSTER_NAME.match(name):
        raise InvalidParameter(
            "Cluster name must be 1 to 255 letters (uppercase and lowercase), numbers, hyphens and "
            f"underscores; got '{name[:300]}'."
        )
    return name


def parse_settings(settings: Sequence[Mapping[str, Any]]) -> tuple[Tag, ...]:
    out: dict[str, str] = {}
    for s in settings:
        name, value = s.get("name"), s.get("value")
        if name not in SETTING_NAMES:
            raise InvalidParameter(
                f"Unsupported cluster setting name: {name}. Valid names: containerInsights."
            )
        if value not in CONTAINER_INSIGHTS_VALUES:
            raise InvalidParameter(
                f"Invalid value '{value}' for cluster setting containerInsights; "
                "valid values are enabled, disabled and enhanced."
            )
        out[str(name)] = str(value)
    return tuple(out.items())


def merge_settings(current: tuple[Tag, ...], updates: tuple[Tag, ...]) -> tuple[Tag, ...]:
    merged = dict(current)
    merged.update(updates)
    return tuple(merged.items())


def deactivate(cluster: Cluster, now: float) -> Cluster:
    return replace(cluster, status=INACTIVE, inactive_since=now)
