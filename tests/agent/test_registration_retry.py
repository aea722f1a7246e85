"""An agent started before its cluster exists keeps retrying and registers once the cluster is
created: the real server, a real agent process (simulated runtime: no containers needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess, wait_until

from .agent_process import AgentProcess

FAST_WAITER = {"Delay": 1, "MaxAttempts": 60}


def test_agent_registers_once_its_cluster_is_created(
    dockyard_server: ServerProcess, unique: str, tmp_path: Path
) -> None:
    ecs: Any = dockyard_server.client("ecs")
    agent = AgentProcess(
        dockyard_server, unique, tmp_path / "agent", tmp_path / "agent.log", extra=["--runtime", "simulated"]
    ).start()
    try:
        # the cluster does not exist: the agent is refused, says so, and keeps trying
        wait_until(
            lambda: agent.log().count("registration with") >= 3,
            timeout=30,
            what="three refused registration attempts",
        )
        assert "ClusterNotFoundException" in agent.log()
        assert agent.proc is not None and agent.proc.poll() is None, agent.log()
        assert agent.checkpoint().get("instance", {}).get("containerInstanceArn") is None
        assert ecs.describe_clusters(clusters=[unique])["failures"][0]["reason"] == "MISSING"

        ecs.create_cluster(clusterName=unique)
        instance = agent.wait_registered()
        assert f":container-instance/{unique}/" in instance
        assert ecs.list_container_instances(cluster=unique)["containerInstanceArns"] == [instance]
        wait_until(
            lambda: ecs.describe_container_instances(cluster=unique, containerInstances=[instance])[
                "containerInstances"
            ][0]["agentConnected"],
            what="agentConnected",
        )
        # and it runs work: a task reaches RUNNING on it
        td = ecs.register_task_definition(
            family=unique, containerDefinitions=[{"name": "main", "image": "busybox", "memory": 32}]
        )["taskDefinition"]["taskDefinitionArn"]
        run = ecs.run_task(cluster=unique, taskDefinition=td)
        assert not run["failures"], run["failures"]
        arn = run["tasks"][0]["taskArn"]
        ecs.get_waiter("tasks_running").wait(cluster=unique, tasks=[arn], WaiterConfig=FAST_WAITER)
        assert ecs.describe_tasks(cluster=unique, tasks=[arn])["tasks"][0]["containerInstanceArn"] == instance
        ecs.stop_task(cluster=unique, task=arn)
        ecs.get_waiter("tasks_stopped").wait(cluster=unique, tasks=[arn], WaiterConfig=FAST_WAITER)
    finally:
        agent.kill()
