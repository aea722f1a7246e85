"""``dockyard logs TASK [--container NAME] [--follow]`` against a real task whose containers log
with the awslogs driver (kept on this machine): the real server, a real agent, real containers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess, wait_until

from .agent_process import AgentProcess
from .conftest import IMAGE, needs_docker, remove_labelled

pytestmark = needs_docker
FAST_WAITER = {"Delay": 1, "MaxAttempts": 60}
LOGS = [sys.executable, "-m", "dockyard.cli.main", "logs"]


def _awslogs(unique: str) -> dict[str, Any]:
    return {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": f"/dockyard/{unique}",
            "awslogs-region": "us-east-1",
            "awslogs-stream-prefix": "t",
        },
    }


def _container(name: str, unique: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": IMAGE,
        "memory": 32,
        "essential": True,
        "command": ["sh", "-c", f"echo hello-from-{name}; exec sleep 600"],
        "logConfiguration": _awslogs(unique),
    }


@pytest.fixture
def running_task(dockyard_server: ServerProcess, unique: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A RUNNING two-container task (app, side) on a real agent; everything removed afterwards."""
    ecs: Any = dockyard_server.client("ecs")
    cluster_arn = ecs.create_cluster(clusterName=unique)["cluster"]["clusterArn"]
    agent = AgentProcess(dockyard_server, unique, tmp_path / "agent", tmp_path / "agent.log").start()
    try:
        agent.wait_registered()
        td = ecs.register_task_definition(
            family=unique, containerDefinitions=[_container("app", unique), _container("side", unique)]
        )["taskDefinition"]["taskDefinitionArn"]
        run = ecs.run_task(cluster=unique, taskDefinition=td)
        assert not run["failures"], run["failures"]
        arn = run["tasks"][0]["taskArn"]
        ecs.get_waiter("tasks_running").wait(cluster=unique, tasks=[arn], WaiterConfig=FAST_WAITER)
        task = ecs.describe_tasks(cluster=unique, tasks=[arn])["tasks"][0]
        yield task
        ecs.stop_task(cluster=unique, task=arn)
        ecs.get_waiter("tasks_stopped").wait(cluster=unique, tasks=[arn], WaiterConfig=FAST_WAITER)
    finally:
        agent.kill()
        remove_labelled(f"com.amazonaws.ecs.cluster={cluster_arn}")


def _logs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LOGS, *args], capture_output=True, text=True, timeout=60)


def test_logs_show_and_filter_awslogs_output(running_task: dict[str, Any]) -> None:
    arn = running_task["taskArn"]
    task_id = arn.rsplit("/", 1)[-1]
    # both containers' lines, each prefixed by its container name; by ARN or by id
    for ref in (arn, task_id):
        out = wait_until(
            lambda ref=ref: (r := _logs(ref)).returncode == 0 and "hello-from-side" in r.stdout and r,
            timeout=20,
            what="both containers' output",
        )
        assert "app | hello-from-app" in out.stdout and "side | hello-from-side" in out.stdout
    only_app = _logs(task_id, "--container", "app")
    assert only_app.returncode == 0, only_app.stderr
    assert "hello-from-app" in only_app.stdout and "hello-from-side" not in only_app.stdout
    missing = _logs(task_id, "--container", "nope")
    assert missing.returncode == 1 and "no containers" in missing.stderr


def test_logs_follow_streams_later_output(running_task: dict[str, Any], tmp_path: Path) -> None:
    task_id = running_task["taskArn"].rsplit("/", 1)[-1]
    app = next(c for c in running_task["containers"] if c["name"] == "app")
    out_path = tmp_path / "follow.out"
    with open(out_path, "w") as out:
        follow = subprocess.Popen(
            [*LOGS, task_id, "--container", "app", "--follow"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: "hello-from-app" in out_path.read_text(), timeout=20, what="the first line")
        assert follow.poll() is None, out_path.read_text()  # still following
        # the container's main process prints a new line now, after the CLI started following
        subprocess.run(
            ["docker", "exec", app["runtimeId"], "sh", "-c", "echo printed-later > /proc/1/fd/1"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait_until(lambda: "printed-later" in out_path.read_text(), timeout=20, what="the later line")
        assert "hello-from-side" not in out_path.read_text()
    finally:
        follow.kill()
        follow.wait(timeout=30)
