"""PURE: a ``ContainerSpec`` (an ECS container definition plus what the agent decided) as the body
of Docker's ``POST /containers/create``.

    ECS container definition           Docker
    command / entryPoint               Cmd / Entrypoint
    environment                        Env ["NAME=value"]
    workingDirectory, user, hostname   WorkingDir, User, Hostname
    dockerLabels                       Labels (under the agent's own labels, which win)
    healthCheck                        Healthcheck (durations in nanoseconds)
    memory / memoryReservation         HostConfig.Memory / MemoryReservation (MiB -> bytes)
    cpu                                HostConfig.CpuShares (0, 1 or none -> 2, as ECS does)
    ulimits                            HostConfig.Ulimits
    linuxParameters                    Init, CapAdd/CapDrop, ShmSize, Tmpfs, Devices, swap
    readonlyRootFilesystem, privileged ReadonlyRootfs, Privileged
    extraHosts, dnsServers, ...        ExtraHosts ["host:ip"], Dns, DnsSearch
    links                              HostConfig.Links on Docker's default ``bridge``; endpoint
                                       Links on a user-defined network
    logConfiguration                   LogConfig (awslogs is kept local: json-file)
"""

from __future__ import annotations

from typing import Any

from dockyard.agent.runtime.base import ContainerSpec

MIB = 1024 * 1024
NS = 1_000_000_000
MIN_CPU_SHARES = 2
LOCAL_LOG_DRIVERS = frozenset({"json-file", "local", "none", "journald"})
DOCKER_BRIDGE = "bridge"  # Docker's default network, where links go in HostConfig.Links


def cpu_shares(cpu: Any) -> int:
    value = int(cpu or 0)
    return value if value >= MIN_CPU_SHARES else MIN_CPU_SHARES


def log_config(definition: dict[str, Any] | Any) -> dict[str, Any]:
    """awslogs output stays on this machine: it becomes json-file; other local drivers pass."""
    cfg = definition.get("logConfiguration") or {}
    driver = cfg.get("logDriver") or "json-file"
    if driver in LOCAL_LOG_DRIVERS:
        return {"Type": driver, "Config": {k: str(v) for k, v in (cfg.get("options") or {}).items()}}
    return {"Type": "json-file", "Config": {}}


def _health(check: dict[str, Any]) -> dict[str, Any]:
    return {
        "Test": list(check.get("command") or []),
        "Interval": int(check.get("interval") or 30) * NS,
        "Timeout": int(check.get("timeout") or 5) * NS,
        "Retries": int(check["retries"]) if check.get("retries") is not None else 3,
        "StartPeriod": int(check.get("startPeriod") or 0) * NS,
    }


def _linux(host: dict[str, Any], linux: dict[str, Any]) -> None:
    if linux.get("initProcessEnabled"):
        host["Init"] = True
    caps = linux.get("capabilities") or {}
    if caps.get("add"):
        host["CapAdd"] = list(caps["add"])
    if caps.get("drop"):
        host["CapDrop"] = list(caps["drop"])
    if linux.get("sharedMemorySize") is not None:
        host["ShmSize"] = int(linux["sharedMemorySize"]) * MIB
    tmpfs = {}
    for t in linux.get("tmpfs") or ():
        opts = [f"size={int(t.get('size') or 0)}m", *(t.get("mountOptions") or ())]
        tmpfs[str(t["containerPath"])] = ",".join(opts)
    if tmpfs:
        host["Tmpfs"] = tmpfs
    devices = [
        {
            "PathOnHost": d["hostPath"],
            "PathInContainer": d.get("containerPath") or d["hostPath"],
            "CgroupPermissions": "".join(d.get("permissions") or ["read", "write", "mknod"])
            .replace("read", "r")
            .replace("write", "w")
            .replace("mknod", "m"),
        }
        for d in linux.get("devices") or ()
    ]
    if devices:
        host["Devices"] = devices
    if linux.get("swappiness") is not None:
        host["MemorySwappiness"] = int(linux["swappiness"])


def create_body(spec: ContainerSpec) -> dict[str, Any]:
    d = spec.definition
    body: dict[str, Any] = {"Image": spec.image}
    host: dict[str, Any] = {}
    if d.get("command"):
        body["Cmd"] = list(d["command"])
    if d.get("entryPoint"):
        body["Entrypoint"] = list(d["entryPoint"])
    env = [f"{e['name']}={e.get('value', '')}" for e in d.get("environment") or () if e.get("name")]
    if env:
        body["Env"] = env
    for ecs_name, docker_name in (
        ("workingDirectory", "WorkingDir"),
        ("user", "User"),
        ("hostname", "Hostname"),
    ):
        if d.get(ecs_name):
            body[docker_name] = str(d[ecs_name])
    if d.get("pseudoTerminal"):
        body["Tty"] = True
    if d.get("interactive"):
        body["OpenStdin"] = True
    if d.get("disableNetworking"):
        body["NetworkDisabled"] = True
    labels = {str(k): str(v) for k, v in (d.get("dockerLabels") or {}).items()}
    labels.update(spec.labels)
    body["Labels"] = labels
    check = d.get("healthCheck")
    if check and check.get("command"):
        body["Healthcheck"] = _health(check)
    body["StopTimeout"] = spec.stop_timeout

    # resources
    if d.get("memory") is not None:
        host["Memory"] = int(d["memory"]) * MIB
    if d.get("memoryReservation") is not None:
        host["MemoryReservation"] = int(d["memoryReservation"]) * MIB
    host["CpuShares"] = cpu_shares(d.get("cpu"))
    if spec.cgroup_parent:
        host["CgroupParent"] = spec.cgroup_parent
    ulimits = [
        {"Name": u["name"], "Soft": int(u["softLimit"]), "Hard": int(u["hardLimit"])}
        for u in d.get("ulimits") or ()
    ]
    if ulimits:
        host["Ulimits"] = ulimits
    _linux(host, d.get("linuxParameters") or {})
    if d.get("readonlyRootFilesystem"):
        host["ReadonlyRootfs"] = True
    if d.get("privileged"):
        host["Privileged"] = True
    if d.get("dockerSecurityOptions"):
        host["SecurityOpt"] = list(d["dockerSecurityOptions"])
    sysctls = {s["namespace"]: str(s["value"]) for s in d.get("systemControls") or () if s.get("namespace")}
    if sysctls:
        host["Sysctls"] = sysctls
    hosts = [f"{h['hostname']}:{h['ipAddress']}" for h in d.get("extraHosts") or ()]
    if hosts:
        host["ExtraHosts"] = hosts
    if d.get("dnsServers"):
        host["Dns"] = list(d["dnsServers"])
    if d.get("dnsSearchDomains"):
        host["DnsSearch"] = list(d["dnsSearchDomains"])

    # storage
    if spec.binds:
        host["Binds"] = list(spec.binds)
    if spec.volumes_from:
        host["VolumesFrom"] = list(spec.volumes_from)
    host["LogConfig"] = log_config(d)

    # network
    if spec.network_mode == "awsvpc":  # the task's namespace, held by its pause container
        host["NetworkMode"] = f"container:{spec.network}"
        body.pop("Hostname", None)
        for shared in ("ExtraHosts", "Dns", "DnsSearch"):  # belong to the namespace's owner
            host.pop(shared, None)
    elif spec.network_mode == "host":
        host["NetworkMode"] = "host"
    elif spec.network_mode == "none":
        host["NetworkMode"] = "none"
    else:
        network = spec.network or DOCKER_BRIDGE
        host["NetworkMode"] = network
        endpoint: dict[str, Any] = {}
        if spec.links and network == DOCKER_BRIDGE:  # Docker's default network: legacy links
            host["Links"] = list(spec.links)
        elif spec.links:  # a user-defined network: links are endpoint aliases
            endpoint["Links"] = list(spec.links)
        body["NetworkingConfig"] = {"EndpointsConfig": {network: endpoint}}
        if spec.port_bindings:
            exposed: dict[str, dict[str, Any]] = {}
            bindings: dict[str, list[dict[str, str]]] = {}
            for b in spec.port_bindings:
                key = f"{b.container_port}/{b.protocol}"
                exposed[key] = {}
                bindings.setdefault(key, []).append({"HostIp": b.host_ip, "HostPort": str(b.host_port)})
            body["ExposedPorts"] = exposed
            host["PortBindings"] = bindings
    body["HostConfig"] = host
    return body
