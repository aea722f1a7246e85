"""The ``ContainerRuntime`` protocol: everything the agent asks of a container engine.

Two implementations: ``docker.DockerRuntime`` (the Docker Engine API through aiodocker) and
``simulated.SimulatedRuntime`` (no containers; configurable delays; for hollow agents in scale
tests). The engine never sees Docker's JSON: it gives ``ContainerSpec``s and reads
``Observation``s and ``RuntimeEvent``s.

Errors::

    RuntimeError_                 anything the engine could not do (message is the engine's)
     ├── PullError                the image could not be pulled   -> CannotPullContainerError
     ├── CreateError              the container could not be created -> CannotCreateContainerError
     ├── StartError               the container could not be started -> CannotStartContainerError
     └── NotFound                 no such container
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

# labels, as ECS's agent writes them, plus Dockyard's own
LABEL_CLUSTER = "com.amazonaws.ecs.cluster"
LABEL_TASK_ARN = "com.amazonaws.ecs.task-arn"
LABEL_CONTAINER_NAME = "com.amazonaws.ecs.container-name"
LABEL_FAMILY = "com.amazonaws.ecs.task-definition-family"
LABEL_VERSION = "com.amazonaws.ecs.task-definition-version"
LABEL_INSTANCE = "com.dockyard.container-instance"  # the agent that owns the container
LABEL_STOP_TIMEOUT = "com.dockyard.stop-timeout"


class RuntimeError_(Exception):
    """A runtime operation failed."""


class PullError(RuntimeError_):
    pass


class CreateError(RuntimeError_):
    pass


class ImageMissing(CreateError):
    """The create failed because the image is not (or no longer) on the engine."""


class StartError(RuntimeError_):
    pass


class NotFound(RuntimeError_):
    pass


class PullBehavior(StrEnum):
    """When to pull an image (ECS_IMAGE_PULL_BEHAVIOR)."""

    DEFAULT = "default"  # pull; on failure use the cached image if there is one
    ALWAYS = "always"  # pull; a failed pull fails the container
    ONCE = "once"  # pull unless this agent pulled it before and it is still cached
    PREFER_CACHED = "prefer-cached"  # use the cached image; pull only when absent


@dataclass(frozen=True)
class PortBinding:
    container_port: int
    host_port: int
    protocol: str = "tcp"
    host_ip: str = "127.0.0.1"

    def to_wire(self) -> dict[str, Any]:
        return {
            "bindIP": self.host_ip,
            "containerPort": self.container_port,
            "hostPort": self.host_port,
            "protocol": self.protocol,
        }


@dataclass(frozen=True)
class VolumeSpec:
    """A Docker volume the task needs (task-scoped ones are removed with the task's containers)."""

    name: str
    driver: str = "local"
    driver_opts: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    create: bool = True  # False: must already exist (shared scope without autoprovision)


@dataclass(frozen=True)
class ContainerSpec:
    name: str  # the runtime (Docker) name, fixed before creation
    image: str
    labels: Mapping[str, str]
    definition: Mapping[str, Any]  # the ECS container definition (wire), after overrides
    network_mode: str = "bridge"  # host | bridge | awsvpc | none
    network: str | None = None  # the Docker network to join in bridge mode; awsvpc: the pause container
    cgroup_parent: str | None = None
    port_bindings: tuple[PortBinding, ...] = ()
    binds: tuple[str, ...] = ()  # "source:target[:ro]", source a host path or a volume name
    volumes_from: tuple[str, ...] = ()  # "runtime-name[:ro]"
    links: tuple[str, ...] = ()  # "runtime-name:alias"
    stop_timeout: int = 30


class State(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"  # also dead / removing
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Observation:
    """A container as the runtime shows it (Docker's inspect)."""

    id: str
    name: str
    labels: Mapping[str, str]
    state: State
    exit_code: int | None = None
    oom_killed: bool = False
    health: str | None = None  # starting | healthy | unhealthy | None
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""
    port_bindings: tuple[PortBinding, ...] = ()


class EventKind(StrEnum):
    START = "start"
    DIE = "die"
    OOM = "oom"
    HEALTH = "health_status"
    DESTROY = "destroy"
    RESYNC = "resync"  # the event stream was (re)connected: events may have been missed


@dataclass(frozen=True)
class RuntimeEvent:
    kind: EventKind
    id: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    health: str | None = None
    time: float | None = None


class ContainerRuntime(Protocol):
    async def version(self) -> str: ...

    async def image_present(self, image: str) -> bool: ...

    async def pull(self, image: str) -> None:
        """Pull ``image``; ``PullError`` on failure."""
        ...

    async def ensure_network(self, name: str) -> None: ...

    async def ensure_volume(self, volume: VolumeSpec) -> None: ...

    async def remove_volume(self, name: str) -> None: ...

    async def create(self, spec: ContainerSpec) -> str:
        """Create the container; if one with ``spec.name`` exists already, return its id."""
        ...

    async def start(self, container_id: str) -> None: ...

    async def stop(self, container_id: str, timeout: int) -> None:
        """SIGTERM (or the image's stop signal), then SIGKILL after ``timeout`` seconds."""
        ...

    async def remove(self, container_id: str) -> None: ...

    async def inspect(self, container_id: str) -> Observation | None: ...

    async def list(self, labels: Mapping[str, str]) -> list[Observation]:
        """Every container (running or not) carrying all ``labels``."""
        ...

    def events(self, labels: Mapping[str, str]) -> AsyncIterator[RuntimeEvent]:
        """Container events for containers carrying ``labels``, forever; RESYNC after each (re)connect."""
        ...

    async def close(self) -> None: ...
