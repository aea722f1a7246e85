"""Container instance resources as ECS counts them: CPU units, MiB of memory, TCP and UDP host ports.

One value type serves three roles:

- what an instance *registers*: ``cpu``/``memory`` are its capacity; ``ports``/``ports_udp`` are the
  host ports that are never available (ECS registers 22, 2375, 2376, 51678, 51679 this way);
- what a task *needs* (its reservation): ``cpu``/``memory`` it takes, the static host ports it binds;
- what *remains*: capacity minus every reservation, ports = registered ports plus every bound port.

So ``remaining(registered, reserved)`` subtracts amounts and unions ports, as ECS's
``remainingResources`` does, and ``shortfall(remaining, need)`` names the first resource that does not
fit, cheapest check first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from dockyard.domain.errors import InvalidParameter

CPU = "CPU"
MEMORY = "MEMORY"
PORTS = "PORTS"
PORTS_UDP = "PORTS_UDP"
ENI = "ENI"  # awsvpc tasks an instance takes (an integer in totalResources; DEFAULT_ENIS when absent)
DEFAULT_ENIS = 16
MAX_PORT = 65535

NO_PORTS: frozenset[int] = frozenset()  # (one for every document without ports: sets never change)
# the host ports ECS's agent registers as unavailable by default
DEFAULT_RESERVED_PORTS = frozenset({22, 2375, 2376, 51678, 51679})


@dataclass(frozen=True, slots=True)
class Resources:
    cpu: int = 0
    memory: int = 0
    ports: frozenset[int] = frozenset()
    ports_udp: frozenset[int] = frozenset()
    enis: int = 0  # awsvpc task interfaces: registered capacity, or 1 per awsvpc task (RESOURCE:ENI)

    def __add__(self, other: Resources) -> Resources:
        return _built(
            self.cpu + other.cpu,
            self.memory + other.memory,
            self.ports | other.ports if other.ports else self.ports,
            self.ports_udp | other.ports_udp if other.ports_udp else self.ports_udp,
            self.enis + other.enis,
        )

    def to_wire(self) -> list[dict[str, Any]]:
        """ECS's ``[Resource]`` shape (registeredResources, remainingResources)."""
        return [
            _integer(CPU, self.cpu),
            _integer(MEMORY, self.memory),
            _string_set(PORTS, self.ports),
            _string_set(PORTS_UDP, self.ports_udp),
        ]

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "cpu": self.cpu,
            "memory": self.memory,
            "ports": sorted(self.ports) if self.ports else [],
            "portsUdp": sorted(self.ports_udp) if self.ports_udp else [],
        }
        if self.enis:
            doc["enis"] = self.enis
        return doc

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> Resources:
        ports, ports_udp = doc.get("ports"), doc.get("portsUdp")
        return Resources(
            int(doc.get("cpu", 0)),
            int(doc.get("memory", 0)),
            frozenset(map(int, ports)) if ports else NO_PORTS,
            frozenset(map(int, ports_udp)) if ports_udp else NO_PORTS,
            int(doc.get("enis", 0)),
        )


NONE = Resources()

# each field's slot descriptor's setter, in field order, for ``_built``
_CPU, _MEMORY, _PORTS, _PORTS_UDP, _ENIS = (getattr(Resources, f.name).__set__ for f in fields(Resources))


def _built(cpu: int, memory: int, ports: frozenset[int], ports_udp: frozenset[int], enis: int) -> Resources:
    """``Resources(cpu, memory, ports, ports_udp, enis)`` without the frozen ``__init__``, which sets
    each field through ``object.__setattr__`` (about half of what building one costs): only for a value
    nobody has seen yet, built here by the arithmetic that placement runs per task placed and per
    instance view (``+``, ``remaining``). Resources has no ``__post_init__`` to skip."""
    new: Resources = object.__new__(Resources)
    _CPU(new, cpu)
    _MEMORY(new, memory)
    _PORTS(new, ports)
    _PORTS_UDP(new, ports_udp)
    _ENIS(new, enis)
    return new


def total(reservations: Iterable[Resources]) -> Resources:
    """Everything ``reservations`` take together."""
    out = NONE
    for r in reservations:
        out = out + r
    return out


def remaining(registered: Resources, reserved: Resources) -> Resources:
    """What is left of ``registered`` once ``reserved`` is taken (ports: what is unavailable)."""
    return _built(
        registered.cpu - reserved.cpu,
        registered.memory - reserved.memory,
        registered.ports | reserved.ports if reserved.ports else registered.ports,
        registered.ports_udp | reserved.ports_udp if reserved.ports_udp else registered.ports_udp,
        registered.enis - reserved.enis,
    )


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Why a need does not fit: the ECS resource name and a sentence for ``Failure.detail``."""

    resource: str  # CPU | MEMORY | PORTS | PORTS_UDP
    detail: str


def cpu_shortfall(left: Resources, need: Resources) -> Shortfall | None:
    if need.cpu > left.cpu:
        return Shortfall(CPU, f"needs {need.cpu} CPU units, {max(left.cpu, 0)} remain")
    return None


def memory_shortfall(left: Resources, need: Resources) -> Shortfall | None:
    if need.memory > left.memory:
        return Shortfall(MEMORY, f"needs {need.memory} MiB of memory, {max(left.memory, 0)} MiB remain")
    return None


def ports_shortfall(left: Resources, need: Resources) -> Shortfall | None:
    taken = need.ports & left.ports
    if taken:
        return Shortfall(PORTS, f"TCP host ports already in use: {_port_list(taken)}")
    return None


def udp_ports_shortfall(left: Resources, need: Resources) -> Shortfall | None:
    taken = need.ports_udp & left.ports_udp
    if taken:
        return Shortfall(PORTS_UDP, f"UDP host ports already in use: {_port_list(taken)}")
    return None


def eni_shortfall(left: Resources, need: Resources) -> Shortfall | None:
    if need.enis and need.enis > left.enis:
        return Shortfall(ENI, f"needs {need.enis} awsvpc interface(s), {max(left.enis, 0)} remain")
    return None


def shortfall(left: Resources, need: Resources) -> Shortfall | None:
    """The first resource ``need`` lacks in ``left`` (CPU, MEMORY, PORTS, PORTS_UDP, ENI), else None."""
    for check in (cpu_shortfall, memory_shortfall, ports_shortfall, udp_ports_shortfall, eni_shortfall):
        found = check(left, need)
        if found is not None:
            return found
    return None


def _port_list(ports: Iterable[int]) -> str:
    return ", ".join(str(p) for p in sorted(ports))


def _integer(name: str, value: int) -> dict[str, Any]:
    return {"name": name, "type": "INTEGER", "doubleValue": 0.0, "longValue": 0, "integerValue": value}


def _string_set(name: str, ports: frozenset[int]) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STRINGSET",
        "doubleValue": 0.0,
        "longValue": 0,
        "integerValue": 0,
        "stringSetValue": [str(p) for p in sorted(ports)],
    }


def parse_registered(wire: Sequence[Mapping[str, Any]] | None) -> Resources:
    """RegisterContainerInstance ``totalResources``: CPU and MEMORY integers, PORTS/PORTS_UDP sets.

    Absent CPU or MEMORY register as 0; absent PORTS register ECS's default reserved ports.
    """
    cpu = memory = 0
    ports: frozenset[int] | None = None
    ports_udp: frozenset[int] = frozenset()
    enis = DEFAULT_ENIS  # not given
    for item in wire or ():
        name = item.get("name")
        if name in (CPU, MEMORY, ENI):
            value = item.get("integerValue")
            if value is None:
                value = item.get("longValue") or int(item.get("doubleValue") or 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidParameter(f"totalResources {name} must be a non-negative integer.")
            if name == CPU:
                cpu = value
            elif name == ENI:
                enis = value
            else:
                memory = value
        elif name in (PORTS, PORTS_UDP):
            parsed = _parse_ports(name, item.get("stringSetValue") or ())
            if name == PORTS:
                ports = parsed
            else:
                ports_udp = parsed
        else:
            raise InvalidParameter(
                f"Unsupported resource '{str(name)[:100]}' in totalResources; "
                f"supported: {CPU}, {MEMORY}, {PORTS}, {PORTS_UDP}, {ENI}."
            )
    return Resources(cpu, memory, DEFAULT_RESERVED_PORTS if ports is None else ports, ports_udp, enis)


def _parse_ports(name: str, values: Iterable[Any]) -> frozenset[int]:
    out: set[int] = set()
    for v in values:
        text = str(v)
        if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_PORT:
            raise InvalidParameter(f"totalResources {name} has an invalid port '{text[:20]}'.")
        out.add(int(text))
    return frozenset(out)
