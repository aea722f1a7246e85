"""The warm pause-container pool fills when the agent starts on an instance that takes awsvpc tasks,
so even the instance's first awsvpc task takes a ready namespace instead of waiting for one."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.agent.agent_process import AgentProcess
from tests.agent.conftest import needs_docker, remove_labelled
from tests.conftest import ServerProcess, wait_until
from tests.networking.test_awsvpc_docker import _remove_subnet_networks, _run, _running, _web_family
from tests.networking.test_awsvpc_restart import _network_mode, _pause_containers

pytestmark = needs_docker

POOL_SIZE = 4  # PausePool's default


def test_pool_is_warm_before_the_first_awsvpc_task(
    dockyard_server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    ecs, ec2 = dockyard_server.client("ecs"), dockyard_server.client("ec2")
    cluster_arn = ecs.create_cluster(clusterName=unique)["cluster"]["clusterArn"]  # type: ignore[attr-defined]
    agent = AgentProcess(dockyard_server, unique, tmp_path / "agent", tmp_path / "agent.log").start()
    instance = agent.wait_registered()
    instances = [instance]
    try:
        warm = wait_until(
            lambda: (lambda held: held if len(held) == POOL_SIZE else None)(_pause_containers(instance)),
            timeout=30,
            what="the warm pool filled at start",
        )
        assert not any(warm.values())  # on no network yet

        subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]  # type: ignore[attr-defined]
        td = _web_family(ecs, f"warm-{uuid.uuid4().hex[:8]}")
        task = _running(ecs, unique, _run(ecs, unique, td, [], subnet["SubnetId"]))
        pause = _network_mode(task, "web").removeprefix("container:")
        assert pause in warm  # the first task took a warm one
        ecs.stop_task(cluster=unique, task=task["taskArn"])  # type: ignore[attr-defined]
        wait_until(lambda: pause not in _pause_containers(instance), timeout=60, what="its pause removed")

        # killed with -9, the agent leaves its warm pool; the next agent on the engine removes it
        agent.kill()
        assert _pause_containers(instance)
        agent = AgentProcess(dockyard_server, unique, tmp_path / "agent-2", tmp_path / "agent-2.log").start()
        instances.append(agent.wait_registered())
        wait_until(lambda: not _pause_containers(instance), timeout=30, what="the dead agent's pool removed")
    finally:
        agent.kill()
        remove_labelled(f"com.amazonaws.ecs.cluster={cluster_arn}")
        for arn in instances:
            remove_labelled(f"com.dockyard.pause-pool={arn}")
        _remove_subnet_networks()
