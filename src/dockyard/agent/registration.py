"""What the agent tells the server about its host at RegisterContainerInstance.

    CPU        cores x 1024 (or --cpu-units)
    MEMORY     host MiB minus a reserve (or --memory-mib)
    PORTS      22, 2375, 2376, 51678, 51679 (reserved, as ECS does); PORTS_UDP none
    attributes ecs.os-type, ecs.cpu-architecture, ecs.availability-zone, ecs.capability.* below,
               and the operator's own (--attribute key=value)

Capabilities are what the agent can run, or what it will refuse with a clear stoppedReason rather
than have placement reject silently: secrets with ``valueFrom`` and ``repositoryCredentials``
(issue 3 asks for a ``ResourceInitializationError`` naming the feature; without the attribute the
task would never reach the agent) and ``privileged`` (refused unless --allow-privileged).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dockyard

RESERVED_PORTS = ["22", "2375", "2376", "51678", "51679"]
_DOCKER_API = "com.amazonaws.ecs.capability.docker-remote-api."
_DOCKER_API_VERSIONS = [f"1.{n}" for n in range(17, 45)]
CAPABILITIES = [
    "com.amazonaws.ecs.capability.logging-driver.json-file",
    "com.amazonaws.ecs.capability.logging-driver.awslogs",
    "com.amazonaws.ecs.capability.logging-driver.none",
    "com.amazonaws.ecs.capability.logging-driver.local",
    "com.amazonaws.ecs.capability.privileged-container",
    "ecs.capability.container-health-check",
    "ecs.capability.container-ordering",
    "ecs.capability.task-cpu-mem-limit",
    "ecs.capability.task-eni",  # awsvpc (agent/networking/)
    "ecs.capability.execution-role-awslogs",
    "ecs.capability.docker-plugin.local",
    "ecs.capability.full-sync",
    # refused at run time with a ResourceInitializationError naming the feature (see above)
    "ecs.capability.secrets.ssm.environment-variables",
    "ecs.capability.secrets.asm.environment-variables",
    "ecs.capability.private-registry-authentication.secretsmanager",
]


def host_memory_mib(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("MemTotal not found in /proc/meminfo")


def cpu_architecture() -> str:
    machine = platform.machine().lower()
    return {"aarch64": "arm64", "amd64": "x86_64"}.get(machine, machine)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


@dataclass
class HostFacts:
    cluster: str
    instance_id: str
    region: str
    cpu_units: int | None = None
    memory_mib: int | None = None
    memory_reserve_mib: int = 256
    awsvpc_tasks: int | None = None  # the ENI resource (the server's default when None)
    availability_zone: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    address: str = "127.0.0.1"
    docker_version: str = ""
    docker_api_version: str = "1.41"

    def resources(self) -> list[dict[str, Any]]:
        cpu = self.cpu_units if self.cpu_units is not None else (os.cpu_count() or 1) * 1024
        memory = self.memory_mib
        if memory is None:
            memory = max(0, host_memory_mib() - self.memory_reserve_mib)
        out: list[dict[str, Any]] = [
            {"name": "CPU", "type": "INTEGER", "integerValue": cpu},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
            {"name": "PORTS", "type": "STRINGSET", "stringSetValue": list(RESERVED_PORTS)},
            {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
        ]
        if self.awsvpc_tasks is not None:
            out.append({"name": "ENI", "type": "INTEGER", "integerValue": self.awsvpc_tasks})
        return out

    def attribute_list(self) -> list[dict[str, str]]:
        attrs: dict[str, str | None] = {"ecs.os-type": "linux", "ecs.cpu-architecture": cpu_architecture()}
        if self.availability_zone:
            attrs["ecs.availability-zone"] = self.availability_zone
        limit = _version_tuple(self.docker_api_version or "1.41")
        for v in _DOCKER_API_VERSIONS:
            if _version_tuple(v) <= limit:
                attrs[_DOCKER_API + v] = None
        for name in CAPABILITIES:
            attrs[name] = None
        attrs.update(self.attributes)
        return [{"name": k} if v is None else {"name": k, "value": v} for k, v in attrs.items()]

    def identity_document(self) -> str:
        return json.dumps(
            {
                "instanceId": self.instance_id,
                "privateIp": self.address,
                "availabilityZone": self.availability_zone or "",
                "region": self.region,
            }
        )

    def request(self, instance_arn: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "cluster": self.cluster,
            "totalResources": self.resources(),
            "versionInfo": {
                "agentVersion": getattr(dockyard, "__version__", "0.1.0"),
                "agentHash": "dockyard",
                "dockerVersion": f"DockerVersion: {self.docker_version}",
            },
            "attributes": self.attribute_list(),
            "instanceIdentityDocument": self.identity_document(),
        }
        if instance_arn:
            body["containerInstanceArn"] = instance_arn
        return body
