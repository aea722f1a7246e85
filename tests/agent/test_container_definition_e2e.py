"""End to end: every container-definition field the agent applies, through boto3, the real server and
real ``dockyard agent`` processes, checked on the real containers (``docker inspect``, ``docker exec``,
the container's own output read with ``dockyard logs``, files it wrote to a host volume).

Two agents: one started with --allow-privileged runs the task with every other field, and a
privileged task; one started without it refuses the same privileged task.
(The same fields against the in-process fake control plane: test_docker_engine.py.)
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.agent.runtime.base import LABEL_CLUSTER, LABEL_CONTAINER_NAME, LABEL_TASK_ARN
from tests.conftest import ServerProcess, wait_until

from .agent_process import AgentProcess
from .conftest import IMAGE, needs_docker, remove_labelled

pytestmark = needs_docker
FAST_WAITER = {"Delay": 1, "MaxAttempts": 60}
NET_ADMIN, NET_RAW, SYS_ADMIN = 12, 13, 21  # capability bits (linux/capability.h)

# The main container reports what it sees as key=value lines on stdout, then ignores SIGTERM so
# only SIGKILL after its stopTimeout ends it (the stop order check below relies on that).
MAIN_SCRIPT = "; ".join(
    [
        "echo uid=$(id -u)",
        "echo pwd=$(pwd)",
        "echo host=$(hostname)",
        "echo env=$GREETING",
        "echo nofile=$(ulimit -n)",
        "echo hosts=$(grep dbhost /etc/hosts)",
        "touch /rootfs 2>/dev/null && echo rootfs=rw || echo rootfs=ro",
        "echo init=$(cat /proc/1/comm)",
        "echo shm=$(df -k /dev/shm | tail -1 | awk '{print $2}')",
        "echo tmpfs=$(df -k /scratch | tail -1 | awk '{print $2}')",
        "touch /scratch/x && echo tmpfs_rw=yes",
        "echo capbnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)",
        "until [ -f /shared/f ]; do sleep 0.1; done",
        "echo from=$(cat /shared/f)",
        "touch /shared/g 2>/dev/null && echo from_ro=no || echo from_ro=yes",
        "echo taskvol=$(cat /own/taskvol/f)",
        "echo sharedvol=$(cat /own/sharedvol/f)",
        "echo main-was-here > /out/hello",
        "echo done=yes",
        "trap '' TERM",
        "while true; do sleep 0.1; done",
    ]
)
DATA_SCRIPT = (
    "trap 'exit 0' TERM; echo task > /taskvol/f; echo shared > /sharedvol/f; echo data > /shared/f;"
    " while true; do sleep 0.1; done"
)


@pytest.fixture
def cluster(dockyard_server: ServerProcess, unique: str) -> Iterator[str]:
    ecs = dockyard_server.client("ecs")
    arn = ecs.create_cluster(clusterName=unique)["cluster"]["clusterArn"]  # type: ignore[attr-defined]
    try:
        yield unique
    finally:
        remove_labelled(f"{LABEL_CLUSTER}={arn}")  # containers, task cgroups, task volumes


@pytest.fixture
def workdir() -> Iterator[Path]:
    """The host volume's directory (the container's user 65534 writes there) and the agents' state."""
    path = Path(tempfile.mkdtemp(prefix="dockyard-e2e-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def inspect(kind: str, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(docker(kind, "inspect", name))[0]  # type: ignore[no-any-return]


def finished_at(container_id: str) -> dt.datetime:
    """Docker's RFC 3339 FinishedAt (nanoseconds, trailing zeros trimmed) as a datetime."""
    stamp = inspect("container", container_id)["State"]["FinishedAt"].rstrip("Z")
    whole, _, frac = stamp.partition(".")
    return dt.datetime.fromisoformat(f"{whole}.{(frac + '000000')[:6]}")


def cap_bits(hex_mask: str) -> set[int]:
    value = int(hex_mask, 16)
    return {bit for bit in range(64) if value >> bit & 1}


def container(task: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(c for c in task["containers"] if c["name"] == name)


def task_definition(unique: str, host_dir: Path, shared_volume: str) -> dict:  # type: ignore[type-arg]
    return {
        "family": unique,
        "volumes": [
            {"name": "out", "host": {"sourcePath": str(host_dir)}},
            {"name": "scratch"},  # no configuration: a task-scoped Docker volume
            {
                "name": "taskvol",
                "dockerVolumeConfiguration": {"scope": "task", "driver": "local", "labels": {"kind": "task"}},
            },
            {
                "name": shared_volume,
                "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": True, "driver": "local"},
            },
        ],
        "containerDefinitions": [
            {
                "name": "data",
                "image": IMAGE,
                "memory": 32,
                "essential": True,
                "command": ["sh", "-c", DATA_SCRIPT],
                "stopTimeout": 10,
                "mountPoints": [
                    {"sourceVolume": "scratch", "containerPath": "/shared"},
                    {"sourceVolume": "taskvol", "containerPath": "/taskvol"},
                    {"sourceVolume": shared_volume, "containerPath": "/sharedvol"},
                ],
            },
            {
                "name": "main",
                "image": IMAGE,
                "memory": 32,
                "essential": True,
                "entryPoint": ["sh", "-c"],
                "command": [MAIN_SCRIPT],
                "environment": [{"name": "GREETING", "value": "hello e2e"}],
                "workingDirectory": "/tmp",
                "user": "65534",
                "hostname": "box1",
                "ulimits": [{"name": "nofile", "softLimit": 321, "hardLimit": 321}],
                "linuxParameters": {
                    "initProcessEnabled": True,
                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["NET_RAW"]},
                    "sharedMemorySize": 32,
                    "tmpfs": [{"containerPath": "/scratch", "size": 4, "mountOptions": ["mode=1777"]}],
                },
                "readonlyRootFilesystem": True,
                "dockerLabels": {"team": "blue"},
                "extraHosts": [{"hostname": "dbhost", "ipAddress": "10.1.2.3"}],
                "mountPoints": [
                    {"sourceVolume": "out", "containerPath": "/out"},
                    {"sourceVolume": "taskvol", "containerPath": "/own/taskvol", "readOnly": True},
                    {"sourceVolume": shared_volume, "containerPath": "/own/sharedvol", "readOnly": True},
                ],
                "volumesFrom": [{"sourceContainer": "data", "readOnly": True}],
                "dependsOn": [{"containerName": "data", "condition": "START"}],
                "stopTimeout": 1,
            },
        ],
    }


def running(ecs, cluster: str, arn: str) -> dict | None:  # type: ignore[no-untyped-def, type-arg]
    task = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
    if task["lastStatus"] == "STOPPED":
        pytest.fail(f"stopped: {task.get('stoppedReason')}; {task['containers']}")
    return task if task["lastStatus"] == "RUNNING" else None  # type: ignore[no-any-return]


def logs(task_arn: str, name: str) -> dict[str, str]:
    """The container's output through ``dockyard logs``, as its key=value lines."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dockyard.cli.agent_cmd",
            "logs",
            task_arn.rsplit("/", 1)[-1],
            "--container",
            name,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def privileged_definition(unique: str) -> dict:  # type: ignore[type-arg]
    return {
        "family": unique + "-privileged",
        "containerDefinitions": [
            {"name": "priv", "image": IMAGE, "memory": 16, "privileged": True, "command": ["sleep", "60"]}
        ],
    }


def settled(ecs, cluster: str, arn: str) -> dict | None:  # type: ignore[no-untyped-def, type-arg]
    task = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
    return task if task["lastStatus"] in ("RUNNING", "STOPPED") else None  # type: ignore[no-any-return]


def test_every_container_definition_field_on_real_containers(  # type: ignore[no-untyped-def]
    dockyard_server, cluster, workdir, unique
):
    ecs = dockyard_server.client("ecs")
    cluster_arn = ecs.describe_clusters(clusters=[cluster])["clusters"][0]["clusterArn"]
    host_dir = workdir / "out"
    host_dir.mkdir()
    host_dir.chmod(0o777)
    shared_volume = f"dockyard-e2e-{unique}"
    allowing = AgentProcess(
        dockyard_server, cluster, workdir / "allow", workdir / "allow.log", extra=["--allow-privileged"]
    )
    refusing = AgentProcess(dockyard_server, cluster, workdir / "refuse", workdir / "refuse.log")
    try:
        allowing.start()
        refusing.start()
        allowed_at, refused_at = allowing.wait_registered(), refusing.wait_registered()
        td = ecs.register_task_definition(**task_definition(unique, host_dir, shared_volume))
        priv_td = ecs.register_task_definition(**privileged_definition(unique))

        def start(definition: dict, instance: str) -> str:  # type: ignore[type-arg]
            out = ecs.start_task(
                cluster=cluster,
                taskDefinition=definition["taskDefinition"]["taskDefinitionArn"],
                containerInstances=[instance],
            )
            assert not out["failures"], out["failures"]
            return out["tasks"][0]["taskArn"]  # type: ignore[no-any-return]

        arn = start(td, allowed_at)
        refused, allowed = start(priv_td, refused_at), start(priv_td, allowed_at)

        # privileged without --allow-privileged: the task never starts, and says why
        ecs.get_waiter("tasks_stopped").wait(cluster=cluster, tasks=[refused], WaiterConfig=FAST_WAITER)
        task = ecs.describe_tasks(cluster=cluster, tasks=[refused])["tasks"][0]
        assert task["stopCode"] == "TaskFailedToStart", task
        assert task["stoppedReason"].startswith("ResourceInitializationError")
        assert "privileged" in task["stoppedReason"] and "--allow-privileged" in task["stoppedReason"]
        assert not docker("ps", "-aq", "--filter", f"label={LABEL_TASK_ARN}={refused}").split()
        # with it, Docker is asked for a privileged container. It runs with every capability where
        # the host allows that; inside a container whose own bounding set is short (like this test
        # machine's), runc cannot apply them and the task stops with Docker's own error instead.
        task = wait_until(lambda: settled(ecs, cluster, allowed), timeout=60, what="privileged task settled")
        priv_id = container(task, "priv")["runtimeId"]
        assert inspect("container", priv_id)["HostConfig"]["Privileged"] is True
        if task["lastStatus"] == "RUNNING":
            priv_caps = docker("exec", priv_id, "awk", "/^CapEff/ {print $2}", "/proc/self/status")
            assert SYS_ADMIN in cap_bits(priv_caps.strip())
        else:
            assert task["stoppedReason"].startswith("CannotStartContainerError"), task["stoppedReason"]
            assert "privileged" not in task["stoppedReason"]  # not Dockyard's refusal

        task = wait_until(lambda: running(ecs, cluster, arn), timeout=60, what="the task RUNNING")
        data_id, main_id = (container(task, n)["runtimeId"] for n in ("data", "main"))
        seen = wait_until(lambda: (got := logs(arn, "main")).get("done") and got, what="main's report")

        # what the main container saw from inside
        assert seen["uid"] == "65534" and seen["pwd"] == "/tmp" and seen["host"] == "box1"
        assert seen["env"] == "hello e2e" and seen["nofile"] == "321"
        assert "10.1.2.3" in seen["hosts"] and seen["rootfs"] == "ro" and seen["init"] == "docker-init"
        assert seen["shm"] == str(32 * 1024) and seen["tmpfs"] == str(4 * 1024) and seen["tmpfs_rw"] == "yes"
        caps = cap_bits(seen["capbnd"])
        assert NET_ADMIN in caps and NET_RAW not in caps and SYS_ADMIN not in caps
        assert seen["from"] == "data" and seen["from_ro"] == "yes"  # volumesFrom, read-only
        assert seen["taskvol"] == "task" and seen["sharedvol"] == "shared"  # Docker volumes, both scopes
        assert (host_dir / "hello").read_text().strip() == "main-was-here"  # host volume
        with pytest.raises(subprocess.CalledProcessError):  # read-only volumesFrom, even for root
            docker("exec", "-u", "0", main_id, "sh", "-c", "echo x > /shared/from-main")

        # what Docker was asked to make
        main = inspect("container", main_id)
        cfg, host = main["Config"], main["HostConfig"]
        assert cfg["Entrypoint"] == ["sh", "-c"] and cfg["Cmd"] == [MAIN_SCRIPT]
        assert "GREETING=hello e2e" in cfg["Env"] and cfg["WorkingDir"] == "/tmp" and cfg["User"] == "65534"
        assert cfg["Hostname"] == "box1"
        assert cfg["Labels"]["team"] == "blue" and cfg["Labels"][LABEL_CONTAINER_NAME] == "main"
        assert host["Init"] is True and host["ReadonlyRootfs"] is True and not host.get("Privileged")
        assert host["CapAdd"] == ["NET_ADMIN"] and host["CapDrop"] == ["NET_RAW"]
        assert host["ShmSize"] == 32 << 20 and host["Tmpfs"] == {"/scratch": "size=4m,mode=1777"}
        assert host["Ulimits"] == [{"Name": "nofile", "Soft": 321, "Hard": 321}]
        assert host["ExtraHosts"] == ["dbhost:10.1.2.3"]
        assert host["VolumesFrom"] == [inspect("container", data_id)["Name"].lstrip("/") + ":ro"]
        mounts = {m["Destination"]: m for m in main["Mounts"]}
        assert mounts["/out"]["Type"] == "bind" and mounts["/out"]["Source"] == str(host_dir)
        assert mounts["/out"]["RW"] and not mounts["/own/taskvol"]["RW"] and not mounts["/shared"]["RW"]
        task_volume = mounts["/own/taskvol"]["Name"]
        assert (
            mounts["/own/taskvol"]["Type"] == "volume" and mounts["/own/sharedvol"]["Name"] == shared_volume
        )
        assert mounts["/taskvol"]["Name"] == task_volume  # data's own mount, through volumesFrom
        labels = inspect("volume", task_volume)["Labels"]
        assert labels["kind"] == "task" and labels[LABEL_TASK_ARN] == arn
        assert inspect("volume", shared_volume)["Driver"] == "local"

        # containers stop in reverse dependsOn order: main (ignores SIGTERM, killed after its own 1 s
        # stopTimeout) before data (exits at once on SIGTERM), though data would stop first in parallel
        ecs.stop_task(cluster=cluster, task=arn, reason="e2e done")
        ecs.get_waiter("tasks_stopped").wait(cluster=cluster, tasks=[arn], WaiterConfig=FAST_WAITER)
        task = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
        assert task["stopCode"] == "UserInitiated"
        assert container(task, "main")["exitCode"] == 137 and container(task, "data")["exitCode"] == 0
        assert finished_at(main_id) < finished_at(data_id)
    finally:
        allowing.kill()
        refusing.kill()
        remove_labelled(f"{LABEL_CLUSTER}={cluster_arn}")  # the containers first: they hold the volume
        subprocess.run(["docker", "volume", "rm", "-f", shared_volume], capture_output=True, timeout=60)
