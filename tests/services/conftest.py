"""Fixtures for control-plane tests that play the agent themselves (tests/services/agent_client.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import ServerProcess
from tests.services.agent_client import TestAgent


@pytest.fixture
def cluster(ecs: Any, unique: str) -> str:
    ecs.create_cluster(clusterName=unique)
    return unique


@pytest.fixture
def agents(dockyard_server: ServerProcess) -> Iterator[Callable[..., TestAgent]]:
    """``agents(cluster, cpu=..., memory=...)`` registers a TestAgent with the session server."""
    made: list[TestAgent] = []

    def make(cluster: str, *, server: ServerProcess | None = None, **kw: Any) -> TestAgent:
        agent = TestAgent(server or dockyard_server, cluster, **kw)
        agent.register()
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


def register_td(ecs: Any, family: str, **container: Any) -> str:
    """A one-container task definition (memory 128 unless given); its ARN."""
    task_level = {k: container.pop(k) for k in ("cpu_task", "memory_task", "networkMode") if k in container}
    definition: dict[str, Any] = {"name": "web", "image": "busybox", **container}
    if (
        "memory" not in definition
        and "memoryReservation" not in definition
        and "memory_task" not in task_level
    ):
        definition["memory"] = 128
    kwargs: dict[str, Any] = {"family": family, "containerDefinitions": [definition]}
    if "cpu_task" in task_level:
        kwargs["cpu"] = task_level["cpu_task"]
    if "memory_task" in task_level:
        kwargs["memory"] = task_level["memory_task"]
    if "networkMode" in task_level:
        kwargs["networkMode"] = task_level["networkMode"]
    return str(ecs.register_task_definition(**kwargs)["taskDefinition"]["taskDefinitionArn"])


def resources(instance: dict[str, Any], which: str = "remainingResources") -> dict[str, Any]:
    """CPU, MEMORY, PORTS, PORTS_UDP of a ContainerInstance as plain values."""
    out: dict[str, Any] = {}
    for r in instance[which]:
        out[r["name"]] = (
            r["integerValue"] if r["type"] == "INTEGER" else sorted(int(p) for p in r["stringSetValue"])
        )
    return out
