"""``dockyard up``: server + local agent, a task run with the AWS CLI, Ctrl-C stops both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import boto3
import pytest

from tests.cli.test_aws_cli import AWS
from tests.conftest import free_port, wait_until


@pytest.fixture
def dockyard_up(tmp_path):  # type: ignore[no-untyped-def]
    port = free_port()
    state = tmp_path / "state"
    env = dict(
        os.environ, DOCKYARD_ACCESS_KEY_ID="AKIDUPTEST0000000001", DOCKYARD_SECRET_ACCESS_KEY="up-secret"
    )
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dockyard.cli.main",
            "up",
            "--port",
            str(port),
            "--state-dir",
            str(state),
            "--agent-arg=--stop-timeout",
            "--agent-arg=2",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc, port, state, tmp_path / "up.log"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        subprocess.run(
            "docker ps -aq --filter label=com.amazonaws.ecs.task-definition-family=up-hello"
            " | xargs -r docker rm -f",
            shell=True,
            check=False,
        )


def test_up_runs_a_task_and_stops_cleanly_on_ctrl_c(dockyard_up):
    proc, port, state, log = dockyard_up
    endpoint = f"http://127.0.0.1:{port}"
    ecs = boto3.client(
        "ecs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDUPTEST0000000001",
        aws_secret_access_key="up-secret",
    )
    try:
        wait_until(
            lambda: ecs.list_container_instances(cluster="default")["containerInstanceArns"],
            timeout=60,
            what="the local agent to register",
        )
    except TimeoutError as e:
        raise AssertionError(log.read_text()[-4000:]) from e
    assert "Dockyard is up" in log.read_text()

    env = dict(
        os.environ,
        AWS_SHARED_CREDENTIALS_FILE=str(state / "credentials"),
        AWS_CONFIG_FILE=str(state / "config"),
        AWS_PROFILE="dockyard",
    )

    def aws(*args: str) -> dict:  # type: ignore[type-arg]
        out = subprocess.run(
            [AWS, "--endpoint-url", endpoint, "--output", "json", "ecs", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(out.stdout) if out.stdout.strip() else {}

    aws(
        "register-task-definition",
        "--family",
        "up-hello",
        "--container-definitions",
        json.dumps(
            [
                {
                    "name": "c",
                    "image": "dockyard/busybox:latest",
                    "memory": 32,
                    "command": ["sh", "-c", "echo hello; exit 3"],
                }
            ]
        ),
    )
    arn = aws("run-task", "--task-definition", "up-hello")["tasks"][0]["taskArn"]
    aws("wait", "tasks-stopped", "--tasks", arn)
    task = aws("describe-tasks", "--tasks", arn)["tasks"][0]
    assert task["lastStatus"] == "STOPPED" and task["containers"][0]["exitCode"] == 3

    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=40)
    assert proc.returncode in (0, 130, -signal.SIGINT), log.read_text()[
        -3000:
    ]  # 130: conventional for Ctrl-C
    assert "Dockyard stopped." in log.read_text()
    ps = subprocess.run(["pgrep", "-f", f"--server {endpoint}"], capture_output=True, text=True)
    assert ps.stdout.strip() == "", "the agent must be gone"
