"""The security-group pattern through a real load balancer: the load balancer's group open on its
listener port, the tasks' group admitting only the load balancer's group. An awsvpc busybox httpd
task registered in an ``ip`` target group answers through the load balancer, and neither the host
nor another task reach it directly until a rule admits them."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.agent.agent_process import AgentProcess
from tests.agent.conftest import needs_docker
from tests.conftest import ServerProcess, start_server, wait_until
from tests.lb.backends import get
from tests.lb.conftest import FAST_CHECKS, HEALTHY_WITHIN, lb_network, short
from tests.networking.agents import agent_on_new_cluster
from tests.networking.test_awsvpc_docker import (
    _address,
    _get,
    _reach,
    _run,
    _running,
    _web_family,
    applied,
)

pytestmark = needs_docker


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path, "--lb-network", lb_network())
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def agent(server: ServerProcess, tmp_path: Path) -> Iterator[tuple[str, AgentProcess]]:
    with agent_on_new_cluster(server, tmp_path, "lbsg") as made:
        yield made


def _on_host(address: str) -> bool:
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=10)
    return f" {address}/32 " in shown.stdout


def test_lb_group_open_task_group_admits_only_the_lb(
    server: ServerProcess, agent: tuple[str, AgentProcess]
) -> None:
    cluster, _ = agent
    ecs, ec2, elbv2 = server.client("ecs"), server.client("ec2"), server.client("elbv2")
    subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]  # type: ignore[attr-defined]
    tag = uuid.uuid4().hex[:8]
    lb_group = ec2.create_security_group(GroupName=f"lb-{tag}", Description="lb")["GroupId"]  # type: ignore[attr-defined]
    task_group = ec2.create_security_group(GroupName=f"task-{tag}", Description="tasks")["GroupId"]  # type: ignore[attr-defined]
    ec2.authorize_security_group_ingress(  # type: ignore[attr-defined]
        GroupId=lb_group,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    )
    ec2.authorize_security_group_ingress(  # type: ignore[attr-defined]
        GroupId=task_group,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupId": lb_group}]}
        ],
    )

    lb = elbv2.create_load_balancer(  # type: ignore[attr-defined]
        Name=short(f"web-{tag}"), Subnets=[subnet["SubnetId"]], SecurityGroups=[lb_group]
    )["LoadBalancers"][0]
    tg = elbv2.create_target_group(  # type: ignore[attr-defined]
        Name=short(f"tg-{tag}"),
        Protocol="HTTP",
        Port=80,
        VpcId=subnet["VpcId"],
        TargetType="ip",
        HealthCheckPath="/",
        **FAST_CHECKS,
    )["TargetGroups"][0]
    elbv2.create_listener(  # type: ignore[attr-defined]
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
    )
    # the load balancer's interface is in its subnet and its group, as EC2 shows it
    enis = ec2.describe_network_interfaces(Filters=[{"Name": "group-id", "Values": [lb_group]}])[  # type: ignore[attr-defined]
        "NetworkInterfaces"
    ]
    assert len(enis) == 1 and enis[0]["SubnetId"] == subnet["SubnetId"]
    lb_address = enis[0]["PrivateIpAddress"]
    assert enis[0]["Description"].startswith("ELB app/")
    wait_until(lambda: _on_host(lb_address), timeout=10, what="load balancer address on the bridge")

    td = _web_family(ecs, f"lbsg-{tag}")
    web = _running(ecs, cluster, _run(ecs, cluster, td, [task_group], subnet["SubnetId"]))
    other = _running(ecs, cluster, _run(ecs, cluster, td, [task_group], subnet["SubnetId"]))
    addr = _address(web)
    elbv2.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": addr, "Port": 80}])  # type: ignore[attr-defined]

    def healthy() -> bool:
        d = elbv2.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]  # type: ignore[attr-defined]
        return bool(d) and d[0]["TargetHealth"]["State"] == "healthy"

    try:
        wait_until(healthy, timeout=HEALTHY_WITHIN, interval=0.25, what="the task healthy behind the LB")
        # through the load balancer's DNS name (and its listen address): the task answers
        status, body = get(lb["DNSName"], 80, "/", timeout=5)
        assert status == 200 and body.startswith("hello-")
        # directly: neither the host nor another task get through
        assert not _get(f"http://{addr}/", 1.0)
        assert not _reach(other, addr)

        # a rule for the host's address (the subnet's gateway on the bridge) opens it, its revoke
        # closes it again (the delays are printed; bench/awsvpc.py measures them)
        host_rule = {
            "IpProtocol": "tcp",
            "FromPort": 80,
            "ToPort": 80,
            "IpRanges": [{"CidrIp": subnet["CidrBlock"].rsplit(".", 2)[0] + ".0.1/32"}],
        }
        applied(
            "authorize",
            lambda: ec2.authorize_security_group_ingress(GroupId=task_group, IpPermissions=[host_rule]),  # type: ignore[attr-defined]
            lambda: _get(f"http://{addr}/", 0.3),
        )
        applied(
            "revoke",
            lambda: ec2.revoke_security_group_ingress(GroupId=task_group, IpPermissions=[host_rule]),  # type: ignore[attr-defined]
            lambda: not _get(f"http://{addr}/", 0.3),
        )
        assert get(lb["DNSName"], 80, "/", timeout=5)[0] == 200  # the load balancer still gets through

        # the load balancer's group is in use while it exists
        with pytest.raises(ClientError) as e:
            ec2.delete_security_group(GroupId=lb_group)  # type: ignore[attr-defined]
        assert e.value.response["Error"]["Code"] == "DependencyViolation"
    finally:
        elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])  # type: ignore[attr-defined]
        elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])  # type: ignore[attr-defined]
        for t in (web, other):
            ecs.stop_task(cluster=cluster, task=t["taskArn"])  # type: ignore[attr-defined]
    # deleting the load balancer takes its address off the bridge
    wait_until(lambda: not _on_host(lb_address), timeout=10, what="load balancer address removed")
