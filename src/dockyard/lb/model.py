"""What each load balancer's data plane should look like, derived from the store's documents (PURE).

``build_specs(snapshot, now)`` -> one ``LbSpec`` per load balancer::

    listener               -> FrontendSpec  (bind address:port, mode http|tcp)
      rules by priority    -> RouteSpec     (path patterns AND host patterns -> backend)
      default action       -> default backend
    target group in use    -> BackendSpec   (check settings, algorithm)
    subnet interface       -> SubnetAttachment (the reconciler puts the address on the subnet's
                              bridge and sets ``source``, where HAProxy connects to targets from)
      registration         -> ServerSpec    (draining while its deregistration delay runs;
                                             absent once it is over)

``LbSpec.structure()`` is the spec without servers: when it changes the data plane reloads, when only
servers change it uses the runtime API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from dockyard.domain.load_balancers import HOST_HEADER, PATH_PATTERN, Listener, LoadBalancer, Rule
from dockyard.domain.target_groups import (
    ALGORITHM,
    PROXY_PROTOCOL,
    SLOW_START,
    TRAFFIC_PORT,
    HealthCheck,
    Registration,
    TargetGroup,
)


@dataclass(frozen=True)
class ServerSpec:
    name: str  # the registration's target key, e.g. i-0abc_32768 or 127.0.0.5_8080
    address: str
    port: int
    check_port: int | None  # None: the traffic port
    draining: bool
    registration_id: str


@dataclass(frozen=True)
class BackendSpec:
    name: str
    target_group_arn: str
    mode: str  # http | tcp
    health_check: HealthCheck
    algorithm: str = "roundrobin"  # roundrobin | leastconn
    slow_start: int = 0
    proxy_protocol: bool = False
    servers: tuple[ServerSpec, ...] = ()


@dataclass(frozen=True)
class RouteSpec:
    priority: int
    path_patterns: tuple[str, ...]
    host_patterns: tuple[str, ...]
    backend: str


@dataclass(frozen=True)
class FrontendSpec:
    name: str
    port: int
    mode: str
    routes: tuple[RouteSpec, ...]
    default_backend: str | None


@dataclass(frozen=True)
class SubnetAttachment:
    """The load balancer's address in one of its subnets, on that subnet's Docker network."""

    subnet_id: str
    address: str
    cidr: str
    gateway: str
    network_name: str


@dataclass(frozen=True)
class LbSpec:
    arn: str
    name: str
    id: str
    address: str  # where it listens (loopback)
    dns_name: str
    idle_timeout: int = 60
    frontends: tuple[FrontendSpec, ...] = ()
    backends: tuple[BackendSpec, ...] = ()
    attachment: SubnetAttachment | None = None
    source: str = ""  # where it connects to targets from; "" is ``address``

    @property
    def source_address(self) -> str:
        return self.source or self.address

    def structure(self) -> LbSpec:
        return replace(self, backends=tuple(replace(b, servers=()) for b in self.backends))

    def servers(self) -> dict[tuple[str, str], ServerSpec]:
        return {(b.name, s.name): s for b in self.backends for s in b.servers}

    def backend(self, name: str) -> BackendSpec | None:
        return next((b for b in self.backends if b.name == name), None)


@dataclass
class Snapshot:
    """The decoded ``/elb/`` documents the specs are built from."""

    load_balancers: list[LoadBalancer] = field(default_factory=list)
    target_groups: dict[str, TargetGroup] = field(default_factory=dict)  # by ARN
    listeners: list[Listener] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    registrations: dict[str, list[Registration]] = field(default_factory=dict)  # by target group id


def backend_name(tg: TargetGroup) -> str:
    return f"tg-{tg.name}-{tg.id}"


def _backend(tg: TargetGroup, registrations: Sequence[Registration], now: float) -> BackendSpec:
    hc = tg.health_check
    check_port = None if hc.port == TRAFFIC_PORT else int(hc.port)
    servers = tuple(
        ServerSpec(
            name=r.key,
            address=r.address,
            port=r.port,
            check_port=check_port,
            draining=r.draining(now),
            registration_id=r.registration_id,
        )
        for r in sorted(registrations, key=lambda r: r.key)
        if not r.gone(now)
    )
    return BackendSpec(
        name=backend_name(tg),
        target_group_arn=tg.arn,
        mode="http" if tg.protocol == "HTTP" else "tcp",
        health_check=hc,
        algorithm="leastconn"
        if tg.attributes.get(ALGORITHM) == "least_outstanding_requests"
        else "roundrobin",
        slow_start=int(tg.attributes.get(SLOW_START, "0")),
        proxy_protocol=tg.attributes.get(PROXY_PROTOCOL) == "true",
        servers=servers,
    )


def _patterns(rule: Rule, name: str) -> tuple[str, ...]:
    return tuple(v for c in rule.conditions if c.field == name for v in c.values)


def _backend_finder(
    snapshot: Snapshot, backends: dict[str, BackendSpec], now: float
) -> Callable[[str], str | None]:
    """Maps a target group ARN to its backend's name, adding the backend to ``backends`` once."""

    def backend_for(arn: str) -> str | None:
        tg = snapshot.target_groups.get(arn)
        if tg is None:
            return None
        name = backend_name(tg)
        if name not in backends:
            backends[name] = _backend(tg, snapshot.registrations.get(tg.id, ()), now)
        return name

    return backend_for


def build_specs(snapshot: Snapshot, now: float) -> dict[str, LbSpec]:
    """One spec per load balancer, by ARN. Actions naming a missing target group are left out."""
    rules_of: dict[str, list[Rule]] = {}
    for rule in snapshot.rules:
        rules_of.setdefault(rule.listener_arn, []).append(rule)
    listeners_of: dict[str, list[Listener]] = {}
    for listener in snapshot.listeners:
        listeners_of.setdefault(listener.load_balancer_arn, []).append(listener)

    specs: dict[str, LbSpec] = {}
    for lb in snapshot.load_balancers:
        backends: dict[str, BackendSpec] = {}
        backend_for = _backend_finder(snapshot, backends, now)
        frontends = []
        for listener in sorted(listeners_of.get(lb.arn, ()), key=lambda x: x.port):
            routes = []
            for rule in sorted(rules_of.get(listener.arn, ()), key=lambda r: r.priority):
                target = backend_for(rule.actions[0].target_group_arn) if rule.actions else None
                if target is not None:
                    routes.append(
                        RouteSpec(
                            priority=rule.priority,
                            path_patterns=_patterns(rule, PATH_PATTERN),
                            host_patterns=_patterns(rule, HOST_HEADER),
                            backend=target,
                        )
                    )
            default = (
                backend_for(listener.default_actions[0].target_group_arn)
                if listener.default_actions
                else None
            )
            frontends.append(
                FrontendSpec(
                    name=f"ln-{listener.port}",
                    port=listener.port,
                    mode="http" if listener.protocol == "HTTP" else "tcp",
                    routes=tuple(routes),
                    default_backend=default,
                )
            )
        eni = lb.interface
        attachment = (
            SubnetAttachment(eni["subnetId"], eni["address"], eni["cidr"], eni["gateway"], eni["networkName"])
            if eni
            else None
        )
        specs[lb.arn] = LbSpec(
            arn=lb.arn,
            name=lb.name,
            id=lb.id,
            address=lb.address,
            dns_name=lb.dns_name,
            idle_timeout=lb.idle_timeout(),
            frontends=tuple(frontends),
            backends=tuple(sorted(backends.values(), key=lambda b: b.name)),
            attachment=attachment,
        )
    return specs


def next_deadline(registrations: Iterable[Registration], now: float) -> float | None:
    """The earliest moment a draining registration ends (the reconciler wakes then)."""
    ends = [r.drain_until for r in registrations if r.drain_until is not None and r.drain_until > now]
    return min(ends) if ends else None


def registrations_by_group(
    items: Iterable[tuple[str, Registration]],
) -> Mapping[str, list[Registration]]:
    out: dict[str, list[Registration]] = {}
    for tg_id, reg in items:
        out.setdefault(tg_id, []).append(reg)
    return out
