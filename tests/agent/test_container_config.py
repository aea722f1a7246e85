"""Pure pieces: Docker create bodies, task specs, OOM verdicts, ports, the checkpoint format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dockyard.agent.cgroups import OomCounters, cpu_quota_us, oom_verdict
from dockyard.agent.checkpoint import VERSION, Checkpoint, dump_task, load_task
from dockyard.agent.images import ImagePuller
from dockyard.agent.ports import PortAllocator, default_range, parse_range
from dockyard.agent.runtime.base import PullBehavior
from dockyard.agent.runtime.docker_config import create_body, log_config
from dockyard.agent.task_spec import container_spec, port_plan, task_from_wire, unsupported, volumes

FIXTURES = Path(__file__).parent / "fixtures"
ARN = "arn:aws:ecs:us-east-1:000000000000:task/c/abc123"


def agent_task(*containers: dict, **definition: object) -> dict:  # type: ignore[type-arg]
    return {
        "taskArn": ARN,
        "clusterArn": "arn:aws:ecs:us-east-1:000000000000:cluster/c",
        "desiredStatus": "RUNNING",
        "taskDefinition": {
            "family": "f",
            "revision": 2,
            "containerDefinitions": list(containers),
            **definition,
        },
        "overrides": {},
        "reportedSeq": 4,
    }


FULL = {
    "name": "web",
    "image": "dockyard/busybox:latest",
    "cpu": 1,
    "memory": 64,
    "memoryReservation": 32,
    "command": ["sh", "-c", "echo hi"],
    "entryPoint": ["/bin/env"],
    "environment": [{"name": "A", "value": "1"}],
    "workingDirectory": "/tmp",
    "user": "nobody",
    "hostname": "h1",
    "dockerLabels": {"team": "x", "com.amazonaws.ecs.task-arn": "spoofed"},
    "ulimits": [{"name": "nofile", "softLimit": 100, "hardLimit": 200}],
    "linuxParameters": {
        "initProcessEnabled": True,
        "capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]},
        "sharedMemorySize": 16,
        "tmpfs": [{"containerPath": "/scratch", "size": 8, "mountOptions": ["noexec"]}],
    },
    "readonlyRootFilesystem": True,
    "extraHosts": [{"hostname": "db", "ipAddress": "10.0.0.5"}],
    "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1},
    "mountPoints": [
        {"sourceVolume": "hostdir", "containerPath": "/data", "readOnly": True},
        {"sourceVolume": "scratch", "containerPath": "/vol"},
    ],
    "portMappings": [{"containerPort": 80}, {"containerPort": 53, "hostPort": 5353, "protocol": "udp"}],
    "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}},
    "stopTimeout": 7,
}
VOLUMES = [{"name": "hostdir", "host": {"sourcePath": "/srv/x"}}, {"name": "scratch"}]


def test_create_body_maps_the_container_definition():
    task = task_from_wire(
        agent_task(
            FULL, {"name": "side", "image": "i", "volumesFrom": [{"sourceContainer": "web"}]}, volumes=VOLUMES
        )
    )
    needed, sources = volumes(task)
    assert [v.name for v in needed] == ["dockyard-abc123-scratch"]
    plan = port_plan(task, PortAllocator(62300, 62310, "127.0.0.1"))
    spec = container_spec(
        task,
        task.containers["web"],
        instance_arn="inst",
        cgroup_parent="/dockyard/abc123",
        bindings=plan["web"],
        volume_sources=sources,
    )
    body = create_body(spec)
    host = body["HostConfig"]
    assert body["Cmd"] == ["sh", "-c", "echo hi"] and body["Entrypoint"] == ["/bin/env"]
    assert body["Env"] == ["A=1"] and body["WorkingDir"] == "/tmp" and body["User"] == "nobody"
    assert body["Hostname"] == "h1" and body["StopTimeout"] == 7
    assert body["Labels"]["team"] == "x" and body["Labels"]["com.amazonaws.ecs.task-arn"] == ARN
    assert body["Labels"]["com.dockyard.container-instance"] == "inst"
    assert body["Healthcheck"] == {
        "Test": ["CMD-SHELL", "true"],
        "Interval": 5 * 10**9,
        "Timeout": 2 * 10**9,
        "Retries": 1,
        "StartPeriod": 0,
    }
    assert host["Memory"] == 64 << 20 and host["MemoryReservation"] == 32 << 20 and host["CpuShares"] == 2
    assert host["CgroupParent"] == "/dockyard/abc123"
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 100, "Hard": 200}]
    assert host["Init"] is True and host["CapAdd"] == ["NET_ADMIN"] and host["CapDrop"] == ["MKNOD"]
    assert host["ShmSize"] == 16 << 20 and host["Tmpfs"] == {"/scratch": "size=8m,noexec"}
    assert host["ReadonlyRootfs"] is True and host["ExtraHosts"] == ["db:10.0.0.5"]
    assert host["Binds"] == ["/srv/x:/data:ro", "dockyard-abc123-scratch:/vol"]
    assert host["LogConfig"] == {"Type": "json-file", "Config": {}}  # awslogs stays local
    assert host["NetworkMode"] == "bridge"  # Docker's default network, as on ECS
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"bridge": {}}}
    dynamic = host["PortBindings"]["80/tcp"][0]
    assert dynamic["HostIp"] == "127.0.0.1" and 62300 <= int(dynamic["HostPort"]) <= 62310
    assert host["PortBindings"]["53/udp"] == [{"HostIp": "127.0.0.1", "HostPort": "5353"}]
    side = create_body(
        container_spec(
            task,
            task.containers["side"],
            instance_arn="inst",
            cgroup_parent=None,
            bindings=[],
            volume_sources=sources,
        )
    )
    assert side["HostConfig"]["VolumesFrom"] == ["dockyard-abc123-web"]


@pytest.mark.parametrize(
    ("network", "host_links", "endpoint"),
    [
        ("bridge", ["dockyard-abc123-db:database"], {}),  # Docker's default network: legacy links
        ("dockyard-bridge", None, {"Links": ["dockyard-abc123-db:database"]}),  # user-defined
    ],
)
def test_bridge_network_and_links(network, host_links, endpoint):  # type: ignore[no-untyped-def]
    task = task_from_wire(
        agent_task({"name": "db", "image": "i"}, {"name": "app", "image": "i", "links": ["db:database"]})
    )
    body = create_body(
        container_spec(
            task,
            task.containers["app"],
            instance_arn="inst",
            cgroup_parent=None,
            bindings=[],
            volume_sources={},
            bridge_network=network,
        )
    )
    assert body["HostConfig"]["NetworkMode"] == network
    assert body["HostConfig"].get("Links") == host_links
    assert body["NetworkingConfig"] == {"EndpointsConfig": {network: endpoint}}


def test_host_mode_and_overrides():
    wire = agent_task(
        {
            "name": "web",
            "image": "i",
            "cpu": 256,
            "portMappings": [{"containerPort": 8080}],
            "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        },
        networkMode="host",
    )
    wire["overrides"] = {
        "containerOverrides": [
            {"name": "web", "command": ["x"], "memory": 99, "environment": [{"name": "B", "value": "3"}]}
        ]
    }
    wire["cpu"], wire["memory"] = "512", "1024"
    task = task_from_wire(wire)
    assert (task.cpu, task.memory, task.seq) == (512, 1024, 4)
    plan = port_plan(task, PortAllocator(62300, 62310))
    assert plan["web"][0].host_port == 8080
    body = create_body(
        container_spec(
            task,
            task.containers["web"],
            instance_arn="i",
            cgroup_parent=None,
            bindings=plan["web"],
            volume_sources={},
        )
    )
    assert body["HostConfig"]["NetworkMode"] == "host" and "PortBindings" not in body["HostConfig"]
    assert (
        body["Cmd"] == ["x"]
        and body["HostConfig"]["Memory"] == 99 << 20
        and body["HostConfig"]["CpuShares"] == 256
    )
    assert sorted(body["Env"]) == ["A=1", "B=3"]


@pytest.mark.parametrize(
    ("container", "word"),
    [
        ({"secrets": [{"name": "X", "valueFrom": "arn:aws:ssm:x"}]}, "secrets"),
        ({"repositoryCredentials": {"credentialsParameter": "arn"}}, "repositoryCredentials"),
        ({"privileged": True}, "privileged"),
        ({"logConfiguration": {"logDriver": "splunk"}}, "splunk"),
        ({"environmentFiles": [{"value": "arn:aws:s3:::b/k", "type": "s3"}]}, "environmentFiles"),
    ],
)
def test_unsupported_features_are_named(container, word):  # type: ignore[no-untyped-def]
    task = task_from_wire(agent_task({"name": "c", "image": "i", **container}))
    reason = unsupported(task, allow_privileged=False)
    assert reason is not None and reason.startswith("ResourceInitializationError: ") and word in reason


def test_privileged_allowed_by_flag_and_log_drivers():
    task = task_from_wire(agent_task({"name": "c", "image": "i", "privileged": True}))
    assert unsupported(task, allow_privileged=True) is None
    assert log_config({"logConfiguration": {"logDriver": "json-file", "options": {"max-size": "1m"}}}) == {
        "Type": "json-file",
        "Config": {"max-size": "1m"},
    }


# exit code, docker flag, oom event, before, after, stop requested -> OOM?
OOM_TABLE = [
    (137, True, False, None, None, False, True),
    (137, False, True, None, None, False, True),
    (137, False, False, OomCounters(0, 0, 0), OomCounters(12, 0, 0), False, True),  # task limit hit
    (137, False, False, OomCounters(5, 1, 0), OomCounters(5, 2, 0), False, True),
    (137, False, False, OomCounters(5, 0, 0), OomCounters(5, 0, 0), False, False),  # killed by someone
    (137, True, True, None, OomCounters(9, 1, 0), True, False),  # our stopTimeout SIGKILL
    (0, True, True, None, None, False, False),
    (143, False, True, None, None, False, False),
]


@pytest.mark.parametrize(("code", "flag", "event", "before", "after", "stopping", "expected"), OOM_TABLE)
def test_oom_verdict(code, flag, event, before, after, stopping, expected):  # type: ignore[no-untyped-def]
    assert (
        oom_verdict(
            code,
            docker_oom_flag=flag,
            oom_event_seen=event,
            before=before,
            after=after,
            stop_requested=stopping,
        )
        is expected
    )


def test_cpu_quota():
    assert cpu_quota_us(1024) == 100_000 and cpu_quota_us(256) == 25_000 and cpu_quota_us(1) == 1000


def test_ports(tmp_path):  # type: ignore[no-untyped-def]
    proc = tmp_path / "range"
    proc.write_text("32768\t60999\n")
    assert default_range(proc) == (61000, 65535)
    proc.write_text("20000 65000\n")
    assert default_range(proc) == (10000, 19999)
    proc.write_text("1500 65000\n")
    assert default_range(proc) == (65001, 65535)
    assert parse_range("62000-62010") == (62000, 62010)
    with pytest.raises(ValueError):
        parse_range("9-1")
    ports = PortAllocator(62400, 62402)
    got = {ports.allocate("t1"), ports.allocate("t1"), ports.allocate("t2")}
    assert got == {62400, 62401, 62402}
    ports.release("t1")
    assert ports.held("t2") and not ports.held("t1")
    assert ports.allocate("t3") in {62400, 62401}


def test_checkpoint_fixture_of_every_version(tmp_path):  # type: ignore[no-untyped-def]
    """Every checkpoint format ever written still loads (amazon-ecs-agent's statemanager testdata)."""
    versions = sorted(FIXTURES.glob("checkpoint-v*.json"))
    assert versions and f"checkpoint-v{VERSION}.json" in {p.name for p in versions}
    for fixture in versions:
        state = tmp_path / fixture.stem
        state.mkdir()
        shutil.copy(fixture, state / "checkpoint.json")
        cp = Checkpoint.load(state)
        assert cp.instance["instanceId"].startswith("i-")
        for doc in cp.tasks.values():
            task = load_task(doc)
            assert task.containers and task.seq > 0
            assert json.loads(json.dumps(dump_task(task, doc.get("cleanupAt")))) == doc


class _Engine:
    """A runtime for ImagePuller: counts inspects and pulls."""

    def __init__(self) -> None:
        self.images = {"busybox"}
        self.inspects = 0
        self.pulls = 0

    async def image_present(self, image: str) -> bool:
        self.inspects += 1
        return image in self.images

    async def pull(self, image: str) -> None:
        self.pulls += 1
        self.images.add(image)


async def test_prefer_cached_checks_an_image_once_until_a_create_finds_it_gone():
    engine = _Engine()
    puller = ImagePuller(engine, PullBehavior.PREFER_CACHED, set())  # type: ignore[arg-type]
    for _ in range(3):
        await puller.ensure("busybox")
    assert (engine.inspects, engine.pulls) == (1, 0)
    engine.images.clear()  # removed behind the agent's back; a create said so
    puller.forget("busybox")
    await puller.ensure("busybox")
    await puller.ensure("busybox")
    assert (engine.inspects, engine.pulls) == (2, 1)
