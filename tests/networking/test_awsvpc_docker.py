"""awsvpc end to end: the real server, a real agent, real containers in their own namespaces, and
security groups enforced with nftables in each task's namespace."""

from __future__ import annotations

import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agent.agent_process import AgentProcess
from tests.agent.conftest import IMAGE, needs_docker, remove_labelled
from tests.conftest import ServerProcess, wait_until

pytestmark = needs_docker

WEB = "mkdir -p /www && echo hello-$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www"


@pytest.fixture
def cluster(dockyard_server: ServerProcess, unique: str) -> Iterator[str]:
    ecs = dockyard_server.client("ecs")
    arn = ecs.create_cluster(clusterName=unique)["cluster"]["clusterArn"]  # type: ignore[attr-defined]
    agents: list[AgentProcess] = []
    try:
        yield unique
    finally:
        for a in agents:
            a.kill()
        remove_labelled(f"com.amazonaws.ecs.cluster={arn}")


@pytest.fixture
def agent(dockyard_server: ServerProcess, cluster: str, tmp_path: Path) -> Iterator[AgentProcess]:
    a = AgentProcess(dockyard_server, cluster, tmp_path / "agent", tmp_path / "agent.log").start()
    a.wait_registered()
    try:
        yield a
    finally:
        a.kill()
        arn = a.checkpoint().get("instance", {}).get("containerInstanceArn", "")
        remove_labelled(f"com.dockyard.pause-pool={arn}")
        _remove_subnet_networks()


def _remove_subnet_networks() -> None:
    """The subnet networks the agent made (Docker refuses to remove one still in use: that is fine)."""
    names = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", "label=com.dockyard.subnet"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    for name in names:
        subprocess.run(["docker", "network", "rm", name], capture_output=True, timeout=30)


def _web_family(ecs, family: str) -> str:  # type: ignore[no-untyped-def]
    td = ecs.register_task_definition(
        family=family,
        networkMode="awsvpc",
        containerDefinitions=[
            {
                "name": "web",
                "image": IMAGE,
                "memory": 32,
                "essential": True,
                "command": ["sh", "-c", WEB],
                "portMappings": [{"containerPort": 80}],
            },
            {"name": "side", "image": IMAGE, "memory": 32, "essential": True, "command": ["sleep", "3600"]},
        ],
    )
    return td["taskDefinition"]["taskDefinitionArn"]  # type: ignore[no-any-return]


def _run(ecs, cluster: str, td: str, groups: list[str], subnet: str) -> str:  # type: ignore[no-untyped-def]
    out = ecs.run_task(
        cluster=cluster,
        taskDefinition=td,
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": [subnet],
                "securityGroups": groups,
                "assignPublicIp": "DISABLED",
            }
        },
    )
    assert not out["failures"], out["failures"]
    return out["tasks"][0]["taskArn"]  # type: ignore[no-any-return]


def _running(ecs, cluster: str, arn: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    def check() -> dict | None:  # type: ignore[type-arg]
        t = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
        assert t["lastStatus"] != "STOPPED", t.get("stoppedReason")
        return t if t["lastStatus"] == "RUNNING" else None

    return wait_until(check, timeout=60, what=f"task {arn} RUNNING")  # type: ignore[no-any-return]


def _address(task: dict) -> str:  # type: ignore[type-arg]
    details = {d["name"]: d["value"] for d in task["attachments"][0]["details"]}
    return details["privateIPv4Address"]


def _exec(task: dict, container: str, *cmd: str) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
    rid = next(c["runtimeId"] for c in task["containers"] if c["name"] == container)
    return subprocess.run(["docker", "exec", rid, *cmd], capture_output=True, text=True, timeout=20)


def _reach(task: dict, address: str) -> bool:  # type: ignore[type-arg]
    """From inside ``task``: does port 80 at ``address`` answer? (busybox nc: its static wget
    crashes on non-loopback addresses here)."""
    probe = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 1 {address} 80'
    return "200 OK" in _exec(task, "side", "sh", "-c", probe).stdout


def _get(url: str, timeout: float = 1.0) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except OSError:
        return False


RULE_DEADLINE = 30.0  # seconds: generous for a loaded machine; the benchmark measures the delay


def applied(what: str, change: Callable[[], object], holds: Callable[[], bool]) -> float:
    """Make ``change`` (an authorize or revoke) and wait until ``holds()`` says it reached the task;
    the delay is printed (``pytest -s``), not asserted."""
    started = time.monotonic()
    change()
    wait_until(holds, timeout=RULE_DEADLINE, interval=0.05, what=f"{what} applied")
    delay = time.monotonic() - started
    print(f"{what} reached the running task after {delay * 1000:.0f} ms")
    return delay


def test_awsvpc_task_own_address_localhost_and_groups(
    dockyard_server: ServerProcess, cluster: str, agent: AgentProcess
) -> None:
    ecs = dockyard_server.client("ecs")
    ec2 = dockyard_server.client("ec2")
    subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]
    tag = uuid.uuid4().hex[:8]
    lb_group = ec2.create_security_group(GroupName=f"lb-{tag}", Description="lb")["GroupId"]
    task_group = ec2.create_security_group(GroupName=f"task-{tag}", Description="tasks")["GroupId"]
    td = _web_family(ecs, f"awsvpc-{tag}")
    a = _running(ecs, cluster, _run(ecs, cluster, td, [task_group], subnet["SubnetId"]))
    b = _running(ecs, cluster, _run(ecs, cluster, td, [task_group], subnet["SubnetId"]))

    # the attachment: ECS's shape, and the address is the container's real one
    att = a["attachments"][0]
    assert att["type"] == "ElasticNetworkInterface" and att["status"] == "ATTACHED"
    names = {d["name"] for d in att["details"]}
    assert {"subnetId", "networkInterfaceId", "macAddress", "privateDnsName", "privateIPv4Address"} <= names
    addr_a, addr_b = _address(a), _address(b)
    assert addr_a != addr_b
    shown = _exec(a, "side", "ip", "-4", "-o", "addr", "show").stdout
    assert f"inet {addr_a}/" in shown
    assert a["containers"][0]["networkInterfaces"][0]["privateIpv4Address"] == addr_a
    enis = ec2.describe_network_interfaces(Filters=[{"Name": "private-ip-address", "Values": [addr_a]}])[
        "NetworkInterfaces"
    ]
    assert enis and enis[0]["Groups"][0]["GroupId"] == task_group

    # two containers of one task talk over localhost; both tasks listen on port 80
    assert _reach(a, "127.0.0.1") and _reach(b, "localhost")

    # no rule admits anyone: neither the host nor the other task reach it
    assert not _get(f"http://{addr_a}/")
    assert not _reach(b, addr_a)

    # a rule authorized on the running task takes effect, and so does its revoke (how fast is
    # bench/awsvpc.py's to judge: here the delays are only printed)
    host_rule = {
        "IpProtocol": "tcp",
        "FromPort": 80,
        "ToPort": 80,
        "IpRanges": [{"CidrIp": subnet["CidrBlock"].rsplit(".", 2)[0] + ".0.1/32"}],
    }
    applied(
        "authorize",
        lambda: ec2.authorize_security_group_ingress(GroupId=task_group, IpPermissions=[host_rule]),
        lambda: _get(f"http://{addr_a}/", 0.3),
    )
    applied(
        "revoke",
        lambda: ec2.revoke_security_group_ingress(GroupId=task_group, IpPermissions=[host_rule]),
        lambda: not _get(f"http://{addr_a}/", 0.3),
    )

    # source-group rule: members of lb_group may connect; task b is in task_group only
    ec2.authorize_security_group_ingress(
        GroupId=task_group,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupId": task_group}]}
        ],
    )
    wait_until(lambda: _reach(b, addr_a), timeout=5, what="same-group rule applied")
    assert _reach(a, addr_b) and not _get(f"http://{addr_a}/")  # the host is not in the group

    # a group in use cannot be deleted
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as e:
        ec2.delete_security_group(GroupId=task_group)
    assert e.value.response["Error"]["Code"] == "DependencyViolation"

    for t in (a, b):
        ecs.stop_task(cluster=cluster, task=t["taskArn"])
    for t in (a, b):
        wait_until(
            lambda t=t: (
                ecs.describe_tasks(cluster=cluster, tasks=[t["taskArn"]])["tasks"][0]["lastStatus"]
                == "STOPPED"
            ),
            timeout=60,
            what="stopped",
        )
    stopped = ecs.describe_tasks(cluster=cluster, tasks=[a["taskArn"]])["tasks"][0]
    assert stopped["attachments"][0]["status"] == "DELETED"
    wait_until(
        lambda: (
            not ec2.describe_network_interfaces(Filters=[{"Name": "private-ip-address", "Values": [addr_a]}])[
                "NetworkInterfaces"
            ]
        ),
        timeout=10,
        what="interface released",
    )
    ec2.delete_security_group(GroupId=task_group)
    ec2.delete_security_group(GroupId=lb_group)
