"""End to end: the real server, real agent processes, real containers, boto3 and its waiters."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.agent.cgroups import OOM_REASON
from tests.conftest import ServerProcess, wait_until

from .agent_process import AgentProcess
from .conftest import IMAGE, needs_docker, remove_labelled

pytestmark = needs_docker
CGROUP = Path("/sys/fs/cgroup")
FAST_WAITER = {"Delay": 1, "MaxAttempts": 60}


@pytest.fixture
def cluster(dockyard_server: ServerProcess, unique: str) -> Iterator[str]:
    ecs = dockyard_server.client("ecs")
    arn = ecs.create_cluster(clusterName=unique)["cluster"]["clusterArn"]  # type: ignore[attr-defined]
    try:
        yield unique
    finally:
        remove_labelled(f"com.amazonaws.ecs.cluster={arn}")


@pytest.fixture
def agents(dockyard_server: ServerProcess, cluster: str, tmp_path: Path) -> Iterator[list[AgentProcess]]:
    """Agent processes of the test (start with ``spawn``); all killed at the end."""
    started: list[AgentProcess] = []
    try:
        yield started
    finally:
        for a in started:
            a.kill()


def spawn(
    agents: list[AgentProcess], server: ServerProcess, cluster: str, tmp: Path, name: str = "a"
) -> AgentProcess:
    agent = AgentProcess(server, cluster, tmp / f"agent-{name}", tmp / f"agent-{name}.log").start()
    agents.append(agent)
    return agent


def inspect(container_id: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        ["docker", "inspect", container_id], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def register(ecs, family: str, *containers: dict, **task: object) -> str:  # type: ignore[no-untyped-def, type-arg]
    defs = [
        {k: v for k, v in {"image": IMAGE, "memory": 32, "essential": True, **c}.items() if v is not None}
        for c in containers
    ]
    td = ecs.register_task_definition(family=family, containerDefinitions=defs, **task)
    return td["taskDefinition"]["taskDefinitionArn"]  # type: ignore[no-any-return]


def describe(ecs, cluster: str, arn: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]  # type: ignore[no-any-return]


def container(task: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(c for c in task["containers"] if c["name"] == name)


def run(ecs, cluster: str, td: str, **kw: object) -> str:  # type: ignore[no-untyped-def]
    out = ecs.run_task(cluster=cluster, taskDefinition=td, **kw)
    assert not out["failures"], out["failures"]
    return out["tasks"][0]["taskArn"]  # type: ignore[no-any-return]


def test_task_runs_and_stops_with_exit_code_and_waiters(dockyard_server, cluster, agents, tmp_path, unique):  # type: ignore[no-untyped-def]
    ecs = dockyard_server.client("ecs")
    agent = spawn(agents, dockyard_server, cluster, tmp_path)
    instance = agent.wait_registered()
    ci = ecs.describe_container_instances(cluster=cluster, containerInstances=[instance])[
        "containerInstances"
    ][0]
    assert ci["ec2InstanceId"].startswith("i-") and ci["agentConnected"]
    attrs = {a["name"] for a in ci["attributes"]}
    assert {"ecs.os-type", "ecs.cpu-architecture", "ecs.capability.container-health-check"} <= attrs
    td = register(ecs, unique, {"name": "main", "command": ["sh", "-c", "sleep 2; exit 3"]})
    arn = run(ecs, cluster, td)
    ecs.get_waiter("tasks_running").wait(cluster=cluster, tasks=[arn], WaiterConfig=FAST_WAITER)
    running = describe(ecs, cluster, arn)
    assert container(running, "main")["runtimeId"] and running["containerInstanceArn"] == instance
    ecs.get_waiter("tasks_stopped").wait(cluster=cluster, tasks=[arn], WaiterConfig=FAST_WAITER)
    task = describe(ecs, cluster, arn)
    assert task["stopCode"] == "EssentialContainerExited"
    assert task["stoppedReason"] == "Essential container in task exited"
    assert container(task, "main")["exitCode"] == 3
    for key in ("pullStartedAt", "pullStoppedAt", "startedAt", "executionStoppedAt", "stoppedAt"):
        assert task.get(key), key
    logs = subprocess.run(
        [sys.executable, "-m", "dockyard.cli.agent_cmd", "logs", arn.rsplit("/", 1)[-1]],
        capture_output=True,
        text=True,
    )
    assert logs.returncode == 0, logs.stderr


def test_limits_oom_health_and_order(dockyard_server, cluster, agents, tmp_path, unique):  # type: ignore[no-untyped-def]
    ecs = dockyard_server.client("ecs")
    spawn(agents, dockyard_server, cluster, tmp_path).wait_registered()
    hog = ["sh", "-c", "sleep 0.5; head -c 200000000 /dev/zero | tail > /dev/null"]
    own = run(ecs, cluster, register(ecs, unique + "-own", {"name": "hog", "memory": 16, "command": hog}))
    whole = run(
        ecs,
        cluster,
        register(
            ecs,
            unique + "-task",
            {"name": "hog", "memory": None, "memoryReservation": 8, "command": hog},
            {"name": "quiet", "memory": None, "memoryReservation": 8, "command": ["sleep", "60"]},
            memory="32",
            cpu="256",
        ),
    )
    ordered = run(
        ecs,
        cluster,
        register(
            ecs,
            unique + "-order",
            {
                "name": "db",
                "command": ["sh", "-c", "sleep 1; touch /tmp/ok; sleep 60"],
                "healthCheck": {"command": ["CMD-SHELL", "test -f /tmp/ok"], "interval": 5, "retries": 2},
            },
            {"name": "init", "essential": False, "command": ["true"]},
            {
                "name": "app",
                "command": ["sleep", "60"],
                "dependsOn": [
                    {"containerName": "db", "condition": "HEALTHY"},
                    {"containerName": "init", "condition": "SUCCESS"},
                ],
            },
            memory="128",
            cpu="512",
        ),
    )
    task_id = ordered.rsplit("/", 1)[-1]
    ecs.get_waiter("tasks_running").wait(cluster=cluster, tasks=[ordered], WaiterConfig=FAST_WAITER)
    assert (CGROUP / "memory/dockyard" / task_id / "memory.limit_in_bytes").read_text().strip() == str(
        128 << 20
    )
    assert (CGROUP / "cpu/dockyard" / task_id / "cpu.cfs_quota_us").read_text().strip() == "50000"
    task = wait_until(
        lambda: (t := describe(ecs, cluster, ordered)) and t.get("healthStatus") == "HEALTHY" and t,
        what="HEALTHY",
    )
    assert container(task, "db")["healthStatus"] == "HEALTHY"
    db, app = (inspect(container(task, n)["runtimeId"])["State"] for n in ("db", "app"))
    assert app["StartedAt"] > db["StartedAt"]
    assert container(task, "init")["exitCode"] == 0

    ecs.get_waiter("tasks_stopped").wait(cluster=cluster, tasks=[own, whole], WaiterConfig=FAST_WAITER)
    for arn in (own, whole):
        hogged = container(describe(ecs, cluster, arn), "hog")
        assert (hogged["exitCode"], hogged.get("reason")) == (137, OOM_REASON), arn
    assert container(describe(ecs, cluster, whole), "quiet").get("reason") != OOM_REASON

    ecs.stop_task(cluster=cluster, task=ordered, reason="test done")
    ecs.get_waiter("tasks_stopped").wait(cluster=cluster, tasks=[ordered], WaiterConfig=FAST_WAITER)
    assert describe(ecs, cluster, ordered)["stopCode"] == "UserInitiated"
    wait_until(lambda: not (CGROUP / "memory/dockyard" / task_id).exists(), what="cgroup removed")


def test_stop_timeout_trap_and_ports(dockyard_server, cluster, agents, tmp_path, unique):  # type: ignore[no-untyped-def]
    ecs = dockyard_server.client("ecs")
    spawn(agents, dockyard_server, cluster, tmp_path).wait_registered()
    trap = ["sh", "-c", "trap 'exit 0' TERM; httpd -p 80 -h /www; while true; do sleep 0.1; done"]
    td = register(
        ecs,
        unique,
        {
            "name": "web",
            "command": trap,
            "stopTimeout": 10,
            "portMappings": [{"containerPort": 80, "hostPort": 0}],
        },
        {
            "name": "stubborn",
            "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
            "stopTimeout": 1,
        },
    )
    arn = run(ecs, cluster, td)
    ecs.get_waiter("tasks_running").wait(cluster=cluster, tasks=[arn], WaiterConfig=FAST_WAITER)
    binding = container(describe(ecs, cluster, arn), "web")["networkBindings"][0]
    assert binding["bindIP"] == "127.0.0.1" and binding["containerPort"] == 80

    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{binding['hostPort']}/index.html", timeout=2) as r:
            return r.read().decode().strip()

    assert wait_until(fetch, what="httpd reachable on loopback") == "ok"
    t0 = time.monotonic()
    ecs.stop_task(cluster=cluster, task=arn)
    ecs.get_waiter("tasks_stopped").wait(cluster=cluster, tasks=[arn], WaiterConfig=FAST_WAITER)
    assert time.monotonic() - t0 < 10
    task = describe(ecs, cluster, arn)
    assert container(task, "web")["exitCode"] == 0
    assert container(task, "stubborn")["exitCode"] == 137


def test_kill_9_readoption_and_two_agents(dockyard_server, cluster, agents, tmp_path, unique):  # type: ignore[no-untyped-def]
    ecs = dockyard_server.client("ecs")
    first = spawn(agents, dockyard_server, cluster, tmp_path, "one")
    second = spawn(agents, dockyard_server, cluster, tmp_path, "two")
    one, two = first.wait_registered(), second.wait_registered()
    td = register(ecs, unique, {"name": "web", "command": ["sleep", "300"]})
    on_one = [
        ecs.start_task(cluster=cluster, taskDefinition=td, containerInstances=[one])["tasks"][0]["taskArn"]
        for _ in range(3)
    ]
    on_two = ecs.start_task(cluster=cluster, taskDefinition=td, containerInstances=[two])["tasks"][0][
        "taskArn"
    ]
    ecs.get_waiter("tasks_running").wait(cluster=cluster, tasks=[*on_one, on_two], WaiterConfig=FAST_WAITER)
    ids = {a: container(describe(ecs, cluster, a), "web")["runtimeId"] for a in [*on_one, on_two]}
    for arn in on_one:
        assert inspect(ids[arn])["Config"]["Labels"]["com.dockyard.container-instance"] == one
    assert inspect(ids[on_two])["Config"]["Labels"]["com.dockyard.container-instance"] == two

    keep, stop_meanwhile, vanish = on_one
    first.kill(signal.SIGKILL)
    ecs.stop_task(cluster=cluster, task=stop_meanwhile)
    subprocess.run(["docker", "rm", "-f", ids[vanish]], check=True, capture_output=True)
    time.sleep(0.2)
    assert inspect(ids[stop_meanwhile])["State"]["Running"]  # nobody stopped it while the agent was away
    first.start()
    assert first.wait_registered() == one
    ecs.get_waiter("tasks_stopped").wait(
        cluster=cluster, tasks=[stop_meanwhile, vanish], WaiterConfig=FAST_WAITER
    )
    gone = container(describe(ecs, cluster, vanish), "web")
    assert gone["lastStatus"] == "STOPPED"
    kept = describe(ecs, cluster, keep)
    assert kept["lastStatus"] == "RUNNING" and container(kept, "web")["runtimeId"] == ids[keep]
    for arn in on_one:
        found = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.amazonaws.ecs.task-arn={arn}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert len(found) <= 1, arn  # never a duplicate
    assert inspect(ids[on_two])["State"]["Running"]  # the other agent's task is untouched
    assert describe(ecs, cluster, on_two)["lastStatus"] == "RUNNING"


def test_unsupported_features_stop_the_task(dockyard_server, cluster, agents, tmp_path, unique):  # type: ignore[no-untyped-def]
    ecs = dockyard_server.client("ecs")
    spawn(agents, dockyard_server, cluster, tmp_path).wait_registered()
    cases = {
        "privileged": register(ecs, unique + "-p", {"name": "c", "privileged": True, "command": ["true"]}),
        "secrets": register(
            ecs,
            unique + "-s",
            {"name": "c", "secrets": [{"name": "PW", "valueFrom": "arn:aws:ssm:us-east-1:1:parameter/x"}]},
        ),
        "repositoryCredentials": register(
            ecs,
            unique + "-r",
            {"name": "c", "repositoryCredentials": {"credentialsParameter": "arn:aws:secretsmanager:x"}},
        ),
        "CannotPullContainerError": register(
            ecs, unique + "-i", {"name": "c", "image": "127.0.0.1:9/none:1"}
        ),
    }
    arns = {k: run(ecs, cluster, td) for k, td in cases.items()}
    ecs.get_waiter("tasks_stopped").wait(cluster=cluster, tasks=list(arns.values()), WaiterConfig=FAST_WAITER)
    for word, arn in arns.items():
        task = describe(ecs, cluster, arn)
        assert task["stopCode"] == "TaskFailedToStart", task
        assert word in task["stoppedReason"], task["stoppedReason"]


def test_agent_credentials_are_scoped_to_their_instance(dockyard_server, cluster, agents, tmp_path):  # type: ignore[no-untyped-def]
    import asyncio

    from dockyard.client.ecs import ApiError, EcsClient
    from dockyard.client.sigv4 import Credentials

    other = spawn(agents, dockyard_server, cluster, tmp_path).wait_registered()

    async def scenario() -> list[str]:
        admin = Credentials(dockyard_server.access_key, dockyard_server.secret_key)
        client = EcsClient(dockyard_server.endpoint, admin, dockyard_server.region)
        try:
            ident = json.dumps(
                {"instanceId": "i-0000000000000abcd", "privateIp": "127.0.0.1", "region": "us-east-1"}
            )
            answer = await client.register_container_instance(
                {
                    "cluster": cluster,
                    "instanceIdentityDocument": ident,
                    "totalResources": [
                        {"name": "CPU", "type": "INTEGER", "integerValue": 1024},
                        {"name": "MEMORY", "type": "INTEGER", "integerValue": 512},
                    ],
                }
            )
            mine = answer["containerInstance"]["containerInstanceArn"]
            creds = answer["agentCredentials"]
            client.credentials = Credentials(creds["accessKeyId"], creds["secretAccessKey"])
            ok = await client.poll(
                {"cluster": cluster, "containerInstanceArn": mine, "knownRevision": 0, "waitSeconds": 0}, 0
            )
            assert "revision" in ok
            codes = []
            for call in (
                client.poll(
                    {"cluster": cluster, "containerInstanceArn": other, "knownRevision": 0, "waitSeconds": 0},
                    0,
                ),
                client.report({"cluster": cluster, "containerInstanceArn": other, "reports": []}),
                client.call("AmazonEC2ContainerServiceV20141113.ListClusters", {}),
            ):
                try:
                    await call
                    codes.append("allowed")
                except ApiError as e:
                    codes.append(e.code)
            return codes
        finally:
            await client.close()

    assert asyncio.run(scenario()) == ["AccessDeniedException"] * 3
