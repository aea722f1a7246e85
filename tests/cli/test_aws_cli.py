"""The AWS CLI v1 works unchanged against Dockyard with --endpoint-url and the written profile."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

AWS = shutil.which("aws") or str(Path(sys.executable).with_name("aws"))


def aws(srv, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [AWS, "--endpoint-url", srv.endpoint, "--output", "json", *args],
        env=srv.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def test_credentials_files_are_written(dockyard_server):
    creds = (dockyard_server.state_dir / "credentials").read_text()
    assert "[dockyard]" in creds and dockyard_server.access_key in creds and "region = us-east-1" in creds
    config = (dockyard_server.state_dir / "config").read_text()
    assert "[profile dockyard]" in config
    assert (dockyard_server.state_dir / "credentials").stat().st_mode & 0o077 == 0


def test_cluster_walkthrough(dockyard_server, unique):
    out = json.loads(aws(dockyard_server, "ecs", "create-cluster", "--cluster-name", unique).stdout)
    assert out["cluster"]["clusterName"] == unique
    out = json.loads(aws(dockyard_server, "ecs", "list-clusters").stdout)
    assert any(a.endswith("/" + unique) for a in out["clusterArns"])
    out = json.loads(
        aws(dockyard_server, "ecs", "describe-clusters", "--clusters", unique, "--include", "SETTINGS").stdout
    )
    assert out["clusters"][0]["settings"][0]["name"] == "containerInsights"


def test_task_definition_walkthrough(dockyard_server, unique, tmp_path):
    family = unique
    spec = {
        "family": family,
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{"name": "web", "image": "busybox", "essential": True, "memory": 128}],
    }
    path = tmp_path / "td.json"
    path.write_text(json.dumps(spec))
    out = json.loads(
        aws(dockyard_server, "ecs", "register-task-definition", "--cli-input-json", f"file://{path}").stdout
    )
    assert out["taskDefinition"]["revision"] == 1
    out = json.loads(
        aws(dockyard_server, "ecs", "describe-task-definition", "--task-definition", family).stdout
    )
    assert out["taskDefinition"]["containerDefinitions"][0]["name"] == "web"
    out = json.loads(aws(dockyard_server, "ecs", "list-task-definitions", "--family-prefix", family).stdout)
    assert out["taskDefinitionArns"] == [f"arn:aws:ecs:us-east-1:000000000000:task-definition/{family}:1"]


@pytest.mark.parametrize("bad", [["--cluster-name", "bad name!"]])
def test_errors_are_reported_by_the_cli(dockyard_server, bad):
    res = aws(dockyard_server, "ecs", "create-cluster", *bad, check=False)
    assert res.returncode != 0
    assert "InvalidParameterException" in res.stderr
