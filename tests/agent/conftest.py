"""Agent test fixtures: the fake control plane, a Docker runtime, cleanup of what tests created."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from dockyard.agent.cgroups import TaskCgroups
from dockyard.agent.runtime.base import LABEL_CLUSTER, LABEL_TASK_ARN

from .fake_server import FakeControlPlane

IMAGE = "dockyard/busybox:latest"


def docker_ok() -> bool:
    try:
        return (
            subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, timeout=20).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_docker = pytest.mark.skipif(
    not docker_ok(), reason="needs Docker and dockyard/busybox (scripts/docker.sh)"
)


def remove_labelled(label: str) -> None:
    """Remove the containers carrying ``label`` and the task cgroups they lived in."""
    found = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label={label}",
            "--format",
            '{{.ID}} {{.Label "' + LABEL_TASK_ARN + '"}}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split("\n")
    rows = [line.split(" ", 1) for line in found if line.strip()]
    if rows:
        subprocess.run(["docker", "rm", "-f", *(r[0] for r in rows)], capture_output=True, timeout=120)
    cgroups = TaskCgroups()
    for task_arn in {r[1] for r in rows if len(r) == 2 and r[1]}:
        cgroups.remove_now(task_arn.rsplit("/", 1)[-1])
        volumes = subprocess.run(
            ["docker", "volume", "ls", "-q", "--filter", f"label={LABEL_TASK_ARN}={task_arn}"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        if volumes:
            subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True, timeout=60)


@pytest.fixture
async def fake():  # type: ignore[no-untyped-def]
    cp = FakeControlPlane(cluster=f"c{uuid.uuid4().hex[:10]}")
    await cp.start()
    try:
        yield cp
    finally:
        await cp.close()
        remove_labelled(f"{LABEL_CLUSTER}={cp.cluster_arn}")


@pytest.fixture
async def docker_rt():  # type: ignore[no-untyped-def]
    from dockyard.agent.runtime.docker import DockerRuntime

    rt = DockerRuntime()
    try:
        yield rt
    finally:
        await rt.close()
