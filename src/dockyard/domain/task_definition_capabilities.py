"""What a task definition needs of where it runs: launch types and container instance attributes.

Compatibilities (the launch types the definition validates against): EC2 always; FARGATE when the
definition passes the Fargate checks (awsvpc, a Fargate cpu/memory combination, no features Fargate
lacks); EXTERNAL when the network mode is not awsvpc and no EFS/FSx volumes are used;
MANAGED_INSTANCES only when requested. A launch type listed in ``requiresCompatibilities`` that
does not validate is a ClientException giving the first reason.

requiresAttributes (container instance attributes a task needs; the agent advertises them) is the
documented subset below, computed from the features used:

    awsvpc network mode                  ecs.capability.task-eni
    taskRoleArn                          com.amazonaws.ecs.capability.task-iam-role
      ... in host network mode           com.amazonaws.ecs.capability.task-iam-role-network-host
    logConfiguration.logDriver X         com.amazonaws.ecs.capability.logging-driver.X
                                         + com.amazonaws.ecs.capability.docker-remote-api.1.18
      awslogs                            + ...docker-remote-api.1.19
      awslogs with executionRoleArn      + ecs.capability.execution-role-awslogs
    ulimits, dockerLabels                ...docker-remote-api.1.18
    memoryReservation                    ...docker-remote-api.1.21
    healthCheck                          ecs.capability.container-health-check + ...docker-remote-api.1.24
    dependsOn                            ecs.capability.container-ordering
    privileged                           com.amazonaws.ecs.capability.privileged-container
    dockerSecurityOptions label:/apparmor:  com.amazonaws.ecs.capability.selinux / .apparmor
    repositoryCredentials                ecs.capability.private-registry-authentication.secretsmanager
    secrets from SSM / Secrets Manager   ecs.capability.secrets.ssm.environment-variables / .asm.
    environmentFiles                     ecs.capability.env-files.s3
    firelensConfiguration type T         ecs.capability.firelens.T
    EFS volume (with authorization)      ecs.capability.efs (+ ecs.capability.efsAuth)
    docker volume with driver D (not local)  ecs.capability.docker-plugin.D
"""

from __future__ import annotations

from dockyard.domain.errors import ClientError
from dockyard.domain.task_definitions import Compatibility, ContainerDefinition, NetworkMode, TaskDefinition

FARGATE_LOG_DRIVERS = frozenset({"awslogs", "splunk", "awsfirelens"})
FARGATE_CAPABILITIES = frozenset({"SYS_PTRACE"})
_DOCKER_API = "com.amazonaws.ecs.capability.docker-remote-api."


def _gib(n: int) -> int:
    return n * 1024


# Fargate task sizes: CPU units -> the memory sizes (MiB) allowed with it
FARGATE_SIZES: dict[int, frozenset[int]] = {
    256: frozenset({512, 1024, 2048}),
    512: frozenset(range(_gib(1), _gib(4) + 1, _gib(1))),
    1024: frozenset(range(_gib(2), _gib(8) + 1, _gib(1))),
    2048: frozenset(range(_gib(4), _gib(16) + 1, _gib(1))),
    4096: frozenset(range(_gib(8), _gib(30) + 1, _gib(1))),
    8192: frozenset(range(_gib(16), _gib(60) + 1, _gib(4))),
    16384: frozenset(range(_gib(32), _gib(120) + 1, _gib(8))),
}


def fargate_size_ok(cpu: int, memory: int) -> bool:
    return memory in FARGATE_SIZES.get(cpu, frozenset())


# ---- launch types ------------------------------------------------------------------------------


def fargate_problems(td: TaskDefinition) -> list[str]:
    """Why the definition cannot run on Fargate ([] if it can)."""
    problems: list[str] = []
    if td.effective_network_mode is not NetworkMode.AWSVPC:
        problems.append("Fargate only supports network mode 'awsvpc'.")
    if td.cpu is None:
        problems.append("Fargate requires that 'cpu' be defined at the task level.")
    if td.memory is None:
        problems.append("Fargate requires that 'memory' be defined at the task level.")
    if td.cpu is not None and td.memory is not None and not fargate_size_ok(td.cpu, td.memory):
        problems.append(
            f"No Fargate configuration exists for given values: {td.cpu} CPU, {td.memory} memory. "
            "See the Amazon ECS documentation for the valid values."
        )
    for field in ("placementConstraints", "inferenceAccelerators", "ipcMode"):
        if td.wire.get(field):
            problems.append(f"'{field}' is not supported on Fargate.")
    if td.wire.get("pidMode") not in (None, "task"):
        problems.append("Fargate only supports pidMode 'task'.")
    for v in td.wire.get("volumes") or ():
        if (v.get("host") or {}).get("sourcePath") or v.get("dockerVolumeConfiguration"):
            problems.append(
                f"Volume '{v.get('name')}': host paths and Docker volumes are not supported on Fargate."
            )
    for c in td.container_definitions:
        problems.extend(_fargate_container_problems(td, c))
    return problems


def _fargate_container_problems(td: TaskDefinition, c: ContainerDefinition) -> list[str]:
    where = f"container '{c.name}'"
    problems = [
        f"'{field}' of {where} is not supported on Fargate."
        for field in (
            "links",
            "privileged",
            "dockerSecurityOptions",
            "hostname",
            "dnsServers",
            "dnsSearchDomains",
            "extraHosts",
        )
        if c.wire.get(field)
    ]
    linux = c.wire.get("linuxParameters") or {}
    for field in ("devices", "sharedMemorySize", "tmpfs"):
        if linux.get(field):
            problems.append(f"linuxParameters.{field} of {where} is not supported on Fargate.")
    added = set((linux.get("capabilities") or {}).get("add") or ()) - FARGATE_CAPABILITIES
    if added:
        problems.append(f"Fargate only allows adding the SYS_PTRACE capability ({where}).")
    if any(r.get("type") == "GPU" for r in c.wire.get("resourceRequirements") or ()):
        problems.append(f"GPUs ({where}) are not supported on Fargate.")
    driver = (c.wire.get("logConfiguration") or {}).get("logDriver")
    if driver is not None and driver not in FARGATE_LOG_DRIVERS:
        problems.append(f"Log driver {driver} ({where}) is not supported on Fargate.")
    if driver == "awslogs" and td.execution_role_arn is None:
        problems.append(
            "Fargate requires task definition to have execution role ARN to support log driver awslogs."
        )
    return problems


def external_problems(td: TaskDefinition) -> list[str]:
    """Why the definition cannot run on external instances (ECS Anywhere) ([] if it can)."""
    problems: list[str] = []
    if td.effective_network_mode is NetworkMode.AWSVPC:
        problems.append("EXTERNAL does not support network mode 'awsvpc'.")
    for v in td.wire.get("volumes") or ():
        if v.get("efsVolumeConfiguration") or v.get("fsxWindowsFileServerVolumeConfiguration"):
            problems.append(f"Volume '{v.get('name')}': EFS and FSx volumes are not supported on EXTERNAL.")
    return problems


def compatibilities(td: TaskDefinition) -> tuple[str, ...]:
    """The launch types the definition validates against; raises if a required one does not."""
    fargate = fargate_problems(td)
    external = external_problems(td)
    for required in td.requires_compatibilities:
        problems = (
            fargate
            if required == Compatibility.FARGATE
            else external
            if required == Compatibility.EXTERNAL
            else []
        )
        if problems:
            raise ClientError(f"Task definition does not support launch_type {required}: {problems[0]}")
    out = [Compatibility.EC2.value]
    if not fargate:
        out.append(Compatibility.FARGATE.value)
    if not external:
        out.append(Compatibility.EXTERNAL.value)
    if Compatibility.MANAGED_INSTANCES in td.requires_compatibilities:
        out.append(Compatibility.MANAGED_INSTANCES.value)
    return tuple(out)


# ---- requiresAttributes ------------------------------------------------------------------------


def requires_attributes(td: TaskDefinition) -> tuple[str, ...]:
    """The container instance attributes the definition needs, sorted (see the module docstring)."""
    names: set[str] = set()
    mode = td.effective_network_mode
    if mode is NetworkMode.AWSVPC:
        names.add("ecs.capability.task-eni")
    if td.task_role_arn:
        names.add("com.amazonaws.ecs.capability.task-iam-role")
        if mode is NetworkMode.HOST:
            names.add("com.amazonaws.ecs.capability.task-iam-role-network-host")
    for c in td.container_definitions:
        names |= _container_attributes(td, c)
    for v in td.wire.get("volumes") or ():
        efs = v.get("efsVolumeConfiguration")
        if efs:
            names.add("ecs.capability.efs")
            if efs.get("authorizationConfig"):
                names.add("ecs.capability.efsAuth")
        driver = (v.get("dockerVolumeConfiguration") or {}).get("driver")
        if driver and driver != "local":
            names.add(f"ecs.capability.docker-plugin.{driver}")
    return tuple(sorted(names))


def _container_attributes(td: TaskDefinition, c: ContainerDefinition) -> set[str]:
    names: set[str] = set()
    w = c.wire
    driver = (w.get("logConfiguration") or {}).get("logDriver")
    if driver:
        names |= {f"com.amazonaws.ecs.capability.logging-driver.{driver}", _DOCKER_API + "1.18"}
        if driver == "awslogs":
            names.add(_DOCKER_API + "1.19")
            if td.execution_role_arn:
                names.add("ecs.capability.execution-role-awslogs")
    if w.get("ulimits") or w.get("dockerLabels"):
        names.add(_DOCKER_API + "1.18")
    if c.memory_reservation is not None:
        names.add(_DOCKER_API + "1.21")
    if c.health_check is not None:
        names |= {"ecs.capability.container-health-check", _DOCKER_API + "1.24"}
    if c.depends_on:
        names.add("ecs.capability.container-ordering")
    if w.get("privileged"):
        names.add("com.amazonaws.ecs.capability.privileged-container")
    for option in w.get("dockerSecurityOptions") or ():
        if str(option).startswith("label:"):
            names.add("com.amazonaws.ecs.capability.selinux")
        elif str(option).startswith("apparmor:"):
            names.add("com.amazonaws.ecs.capability.apparmor")
    if w.get("repositoryCredentials"):
        names.add("ecs.capability.private-registry-authentication.secretsmanager")
    for secret in w.get("secrets") or ():
        source = str(secret.get("valueFrom") or "")
        if ":secretsmanager:" in source:
            names.add("ecs.capability.secrets.asm.environment-variables")
        else:
            names.add("ecs.capability.secrets.ssm.environment-variables")
    if w.get("environmentFiles"):
        names.add("ecs.capability.env-files.s3")
    firelens = w.get("firelensConfiguration")
    if firelens and firelens.get("type"):
        names.add(f"ecs.capability.firelens.{firelens['type']}")
    return names
