"""From the server's ``AgentTask`` to what the runner works with: PURE (port choice aside).

- ``task_from_wire``: the ``TaskState`` of an ``AgentTask`` with its ``taskDefinition`` embedded
  (the engine embeds the Poll answer's entry for it; checkpoints keep that form), overrides applied,
  runtime names fixed before creation (``dockyard-<task id>-<container>``: the same task always gets
  the same names, so a container created just before a crash is found again instead of created
  twice). A task definition is parsed once per content (``_definition``), not once per task.
- ``unsupported``: the first feature Dockyard cannot provide, as a ``ResourceInitializationError``
  reason; the task stops with it instead of running without it.
- ``volumes`` / ``container_spec`` / ``port_plan``: what the runtime is asked to make.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import orjson

from dockyard.agent.ports import PortAllocator
from dockyard.agent.runtime.base import (
    LABEL_CLUSTER,
    LABEL_CONTAINER_NAME,
    LABEL_FAMILY,
    LABEL_INSTANCE,
    LABEL_STOP_TIMEOUT,
    LABEL_TASK_ARN,
    LABEL_VERSION,
    ContainerSpec,
    PortBinding,
    VolumeSpec,
)
from dockyard.agent.runtime.docker_config import DOCKER_BRIDGE, LOCAL_LOG_DRIVERS
from dockyard.agent.task_state import ContainerState, TaskState
from dockyard.domain.task_definitions import ContainerDefinition, TaskDefinition
from dockyard.domain.task_status import TaskStatus

DEFAULT_STOP_TIMEOUT = 30
MAX_STOP_TIMEOUT = 120
# bridge mode joins Docker's default ``bridge`` network (DOCKER_BRIDGE) unless the agent runs with
# --bridge-network NAME (e.g. BRIDGE_NETWORK): a user-defined network, with Docker's embedded DNS
BRIDGE_NETWORK = "dockyard-bridge"
RESOURCE_INIT = "ResourceInitializationError: "
_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


def runtime_name(task_id: str, container_name: str) -> str:
    return f"dockyard-{task_id}-{_UNSAFE.sub('_', container_name)}"


def _opt_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _apply_override(wire: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(wire)
    if override.get("command"):
        out["command"] = list(override["command"])
    if override.get("environment"):
        env = {e["name"]: e for e in out.get("environment") or () if e.get("name")}
        for e in override["environment"]:
            env[e["name"]] = e
        out["environment"] = list(env.values())
    for name in ("cpu", "memory", "memoryReservation"):
        if override.get(name) is not None:
            out[name] = override[name]
    return out


Parsed = tuple[Mapping[str, Any], TaskDefinition, tuple[ContainerDefinition, ...]]


def _parse(doc: Mapping[str, Any]) -> Parsed:
    """A task definition document: itself, the definition, and its containers as ECS describes
    them (defaults filled in)."""
    definition = TaskDefinition.from_wire(doc)
    described = tuple(ContainerDefinition.from_wire(c.to_wire()) for c in definition.container_definitions)
    return doc, definition, described


@functools.lru_cache(maxsize=64)
def _parse_json(doc: bytes) -> Parsed:
    return _parse(orjson.loads(doc))


def _definition(doc: Mapping[str, Any]) -> Parsed:
    """``_parse``, once per content however many tasks carry the document (task definitions are
    immutable; the key is the content, so every hit is exact)."""
    try:
        key = orjson.dumps(doc)
    except TypeError:  # (orjson.JSONEncodeError) not JSON: parsed for this task alone
        return _parse(doc)
    return _parse_json(key)


def task_from_wire(task: Mapping[str, Any]) -> TaskState:
    wire = dict(task)
    shared, definition, described = _definition(task.get("taskDefinition") or {})
    if wire.get("taskDefinition"):
        wire["taskDefinition"] = shared  # tasks of one definition share one (immutable) document
    overrides = dict(task.get("overrides") or {})
    by_name = {o.get("name"): o for o in overrides.get("containerOverrides") or ()}
    arn = str(task["taskArn"])
    task_id = arn.rsplit("/", 1)[-1]
    containers: dict[str, ContainerState] = {}
    for c, d in zip(definition.container_definitions, described, strict=True):
        if c.name in by_name:
            d = ContainerDefinition.from_wire(_apply_override(c.to_wire(), by_name[c.name]))
        containers[d.name] = ContainerState(
            name=d.name, definition=d, runtime_name=runtime_name(task_id, d.name)
        )
    desired = TaskStatus.RUNNING if task.get("desiredStatus", "RUNNING") == "RUNNING" else TaskStatus.STOPPED
    return TaskState(
        arn=arn,
        cluster_arn=str(task.get("clusterArn") or ""),
        definition=definition,
        containers=containers,
        desired=desired,
        cpu=_opt_int(task.get("cpu")) if task.get("cpu") is not None else definition.cpu,
        memory=_opt_int(task.get("memory")) if task.get("memory") is not None else definition.memory,
        overrides=overrides,
        seq=int(task.get("reportedSeq") or 0),
        wire=wire,
    )


def unsupported(task: TaskState, *, allow_privileged: bool) -> str | None:
    """Why the task cannot run here, as its stoppedReason; None when it can."""
    for v in task.definition.wire.get("volumes") or ():
        for kind in ("efsVolumeConfiguration", "fsxWindowsFileServerVolumeConfiguration"):
            if v.get(kind):
                return RESOURCE_INIT + f"volume {v.get('name')}: {kind} is not supported by Dockyard"
    for c in task.containers.values():
        w = c.definition.wire
        if any(s.get("valueFrom") for s in w.get("secrets") or ()):
            return RESOURCE_INIT + (
                f"container {c.name}: secrets with valueFrom are not supported by Dockyard yet "
                "(no secrets store to read them from)"
            )
        if w.get("repositoryCredentials"):
            return RESOURCE_INIT + (
                f"container {c.name}: repositoryCredentials (private registry authentication) "
                "is not supported by Dockyard yet"
            )
        if w.get("environmentFiles"):
            return RESOURCE_INIT + f"container {c.name}: environmentFiles are not supported by Dockyard yet"
        if w.get("firelensConfiguration"):
            return RESOURCE_INIT + f"container {c.name}: firelensConfiguration is not supported by Dockyard"
        log = w.get("logConfiguration") or {}
        if log.get("secretOptions"):
            return RESOURCE_INIT + f"container {c.name}: logConfiguration.secretOptions are not supported"
        driver = log.get("logDriver")
        if driver and driver != "awslogs" and driver not in LOCAL_LOG_DRIVERS:
            return RESOURCE_INIT + (
                f"container {c.name}: log driver {driver} would send output off this machine; "
                "use awslogs (kept locally) or json-file"
            )
        if any(p.container_port_range for p in c.definition.port_mappings):
            return RESOURCE_INIT + f"container {c.name}: containerPortRange is not supported yet"
        if w.get("privileged") and not allow_privileged:
            return RESOURCE_INIT + (
                f"container {c.name} is privileged, which this container instance does not allow "
                "(start the agent with --allow-privileged)"
            )
    return None


def volumes(task: TaskState) -> tuple[list[VolumeSpec], dict[str, tuple[str, bool]]]:
    """The Docker volumes to ensure, and each task volume's mount source (path or name, is-task-scoped)."""
    needed: list[VolumeSpec] = []
    sources: dict[str, tuple[str, bool]] = {}
    for v in task.definition.wire.get("volumes") or ():
        name = str(v.get("name") or "")
        host = v.get("host") or {}
        docker = v.get("dockerVolumeConfiguration")
        if host.get("sourcePath"):
            sources[name] = (str(host["sourcePath"]), False)
        elif docker and docker.get("scope") == "shared":
            needed.append(
                VolumeSpec(
                    name,
                    str(docker.get("driver") or "local"),
                    dict(docker.get("driverOpts") or {}),
                    dict(docker.get("labels") or {}),
                    create=bool(docker.get("autoprovision")),
                )
            )
            sources[name] = (name, False)
        else:
            docker = docker or {}
            scoped = f"dockyard-{task.task_id}-{_UNSAFE.sub('_', name)}"
            labels = {**dict(docker.get("labels") or {}), LABEL_TASK_ARN: task.arn}
            needed.append(
                VolumeSpec(
                    scoped, str(docker.get("driver") or "local"), dict(docker.get("driverOpts") or {}), labels
                )
            )
            sources[name] = (scoped, True)
    return needed, sources


def port_plan(
    task: TaskState, allocator: PortAllocator, held: Mapping[str, list[PortBinding]] | None = None
) -> dict[str, list[PortBinding]]:
    """Each container's host port bindings. Dynamic ports come from ``allocator`` unless ``held``."""
    mode = task.definition.effective_network_mode.value
    plan: dict[str, list[PortBinding]] = {}
    for c in task.containers.values():
        if held and held.get(c.name):
            plan[c.name] = list(held[c.name])
            for b in plan[c.name]:
                allocator.claim(task.arn, b.host_port, b.protocol)
            continue
        out = []
        for p in c.definition.port_mappings:
            if p.container_port is None:
                continue
            if mode == "host":
                out.append(
                    PortBinding(p.container_port, p.host_port or p.container_port, p.protocol, "0.0.0.0")
                )
            elif mode == "bridge":
                host_port = p.host_port or allocator.allocate(task.arn, p.protocol)
                out.append(PortBinding(p.container_port, host_port, p.protocol, allocator.bind_address))
        plan[c.name] = out
    return plan


def labels(
    task: TaskState, container: ContainerState, instance_arn: str, stop_timeout: int
) -> dict[str, str]:
    return {
        LABEL_CLUSTER: task.cluster_arn,
        LABEL_TASK_ARN: task.arn,
        LABEL_CONTAINER_NAME: container.name,
        LABEL_FAMILY: task.definition.family,
        LABEL_VERSION: str(task.definition.revision),
        LABEL_INSTANCE: instance_arn,
        LABEL_STOP_TIMEOUT: str(stop_timeout),
    }


def stop_timeout(container: ContainerState, default: int = DEFAULT_STOP_TIMEOUT) -> int:
    value = _opt_int(container.definition.wire.get("stopTimeout"))
    return min(MAX_STOP_TIMEOUT, value) if value is not None and value >= 0 else default


def container_spec(
    task: TaskState,
    container: ContainerState,
    *,
    instance_arn: str,
    cgroup_parent: str | None,
    bindings: list[PortBinding],
    volume_sources: Mapping[str, tuple[str, bool]],
    default_stop_timeout: int = DEFAULT_STOP_TIMEOUT,
    pause: str | None = None,
    bridge_network: str = DOCKER_BRIDGE,
) -> ContainerSpec:
    d = container.definition.wire
    mode = task.definition.effective_network_mode.value
    binds = []
    for m in d.get("mountPoints") or ():
        source = volume_sources.get(str(m.get("sourceVolume") or ""))
        if source is None or not m.get("containerPath"):
            continue
        binds.append(f"{source[0]}:{m['containerPath']}" + (":ro" if m.get("readOnly") else ""))
    volumes_from = []
    for v in d.get("volumesFrom") or ():
        other = task.containers.get(str(v.get("sourceContainer") or ""))
        if other is not None:
            volumes_from.append(other.runtime_name + (":ro" if v.get("readOnly") else ""))
    links = []
    for link in d.get("links") or ():
        name, _, alias = str(link).partition(":")
        other = task.containers.get(name)
        if other is not None:
            links.append(f"{other.runtime_name}:{alias or name}")
    timeout = stop_timeout(container, default_stop_timeout)
    return ContainerSpec(
        name=container.runtime_name,
        image=container.definition.image,
        labels=labels(task, container, instance_arn, timeout),
        definition=d,
        network_mode=mode,
        network=bridge_network if mode == "bridge" else pause if mode == "awsvpc" else None,
        cgroup_parent=cgroup_parent,
        port_bindings=tuple(bindings) if mode == "bridge" else (),
        binds=tuple(binds),
        volumes_from=tuple(volumes_from),
        links=tuple(links),
        stop_timeout=timeout,
    )
