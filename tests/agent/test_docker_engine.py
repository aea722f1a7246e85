"""Real containers: the engine on the Docker runtime, against the fake control plane.

(The same behaviour through the real server and boto3 is in test_agent_e2e.py.)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from dockyard.agent.cgroups import OOM_REASON
from dockyard.agent.runtime.base import LABEL_CLUSTER, ContainerSpec, ImageMissing

from .conftest import needs_docker, remove_labelled
from .harness import busybox, start_agent, until

pytestmark = needs_docker
CGROUP = Path("/sys/fs/cgroup")


def inspect(container_id: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        ["docker", "inspect", container_id], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


async def stopped(fake, arn, timeout=20.0):  # type: ignore[no-untyped-def]
    await until(lambda: fake.status(arn) == "STOPPED", timeout=timeout, what=f"{arn} STOPPED")
    return fake.tasks[arn].report


async def running(fake, arn, timeout=20.0):  # type: ignore[no-untyped-def]
    await until(lambda: fake.status(arn) == "RUNNING", timeout=timeout, what=f"{arn} RUNNING")
    return fake.tasks[arn].report


async def test_exit_code_and_cgroup_limits(fake, docker_rt, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, docker_rt, tmp_path / "a", cgroup_root=CGROUP)
    try:
        arn = await fake.run_task(
            busybox(
                {
                    "name": "main",
                    "command": ["sh", "-c", "sleep 1; exit 7"],
                    "cpu": 0,
                    "memoryReservation": 32,
                },
                {"name": "side", "essential": False, "command": ["sleep", "60"], "cpu": 100, "memory": 48},
                cpu="512",
                memory="128",
            ),
            agent.arn,
        )
        await running(fake, arn)
        task_id = arn.rsplit("/", 1)[-1]
        mem = CGROUP / "memory/dockyard" / task_id
        assert (mem / "memory.limit_in_bytes").read_text().strip() == str(128 * 1024 * 1024)
        assert (CGROUP / "cpu/dockyard" / task_id / "cpu.cfs_quota_us").read_text().strip() == "50000"
        main = inspect(fake.container(arn, "main")["runtimeId"])
        side = inspect(fake.container(arn, "side")["runtimeId"])
        assert main["HostConfig"]["CgroupParent"] == f"/dockyard/{task_id}"
        assert main["HostConfig"]["CpuShares"] == 2 and side["HostConfig"]["CpuShares"] == 100
        assert main["HostConfig"]["MemoryReservation"] == 32 * 1024 * 1024
        assert side["HostConfig"]["Memory"] == 48 * 1024 * 1024
        labels = main["Config"]["Labels"]
        assert (
            labels["com.amazonaws.ecs.task-arn"] == arn
            and labels["com.amazonaws.ecs.container-name"] == "main"
        )
        assert labels["com.dockyard.container-instance"] == agent.arn
        report = await stopped(fake, arn)
        assert report["stopCode"] == "EssentialContainerExited"
        assert fake.container(arn, "main")["exitCode"] == 7
        assert fake.container(arn, "side")["status"] == "STOPPED"
        await until(lambda: not mem.exists(), what="task cgroup removed")
    finally:
        await agent.crash()


async def test_container_and_task_level_oom(fake, docker_rt, tmp_path):  # type: ignore[no-untyped-def]
    hog = ["sh", "-c", "sleep 0.5; head -c 200000000 /dev/zero | tail > /dev/null"]
    agent = await start_agent(fake, docker_rt, tmp_path / "a", cgroup_root=CGROUP)
    try:
        own = await fake.run_task(busybox({"name": "hog", "memory": 16, "command": hog}), agent.arn)
        task_level = await fake.run_task(
            busybox(
                {"name": "hog", "memory": None, "memoryReservation": 8, "command": hog},
                {"name": "quiet", "memory": None, "memoryReservation": 8, "command": ["sleep", "60"]},
                memory="32",
            ),
            agent.arn,
        )
        await stopped(fake, own)
        assert fake.container(own, "hog")["exitCode"] == 137
        assert fake.container(own, "hog")["reason"] == OOM_REASON
        await stopped(fake, task_level)
        assert fake.container(task_level, "hog")["exitCode"] == 137
        assert fake.container(task_level, "hog")["reason"] == OOM_REASON
        assert fake.container(task_level, "quiet").get("reason") != OOM_REASON
    finally:
        await agent.crash()


async def test_stop_timeout_sigterm_trap_and_reverse_order(fake, docker_rt, tmp_path):  # type: ignore[no-untyped-def]
    trap = ["sh", "-c", "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done"]
    stubborn = ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]
    agent = await start_agent(fake, docker_rt, tmp_path / "a")
    try:
        arn = await fake.run_task(
            busybox(
                {"name": "db", "command": trap, "stopTimeout": 10},
                {
                    "name": "app",
                    "command": stubborn,
                    "stopTimeout": 1,
                    "dependsOn": [{"containerName": "db", "condition": "START"}],
                },
            ),
            agent.arn,
        )
        await running(fake, arn)
        t0 = time.monotonic()
        await fake.stop_task(arn)
        await stopped(fake, arn)
        assert time.monotonic() - t0 < 8
        assert fake.container(arn, "db")["exitCode"] == 0  # trapped SIGTERM
        assert fake.container(arn, "app")["exitCode"] == 137  # SIGKILL after stopTimeout
        assert fake.container(arn, "app").get("reason") != OOM_REASON
        db = inspect(fake.container(arn, "db")["runtimeId"])["State"]
        app = inspect(fake.container(arn, "app")["runtimeId"])["State"]
        assert app["FinishedAt"] < db["FinishedAt"]  # dependents stop first
        assert app["StartedAt"] > db["StartedAt"]
    finally:
        await agent.crash()


async def test_health_check_gates_depends_on(fake, docker_rt, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, docker_rt, tmp_path / "a")
    try:
        arn = await fake.run_task(
            busybox(
                {
                    "name": "db",
                    "command": ["sh", "-c", "sleep 1; touch /tmp/ready; sleep 60"],
                    "healthCheck": {
                        "command": ["CMD-SHELL", "test -f /tmp/ready"],
                        "interval": 1,
                        "retries": 3,
                    },
                },
                {
                    "name": "app",
                    "command": ["sleep", "60"],
                    "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}],
                },
            ),
            agent.arn,
        )
        report = await running(fake, arn, timeout=30)
        assert fake.container(arn, "db")["healthStatus"] == "HEALTHY"
        assert report["healthStatus"] == "HEALTHY"
        db = inspect(fake.container(arn, "db")["runtimeId"])
        app = inspect(fake.container(arn, "app")["runtimeId"])
        assert db["Config"]["Healthcheck"]["Interval"] == 1_000_000_000
        assert app["State"]["StartedAt"] > db["State"]["StartedAt"]
    finally:
        await agent.crash()


async def test_bridge_ports_reachable_on_loopback(fake, docker_rt, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, docker_rt, tmp_path / "a", port_range=(62100, 62199))
    try:
        arn = await fake.run_task(
            busybox(
                {
                    "name": "web",
                    "command": ["httpd", "-f", "-p", "80", "-h", "/www"],
                    "portMappings": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 62250}],
                }
            ),
            agent.arn,
        )
        await running(fake, arn)
        bindings = fake.container(arn, "web")["networkBindings"]
        dynamic = next(b for b in bindings if b["containerPort"] == 80)
        assert 62100 <= dynamic["hostPort"] <= 62199 and dynamic["bindIP"] == "127.0.0.1"
        assert any(b["hostPort"] == 62250 for b in bindings)

        def fetch() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{dynamic['hostPort']}/index.html", timeout=2) as r:
                return r.read().decode().strip()

        body = await until(lambda: _try(fetch), what="httpd answers")
        assert body == "ok"
        net = inspect(fake.container(arn, "web")["runtimeId"])["HostConfig"]["NetworkMode"]
        assert net == "bridge"  # Docker's default network, as on ECS (--bridge-network changes it)
    finally:
        await agent.crash()


async def test_links_on_dockers_default_bridge(fake, docker_rt, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, docker_rt, tmp_path / "a")
    try:
        arn = await fake.run_task(
            busybox(
                {"name": "db", "command": ["sleep", "60"]},
                {
                    "name": "app",
                    "essential": False,
                    "links": ["db:database"],
                    "command": ["sh", "-c", "grep -q database /etc/hosts && ping -c 1 -W 5 database"],
                },
            ),
            agent.arn,
        )
        await until(
            lambda: fake.container(arn, "app").get("status") == "STOPPED",
            timeout=30,
            what="app exited",
        )
        app = fake.container(arn, "app")
        assert app.get("exitCode") == 0, app
        assert inspect(app["runtimeId"])["HostConfig"]["Links"]
    finally:
        await agent.crash()


async def test_a_user_defined_bridge_network_on_request(fake, docker_rt, tmp_path):  # type: ignore[no-untyped-def]
    network = f"dockyard-test-{uuid.uuid4().hex[:8]}"
    agent = await start_agent(fake, docker_rt, tmp_path / "a", bridge_network=network)
    try:
        arns = [
            await fake.run_task(busybox({"name": "web", "command": ["sleep", "60"]}), agent.arn)
            for _ in range(3)
        ]
        for arn in arns:
            await running(fake, arn)
            assert inspect(fake.container(arn, "web")["runtimeId"])["HostConfig"]["NetworkMode"] == network
        found = subprocess.run(
            ["docker", "network", "ls", "-q", "--filter", f"name=^{network}$"], capture_output=True, text=True
        ).stdout.split()
        assert len(found) == 1  # created once, not once per task
        # removed behind the agent's back: the next create makes it again
        for arn in arns:
            await fake.stop_task(arn)
            await stopped(fake, arn)
        remove_labelled(f"{LABEL_CLUSTER}={fake.cluster_arn}")
        subprocess.run(["docker", "network", "rm", network], capture_output=True, check=True, timeout=60)
        arn = await fake.run_task(busybox({"name": "web", "command": ["sleep", "60"]}), agent.arn)
        await running(fake, arn)
        assert inspect(fake.container(arn, "web")["runtimeId"])["HostConfig"]["NetworkMode"] == network
    finally:
        await agent.crash()
        remove_labelled(f"{LABEL_CLUSTER}={fake.cluster_arn}")
        subprocess.run(["docker", "network", "rm", network], capture_output=True, timeout=60)


def _try(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except OSError:
        return None


async def test_privileged_refused_unless_allowed(fake, docker_rt, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, docker_rt, tmp_path / "a")
    try:
        arn = await fake.run_task(busybox({"name": "p", "privileged": True, "command": ["true"]}), agent.arn)
        report = await stopped(fake, arn)
        assert report["stopCode"] == "TaskFailedToStart"
        assert "privileged" in report["reason"] and "--allow-privileged" in report["reason"]
    finally:
        await agent.crash()


async def test_pull_failure_and_restart_readoption(fake, docker_rt, tmp_path):  # type: ignore[no-untyped-def]
    from dockyard.agent.runtime.base import PullBehavior

    agent = await start_agent(fake, docker_rt, tmp_path / "a", pull_behavior=PullBehavior.DEFAULT)
    arn = await fake.run_task(busybox({"name": "web", "command": ["sleep", "60"]}), agent.arn)
    vanish = await fake.run_task(busybox({"name": "web", "command": ["sleep", "60"]}), agent.arn)
    bad = await fake.run_task(busybox({"name": "x", "image": "127.0.0.1:9/nothing:1"}), agent.arn)
    report = await stopped(fake, bad)
    assert report["reason"].startswith("CannotPullContainerError")
    await running(fake, arn)
    await running(fake, vanish)
    first_id = fake.container(arn, "web")["runtimeId"]
    await agent.crash()
    subprocess.run(
        ["docker", "rm", "-f", fake.container(vanish, "web")["runtimeId"]], check=True, capture_output=True
    )
    agent = await start_agent(fake, docker_rt, tmp_path / "a")
    try:
        await stopped(fake, vanish)
        assert fake.container(vanish, "web")["status"] == "STOPPED"
        assert (
            "vanished" in fake.container(vanish, "web")["reason"].lower()
            or "removed" in fake.container(vanish, "web")["reason"]
        )
        await asyncio.sleep(0.5)
        assert fake.status(arn) == "RUNNING"
        assert fake.container(arn, "web")["runtimeId"] == first_id
        names = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.amazonaws.ecs.task-arn={arn}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert len(names) == 1
    finally:
        await agent.crash()


async def test_container_definition_applied(fake, docker_rt, tmp_path):  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    script = (
        "id -u > /out/uid; pwd > /out/pwd; hostname > /out/host; echo $GREETING > /out/env;"
        " ulimit -n > /out/nofile; grep dbhost /etc/hosts > /out/hosts;"
        " touch /rootfs 2>/dev/null && echo rw > /out/ro || echo ro > /out/ro;"
        " cat /proc/1/comm > /out/init; df -k /dev/shm | tail -1 > /out/shm;"
        " touch /scratch/x && echo ok > /out/tmpfs;"
        " until [ -f /shared/f ]; do sleep 0.1; done; cat /shared/f > /out/shared; echo done > /out/done"
    )
    agent = await start_agent(fake, docker_rt, tmp_path / "a")
    try:
        arn = await fake.run_task(
            busybox(
                {
                    "name": "data",
                    "essential": False,
                    "command": ["sh", "-c", "echo shared-ok > /shared/f; sleep 60"],
                    "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/shared"}],
                },
                {
                    "name": "main",
                    "entryPoint": ["sh", "-c"],
                    "command": [script],
                    "environment": [{"name": "GREETING", "value": "hello"}],
                    "workingDirectory": "/tmp",
                    "user": "65534",
                    "hostname": "box1",
                    "ulimits": [{"name": "nofile", "softLimit": 321, "hardLimit": 321}],
                    "linuxParameters": {
                        "initProcessEnabled": True,
                        "sharedMemorySize": 32,
                        "tmpfs": [{"containerPath": "/scratch", "size": 4, "mountOptions": ["mode=1777"]}],
                        "capabilities": {"drop": ["NET_RAW"]},
                    },
                    "readonlyRootFilesystem": True,
                    "dockerLabels": {"team": "blue"},
                    "extraHosts": [{"hostname": "dbhost", "ipAddress": "10.1.2.3"}],
                    "mountPoints": [{"sourceVolume": "out", "containerPath": "/out"}],
                    "volumesFrom": [{"sourceContainer": "data", "readOnly": True}],
                    "dependsOn": [{"containerName": "data", "condition": "START"}],
                },
                volumes=[{"name": "out", "host": {"sourcePath": str(out)}}, {"name": "scratch"}],
            ),
            agent.arn,
        )
        await stopped(fake, arn)
        assert fake.container(arn, "main")["exitCode"] == 0, fake.tasks[arn].report
        got = {p.name: p.read_text().strip() for p in out.iterdir()}
        assert got["uid"] == "65534" and got["pwd"] == "/tmp" and got["host"] == "box1"
        assert got["env"] == "hello" and got["nofile"] == "321" and "10.1.2.3" in got["hosts"]
        assert got["ro"] == "ro" and got["init"] == "docker-init" and got["tmpfs"] == "ok"
        assert got["shm"].split()[1] == str(32 * 1024) and got["shared"] == "shared-ok"
        info = inspect(fake.container(arn, "main")["runtimeId"])
        assert info["Config"]["Labels"]["team"] == "blue" and info["HostConfig"]["CapDrop"] == ["NET_RAW"]
    finally:
        await agent.crash()


async def test_a_create_without_its_image_says_so(docker_rt):  # type: ignore[no-untyped-def]
    spec = ContainerSpec(
        name=f"dockyard-test-{uuid.uuid4().hex[:8]}", image="dockyard/absent:never", labels={}, definition={}
    )
    with pytest.raises(ImageMissing):
        await docker_rt.create(spec)
