"""PURE: the order of a task's containers, from ``dependsOn``, ``volumesFrom`` and ``links``.

Starting (``start_blocker``): a container starts once each ``dependsOn`` condition holds, and
after the containers it ``links`` to have started (Docker refuses to start a container whose
legacy link, on its default ``bridge`` network, names one that is not running)::

    START     the dependency has been started (RUNNING, or STOPPED after running)
    COMPLETE  the dependency ran and exited (any exit code)
    SUCCESS   the dependency ran and exited 0          exited non-zero -> can never hold
    HEALTHY   the dependency's health check passed     stopped, unhealthy or no check -> never

Creating (``create_blocker``): a container that mounts volumes from, or links to, another one is
created after that one exists (CREATED or later).

Stopping (``stop_blocker``): the reverse order. A container stops only after every container
that depends on it (by any of the three) has stopped.

Outcomes are values: ``None`` (go ahead), or a ``Blocker`` saying whom we wait on, and whether the
wait can ever end (``never``: the task cannot start).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dockyard.agent.task_state import ContainerPhase, ContainerState
from dockyard.domain.task_definitions import ContainerDefinition, DependencyCondition
from dockyard.domain.task_status import HealthStatus


@dataclass(frozen=True)
class Blocker:
    container: str  # the container waited on
    reason: str
    never: bool = False  # True: the condition can no longer hold


def _link_names(definition: ContainerDefinition) -> list[str]:
    return [n for n in (str(link).split(":", 1)[0] for link in definition.wire.get("links") or ()) if n]


def _source_names(definition: ContainerDefinition) -> list[str]:
    """Containers this one must be created after: volumesFrom sources and links."""
    names = [str(v.get("sourceContainer") or "") for v in definition.wire.get("volumesFrom") or ()]
    return [n for n in names if n] + _link_names(definition)


def depends_on_names(definition: ContainerDefinition) -> list[str]:
    """Every container this one depends on, by ``dependsOn``, ``volumesFrom`` or ``links``."""
    names = [d.container_name for d in definition.depends_on] + _source_names(definition)
    return list(dict.fromkeys(names))


def _condition(dep: ContainerState, condition: str) -> Blocker | None:
    name = dep.name
    stopped = dep.known is ContainerPhase.STOPPED
    if stopped and not dep.started and condition != DependencyCondition.START.value:
        return Blocker(name, f"dependency {name} stopped without starting", never=True)
    if condition == DependencyCondition.START.value:
        if dep.started:
            return None
        if stopped:
            return Blocker(name, f"dependency {name} stopped without starting", never=True)
        return Blocker(name, f"waiting for {name} to start")
    if condition == DependencyCondition.COMPLETE.value:
        return None if stopped else Blocker(name, f"waiting for {name} to complete")
    if condition == DependencyCondition.SUCCESS.value:
        if not stopped:
            return Blocker(name, f"waiting for {name} to exit successfully")
        if dep.exit_code == 0:
            return None
        return Blocker(name, f"dependency {name} exited with code {dep.exit_code}, not 0", never=True)
    if condition == DependencyCondition.HEALTHY.value:
        if not dep.has_health_check:
            return Blocker(name, f"dependency {name} has no health check", never=True)
        if dep.health is HealthStatus.HEALTHY and not stopped:
            return None
        if stopped:
            return Blocker(name, f"dependency {name} stopped before it was healthy", never=True)
        if dep.health is HealthStatus.UNHEALTHY:
            return Blocker(name, f"dependency {name} is unhealthy", never=True)
        return Blocker(name, f"waiting for {name} to be healthy")
    return Blocker(name, f"unknown dependency condition {condition!r}", never=True)


def start_blocker(container: ContainerState, containers: Mapping[str, ContainerState]) -> Blocker | None:
    """The first ``dependsOn`` condition (or link target start) of ``container`` that does not hold,
    or None."""
    conditions = [(d.container_name, d.condition) for d in container.definition.depends_on]
    conditions += [(name, DependencyCondition.START.value) for name in _link_names(container.definition)]
    for name, condition in conditions:
        other = containers.get(name)
        if other is None:
            return Blocker(name, f"dependency {name} is not in the task", True)
        blocker = _condition(other, condition)
        if blocker is not None:
            return blocker
    return None


def create_blocker(container: ContainerState, containers: Mapping[str, ContainerState]) -> Blocker | None:
    """The first volumesFrom/links source of ``container`` that does not exist yet, or None."""
    for name in _source_names(container.definition):
        other = containers.get(name)
        if other is None:
            return Blocker(name, f"container {name} is not in the task", never=True)
        if other.known < ContainerPhase.CREATED:
            return Blocker(name, f"waiting for {name} to be created")
        if other.known is ContainerPhase.STOPPED and other.runtime_id is None:
            return Blocker(name, f"container {name} was never created", never=True)
    return None


def stop_blocker(container: ContainerState, containers: Mapping[str, ContainerState]) -> Blocker | None:
    """A container that depends on ``container`` and has not stopped yet, or None."""
    for other in containers.values():
        if other.name == container.name or other.known is ContainerPhase.STOPPED:
            continue
        if container.name in depends_on_names(other.definition):
            return Blocker(other.name, f"waiting for {other.name} to stop first")
    return None


def validate(definitions: Iterable[ContainerDefinition]) -> str | None:
    """Why the dependency graph cannot be followed (unknown name, cycle), or None."""
    defs = {d.name: d for d in definitions}
    if not any(depends_on_names(d) for d in defs.values()):
        return None  # nothing depends on anything (the common case)
    for d in defs.values():
        for name in depends_on_names(d):
            if name not in defs:
                return f"container {d.name} depends on {name}, which is not in the task"
            if name == d.name:
                return f"container {d.name} depends on itself"
    try:
        start_order(defs.values())
    except ValueError as e:
        return str(e)
    return None


def start_order(definitions: Iterable[ContainerDefinition]) -> list[str]:
    """A start order that respects every dependency (stable: definition order among equals).

    Raises ``ValueError`` on a cycle. Stopping goes in the reverse order.
    """
    defs = {d.name: d for d in definitions}
    done: list[str] = []
    placed: set[str] = set()
    pending = list(defs)
    while pending:
        progress = False
        for name in list(pending):
            needs = [n for n in depends_on_names(defs[name]) if n in defs]
            if all(n in placed for n in needs):
                done.append(name)
                placed.add(name)
                pending.remove(name)
                progress = True
        if not progress:
            raise ValueError("dependency cycle among containers " + ", ".join(sorted(pending)))
    return done
