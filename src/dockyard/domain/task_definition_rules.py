"""What RegisterTaskDefinition accepts, how it normalises it, and what it derives from it.

``draft(request)`` validates a request and returns the TaskDefinition it would register (revision 0);
the first rule broken raises ``ClientException`` (a definition that cannot work) or
``InvalidParameterException`` (a value outside its enumeration), with a message that names the
field and the container.

Rules, cheapest first:
- ``family``, container and volume names: 1-255 letters, digits, ``-`` and ``_``; names unique.
- Task ``cpu``: CPU units ("1024") or vCPUs ("1 vCPU", "0.25 vcpu"), 128..196608 units; task
  ``memory``: MiB ("2048") or GB ("2 GB", "0.5GB"). Both are stored as integer strings.
- Containers: ``name`` and ``image`` required; ``memory``/``memoryReservation`` at least 6 MiB and
  ``memoryReservation`` less than ``memory``; one of them unless the task sets ``memory``.
- Task ``cpu``/``memory`` are hard limits: each container's cpu, memory and memoryReservation fit
  inside, the sum of container cpu and the sum of reserved memory (memoryReservation, else memory)
  do not exceed them.
- At least one essential container (``essential`` defaults to true).
- ``dependsOn`` names another container of the task; COMPLETE and SUCCESS may not target an essential
  container; HEALTHY needs a target with a ``healthCheck``; no cycles. ``links``, ``volumesFrom``
  and ``mountPoints`` name containers and volumes of the task.
- Ports: ``containerPort`` 1..65535 (or a ``containerPortRange``); in ``awsvpc`` and ``host`` mode
  ``hostPort`` is absent or equal to ``containerPort`` (it is then stored equal); ``none`` mode has
  no port mappings. ``awsvpc`` does not support links, hostname, dnsServers, dnsSearchDomains,
  extraHosts.
- ``healthCheck``: command starts with CMD or CMD-SHELL; interval 5..300, timeout 2..60,
  retries 1..10, startPeriod 0..300 (seconds); ECS's defaults are filled in.

Compatibilities and requiresAttributes are derived in ``task_definition_capabilities``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

from dockyard.domain.errors import ClientError, InvalidParameter
from dockyard.domain.tags import parse_tags
from dockyard.domain.task_definition_capabilities import compatibilities, requires_attributes
from dockyard.domain.task_definitions import (
    Compatibility,
    ContainerDefinition,
    DependencyCondition,
    HealthCheck,
    NetworkMode,
    PortMapping,
    TaskDefinition,
)

NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
MIN_TASK_CPU = 128
MAX_TASK_CPU = 196_608
MIN_MEMORY = 6  # MiB; Docker refuses less for a container
CPU_PER_VCPU = 1024
MIB_PER_GB = 1024
MAX_PORT = 65_535


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*$")


# ---- task size ---------------------------------------------------------------------------------


def _size(text: str, units: dict[str, int]) -> int | None:
    """``text`` as a whole number of base units, or None if it is not one."""
    m = _SIZE.match(text)
    if m is None or m.group(2).lower() not in units:
        return None
    try:
        value = Decimal(m.group(1)) * units[m.group(2).lower()]
    except InvalidOperation:
        return None
    return int(value) if value == value.to_integral_value() else None


def parse_task_cpu(text: str) -> int:
    """Task ``cpu`` ("1024", "1 vCPU", "0.5 vcpu") in CPU units."""
    units = _size(text, {"": 1, "vcpu": CPU_PER_VCPU})
    if units is None or not MIN_TASK_CPU <= units <= MAX_TASK_CPU:
        raise ClientError(
            f"Invalid 'cpu' setting for task: '{text[:100]}'. Use CPU units (for example '1024') or "
            f"vCPUs (for example '1 vCPU'), from {MIN_TASK_CPU} to {MAX_TASK_CPU} units."
        )
    return units


def parse_task_memory(text: str) -> int:
    """Task ``memory`` ("2048", "2 GB", "0.5GB") in MiB."""
    mib = _size(text, {"": 1, "gb": MIB_PER_GB})
    if mib is None or mib < MIN_MEMORY:
        raise ClientError(
            f"Invalid 'memory' setting for task: '{text[:100]}'. Use MiB (for example '2048') or GB "
            f"(for example '2 GB'), at least {MIN_MEMORY} MiB."
        )
    return mib


# ---- the request -------------------------------------------------------------------------------


def _check_name(kind: str, name: str) -> None:
    if not NAME.match(name):
        raise ClientError(
            f"Invalid {kind} '{name[:300]}': use 1 to 255 letters (uppercase and lowercase), numbers, "
            "hyphens and underscores."
        )


def _check_enum(field: str, value: Any, allowed: Iterable[str]) -> None:
    options = list(allowed)
    if value not in options:
        raise InvalidParameter(f"Invalid value '{value}' for {field}; valid values: {', '.join(options)}.")


def _check_request_values(request: Mapping[str, Any]) -> None:
    """Enumerations the model declares but botocore's validation does not enforce."""
    if request.get("networkMode") is not None:
        _check_enum("networkMode", request["networkMode"], [m.value for m in NetworkMode])
    for c in request.get("requiresCompatibilities") or ():
        _check_enum("requiresCompatibilities", c, [m.value for m in Compatibility])
    for container in request.get("containerDefinitions") or ():
        for d in container.get("dependsOn") or ():
            _check_enum("dependsOn.condition", d.get("condition"), [m.value for m in DependencyCondition])
        for p in container.get("portMappings") or ():
            if p.get("protocol") is not None:
                _check_enum("portMappings.protocol", p["protocol"], ["tcp", "udp"])


def draft(request: Mapping[str, Any]) -> TaskDefinition:
    """Validate a RegisterTaskDefinition request; the definition it registers (revision 0)."""
    family = str(request.get("family") or "")
    _check_name("family", family)
    if not request.get("containerDefinitions"):
        raise ClientError("Container list cannot be empty.")
    _check_request_values(request)
    wire = {k: v for k, v in request.items() if k != "tags"}
    cpu = parse_task_cpu(str(request["cpu"])) if request.get("cpu") is not None else None
    memory = parse_task_memory(str(request["memory"])) if request.get("memory") is not None else None
    td = replace(TaskDefinition.from_wire(wire), cpu=cpu, memory=memory, tags=parse_tags(request.get("tags")))
    td = replace(td, container_definitions=tuple(_normalised_ports(td, c) for c in td.container_definitions))
    for c in td.container_definitions:
        _check_container(td, c)
    _check_task(td)
    derived = compatibilities(td)
    return replace(td, compatibilities=derived, requires_attributes=requires_attributes(td))


def _normalised_ports(td: TaskDefinition, c: ContainerDefinition) -> ContainerDefinition:
    """In awsvpc and host mode an absent hostPort is the containerPort."""
    if td.effective_network_mode not in (NetworkMode.AWSVPC, NetworkMode.HOST):
        return c
    ports = tuple(
        replace(p, host_port=p.container_port) if p.host_port is None and p.container_port is not None else p
        for p in c.port_mappings
    )
    return replace(c, port_mappings=ports)


# ---- one container -----------------------------------------------------------------------------


def _check_container(td: TaskDefinition, c: ContainerDefinition) -> None:
    if not c.name:
        raise ClientError("Container.name should not be null or empty.")
    _check_name("container name", c.name)
    where = f"container '{c.name}'"
    if not c.image.strip():
        raise ClientError(f"Container.image should not be null or empty ({where}).")
    if len(c.image) > 255 or any(ch.isspace() for ch in c.image):
        raise ClientError(f"Invalid image '{c.image[:300]}' for {where}.")
    if c.cpu < 0:
        raise ClientError(f"Invalid 'cpu' setting for {where}: it cannot be negative.")
    for field, value in (("memory", c.memory), ("memoryReservation", c.memory_reservation)):
        if value is not None and value < MIN_MEMORY:
            raise ClientError(f"Invalid '{field}' setting for {where}: the minimum is {MIN_MEMORY} MiB.")
    if c.memory is None and c.memory_reservation is None and td.memory is None:
        raise ClientError(
            f"Invalid setting for {where}: at least one of 'memory' or 'memoryReservation' must be "
            "specified when the task sets no 'memory'."
        )
    if c.memory is not None and c.memory_reservation is not None and c.memory_reservation >= c.memory:
        raise ClientError(
            f"Invalid setting for {where}: 'memoryReservation' ({c.memory_reservation}) must be less "
            f"than 'memory' ({c.memory})."
        )
    if td.cpu is not None and c.cpu > td.cpu:
        raise ClientError(f"Invalid 'cpu' setting for {where}: {c.cpu} exceeds the task's cpu ({td.cpu}).")
    if td.memory is not None:
        for field, value in (("memory", c.memory), ("memoryReservation", c.memory_reservation)):
            if value is not None and value > td.memory:
                raise ClientError(
                    f"Invalid '{field}' setting for {where}: {value} MiB exceeds the task's memory "
                    f"({td.memory} MiB)."
                )
    for p in c.port_mappings:
        _check_port_mapping(td, where, p)
    if c.health_check is not None:
        _check_health_check(where, c.health_check)
    if td.effective_network_mode is NetworkMode.AWSVPC:
        for field in ("links", "hostname", "dnsServers", "dnsSearchDomains", "extraHosts"):
            if c.wire.get(field):
                raise ClientError(f"'{field}' of {where} is not supported in the awsvpc network mode.")
    if td.effective_network_mode is NetworkMode.HOST and c.wire.get("links"):
        raise ClientError(f"'links' of {where} are not supported in the host network mode.")


def _check_port_mapping(td: TaskDefinition, where: str, p: PortMapping) -> None:
    mode = td.effective_network_mode
    if mode is NetworkMode.NONE:
        raise ClientError(f"Port mappings of {where} are not allowed in the 'none' network mode.")
    if p.container_port is None and p.container_port_range is None:
        raise ClientError(f"A port mapping of {where} needs a 'containerPort' or a 'containerPortRange'.")
    if p.container_port is not None and p.container_port_range is not None:
        raise ClientError(f"A port mapping of {where} sets both 'containerPort' and 'containerPortRange'.")
    if p.container_port is not None and not 1 <= p.container_port <= MAX_PORT:
        raise ClientError(f"Invalid containerPort {p.container_port} for {where}: use 1 to {MAX_PORT}.")
    if p.host_port is not None and not 0 <= p.host_port <= MAX_PORT:
        raise ClientError(f"Invalid hostPort {p.host_port} for {where}: use 0 to {MAX_PORT}.")
    if p.container_port_range is not None:
        _check_port_range(where, p.container_port_range)
        if p.host_port is not None:
            raise ClientError(f"A port mapping of {where} with a 'containerPortRange' cannot set 'hostPort'.")
    if mode in (NetworkMode.AWSVPC, NetworkMode.HOST) and p.host_port not in (None, p.container_port):
        raise ClientError(
            f"When networkMode={mode.value}, the host ports and container ports in port mappings must "
            f"match: {where} maps containerPort {p.container_port} to hostPort {p.host_port}."
        )


def _check_port_range(where: str, text: str) -> None:
    low, sep, high = text.partition("-")
    ok = sep and low.isdigit() and high.isdigit() and 1 <= int(low) < int(high) <= MAX_PORT
    if not ok:
        raise ClientError(f"Invalid containerPortRange '{text[:100]}' for {where}: use 'low-high'.")


def _check_health_check(where: str, h: HealthCheck) -> None:
    if len(h.command) < 2 or h.command[0] not in ("CMD", "CMD-SHELL"):
        raise ClientError(
            f"Invalid healthCheck command for {where}: it must start with 'CMD' or 'CMD-SHELL' followed "
            "by the command."
        )
    for field, value, low, high in (
        ("interval", h.interval, 5, 300),
        ("timeout", h.timeout, 2, 60),
        ("retries", h.retries, 1, 10),
        ("startPeriod", h.start_period, 0, 300),
    ):
        if not low <= value <= high:
            raise ClientError(f"Invalid healthCheck {field} {value} for {where}: use {low} to {high}.")


# ---- the task as a whole -----------------------------------------------------------------------


def _check_task(td: TaskDefinition) -> None:
    names = [c.name for c in td.container_definitions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ClientError(f"Container names must be unique within a task definition: '{duplicates[0]}'.")
    if not any(c.essential for c in td.container_definitions):
        raise ClientError("A task definition must have at least one essential container.")
    if td.cpu is not None:
        total_cpu = sum(c.cpu for c in td.container_definitions)
        if total_cpu > td.cpu:
            raise ClientError(
                f"The sum of the containers' cpu ({total_cpu}) exceeds the task's cpu ({td.cpu})."
            )
    if td.memory is not None:
        total = sum(c.reserved_memory or 0 for c in td.container_definitions)
        if total > td.memory:
            raise ClientError(
                f"The sum of the containers' memory reservations ({total} MiB; memoryReservation, "
                f"else memory) exceeds the task's memory ({td.memory} MiB)."
            )
    _check_dependencies(td)
    volumes = _check_volumes(td)
    for c in td.container_definitions:
        _check_references(td, c, volumes)
    _check_placement_constraints(td)
    proxy = td.wire.get("proxyConfiguration")
    if proxy is not None and td.container(str(proxy.get("containerName"))) is None:
        raise ClientError(
            f"proxyConfiguration names container '{proxy.get('containerName')}', which is not in the task."
        )
    storage = td.wire.get("ephemeralStorage")
    if storage is not None and not 21 <= int(storage.get("sizeInGiB", 0)) <= 200:
        raise ClientError("Invalid ephemeralStorage sizeInGiB: use 21 to 200.")


def _check_dependencies(td: TaskDefinition) -> None:
    for c in td.container_definitions:
        for d in c.depends_on:
            target = td.container(d.container_name)
            if target is None or target is c:
                what = (
                    "itself" if target is c else f"container '{d.container_name}', which is not in the task"
                )
                raise ClientError(f"Container '{c.name}' cannot depend on {what}.")
            if (
                d.condition in (DependencyCondition.COMPLETE, DependencyCondition.SUCCESS)
                and target.essential
            ):
                raise ClientError(
                    f"Container '{c.name}' depends on '{target.name}' with condition {d.condition}, "
                    "which is not allowed for an essential container."
                )
            if d.condition == DependencyCondition.HEALTHY and target.health_check is None:
                raise ClientError(
                    f"Container '{c.name}' depends on '{target.name}' being HEALTHY, but "
                    f"'{target.name}' has no healthCheck."
                )
    cycle = _dependency_cycle(td.container_definitions)
    if cycle:
        raise ClientError(f"Container dependencies form a cycle: {' -> '.join(cycle)}.")


def _dependency_cycle(containers: Sequence[ContainerDefinition]) -> list[str]:
    """A dependency cycle as a list of names (first repeated at the end), or []."""
    edges = {c.name: [d.container_name for d in c.depends_on] for c in containers}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for nxt in edges.get(name, ()):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return []

    for c in containers:
        if c.name not in state:
            found = visit(c.name)
            if found:
                return found
    return []


def _check_volumes(td: TaskDefinition) -> set[str]:
    names: set[str] = set()
    for v in td.wire.get("volumes") or ():
        name = str(v.get("name") or "")
        _check_name("volume name", name)
        if name in names:
            raise ClientError(f"Volume names must be unique within a task definition: '{name}'.")
        names.add(name)
    return names


def _check_references(td: TaskDefinition, c: ContainerDefinition, volumes: set[str]) -> None:
    for m in c.wire.get("mountPoints") or ():
        source = m.get("sourceVolume")
        if source is not None and source not in volumes:
            raise ClientError(
                f"Container '{c.name}' mounts volume '{source}', which is not defined in the task's volumes."
            )
    for v in c.wire.get("volumesFrom") or ():
        source = v.get("sourceContainer")
        if source is not None and (td.container(str(source)) is None or source == c.name):
            raise ClientError(f"Container '{c.name}' has volumesFrom an invalid container '{source}'.")
    for link in c.wire.get("links") or ():
        target = str(link).split(":", 1)[0]
        if td.container(target) is None or target == c.name:
            raise ClientError(f"Container '{c.name}' links to an invalid container '{target}'.")


def _check_placement_constraints(td: TaskDefinition) -> None:
    constraints = td.wire.get("placementConstraints") or ()
    if len(constraints) > 10:
        raise ClientError("A task definition can have at most 10 placement constraints.")
    for pc in constraints:
        if pc.get("type") != "memberOf" or not pc.get("expression"):
            raise ClientError(
                "Task definition placement constraints must be of type memberOf with an expression."
            )
