"""A real agent on a cluster of its own for the awsvpc tests, and everything it leaves removed:
its task containers, its warm pause containers and the subnets' Docker networks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.agent.agent_process import AgentProcess
from tests.agent.conftest import remove_labelled
from tests.conftest import ServerProcess
from tests.networking.test_awsvpc_docker import _remove_subnet_networks


@contextmanager
def agent_on_new_cluster(
    server: ServerProcess, tmp_path: Path, prefix: str
) -> Iterator[tuple[str, AgentProcess]]:
    cluster = f"{prefix}-{uuid.uuid4().hex[:8]}"
    arn = server.client("ecs").create_cluster(clusterName=cluster)["cluster"]["clusterArn"]  # type: ignore[attr-defined]
    a = AgentProcess(server, cluster, tmp_path / "agent", tmp_path / "agent.log").start()
    try:
        a.wait_registered()
        yield cluster, a
    finally:
        a.kill()
        instance = a.checkpoint().get("instance", {}).get("containerInstanceArn", "")
        remove_labelled(f"com.amazonaws.ecs.cluster={arn}")
        remove_labelled(f"com.dockyard.pause-pool={instance}")
        _remove_subnet_networks()
