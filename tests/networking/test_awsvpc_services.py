"""Services in awsvpc mode: CreateService's ``networkConfiguration`` (ECS's checks and messages), an
address per task placed by the service controller, and the security-group pattern through a real
load balancer: an ``ip`` target group gets each task's address and container port, the load
balancer's group is open on its listener port, the tasks' group admits only the load balancer's
group, so the tasks answer through the load balancer and not directly from the host."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.agent.agent_process import AgentProcess
from tests.agent.conftest import needs_docker
from tests.conftest import ServerProcess, wait_until
from tests.lb.backends import get
from tests.lb.conftest import FAST_CHECKS, HEALTHY_WITHIN, lb_network, short
from tests.networking.agents import agent_on_new_cluster
from tests.networking.test_awsvpc_docker import _address, _get, _web_family
from tests.services_e2e.conftest import FAST, describe_service, service_tasks, start_service_server

pytestmark = needs_docker


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_service_server(tmp_path_factory.mktemp("awsvpc-services"), "--lb-network", lb_network())
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def agent(server: ServerProcess, tmp_path: Path) -> Iterator[tuple[str, AgentProcess]]:
    with agent_on_new_cluster(server, tmp_path, "svc") as made:
        yield made


def _default_subnet(ec2: Any) -> dict[str, Any]:
    found = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    return dict(found[0])


def _network(subnet: str, *groups: str, public: str = "DISABLED") -> dict[str, Any]:
    cfg: dict[str, Any] = {"subnets": [subnet], "assignPublicIp": public}
    if groups:
        cfg["securityGroups"] = list(groups)
    return {"awsvpcConfiguration": cfg}


def _error(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as e:
        call(**kwargs)
    err = e.value.response["Error"]
    return err["Code"], err["Message"]


def test_create_service_checks_network_configuration(server: ServerProcess) -> None:
    """ECS's checks and messages; no agent needed (nothing is placed)."""
    ecs, ec2, elbv2 = server.client("ecs"), server.client("ec2"), server.client("elbv2")
    tag = uuid.uuid4().hex[:8]
    cluster = f"chk-{tag}"
    ecs.create_cluster(clusterName=cluster)  # type: ignore[attr-defined]
    subnet = _default_subnet(ec2)
    awsvpc = _web_family(ecs, f"chk-awsvpc-{tag}")
    bridge = ecs.register_task_definition(  # type: ignore[attr-defined]
        family=f"chk-bridge-{tag}",
        containerDefinitions=[
            {
                "name": "web",
                "image": "dockyard/busybox:latest",
                "memory": 32,
                "portMappings": [{"containerPort": 80}],
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    create = ecs.create_service  # type: ignore[attr-defined]
    base = {"cluster": cluster, "desiredCount": 0}

    code, msg = _error(create, serviceName="a", taskDefinition=awsvpc, **base)
    assert code == "InvalidParameterException"
    assert msg == "Network Configuration must be provided when networkMode 'awsvpc' is specified."
    code, msg = _error(
        create,
        serviceName="b",
        taskDefinition=bridge,
        networkConfiguration=_network(subnet["SubnetId"]),
        **base,
    )
    assert (code, msg) == (
        "InvalidParameterException",
        "Network Configuration is not valid for the given networkMode of this task definition.",
    )
    code, msg = _error(
        create,
        serviceName="c",
        taskDefinition=awsvpc,
        networkConfiguration=_network(subnet["SubnetId"], public="ENABLED"),
        **base,
    )
    assert msg == "Assign public IP is not supported for this launch type."
    code, msg = _error(
        create, serviceName="d", taskDefinition=awsvpc, networkConfiguration=_network("subnet-nope"), **base
    )
    assert code == "InvalidParameterException" and "subnet-nope" in msg
    code, msg = _error(
        create,
        serviceName="e",
        taskDefinition=awsvpc,
        networkConfiguration=_network(subnet["SubnetId"], "sg-nope"),
        **base,
    )
    assert code == "InvalidParameterException" and "sg-nope" in msg

    # an instance target group for an awsvpc service (and an ip one for a bridge service): refused
    lb = elbv2.create_load_balancer(Name=short(f"chk-{tag}"))["LoadBalancers"][0]  # type: ignore[attr-defined]
    groups = {}
    for kind in ("instance", "ip"):
        tg = elbv2.create_target_group(  # type: ignore[attr-defined]
            Name=short(f"chk-{kind}-{tag}"), Protocol="HTTP", Port=80, VpcId=subnet["VpcId"], TargetType=kind
        )["TargetGroups"][0]
        elbv2.create_listener(  # type: ignore[attr-defined]
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=8000 + len(groups),
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
        )
        groups[kind] = tg["TargetGroupArn"]
    code, msg = _error(
        create,
        serviceName="f",
        taskDefinition=awsvpc,
        networkConfiguration=_network(subnet["SubnetId"]),
        loadBalancers=[{"targetGroupArn": groups["instance"], "containerName": "web", "containerPort": 80}],
        **base,
    )
    assert code == "InvalidParameterException"
    assert msg == (
        f"The provided target group {groups['instance']} has target type instance, which is incompatible "
        "with the awsvpc network mode specified in the task definition."
    )
    code, msg = _error(
        create,
        serviceName="g",
        taskDefinition=bridge,
        loadBalancers=[{"targetGroupArn": groups["ip"], "containerName": "web", "containerPort": 80}],
        **base,
    )
    assert "has target type ip, which is incompatible with the bridge network mode" in msg

    # accepted: the VPC's default group filled in, shown by DescribeServices and on the deployment
    created = create(
        serviceName="ok", taskDefinition=awsvpc, networkConfiguration=_network(subnet["SubnetId"]), **base
    )["service"]
    shown = describe_service(ecs, cluster, "ok")
    cfg = shown["networkConfiguration"]["awsvpcConfiguration"]
    assert created["networkConfiguration"] == shown["networkConfiguration"]
    assert cfg["subnets"] == [subnet["SubnetId"]] and cfg["assignPublicIp"] == "DISABLED"
    default = ec2.describe_security_groups(  # type: ignore[attr-defined]
        Filters=[
            {"Name": "group-name", "Values": ["default"]},
            {"Name": "vpc-id", "Values": [subnet["VpcId"]]},
        ]
    )["SecurityGroups"][0]["GroupId"]
    assert cfg["securityGroups"] == [default]
    assert shown["deployments"][0]["networkConfiguration"] == shown["networkConfiguration"]

    # UpdateService: new groups make a new deployment; a bridge task definition drops the configuration
    group = ec2.create_security_group(GroupName=f"chk-{tag}", Description="x")["GroupId"]  # type: ignore[attr-defined]
    updated = ecs.update_service(  # type: ignore[attr-defined]
        cluster=cluster, service="ok", networkConfiguration=_network(subnet["SubnetId"], group)
    )["service"]
    assert updated["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"] == [group]
    assert len(updated["deployments"]) == 2
    # each deployment keeps its own configuration: the older one's tasks keep the default group
    assert [
        d["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"] for d in updated["deployments"]
    ] == [
        [group],
        [default],
    ]
    updated = ecs.update_service(cluster=cluster, service="ok", taskDefinition=bridge)["service"]  # type: ignore[attr-defined]
    assert "networkConfiguration" not in updated
    code, msg = _error(ecs.update_service, cluster=cluster, service="ok", taskDefinition=awsvpc)  # type: ignore[attr-defined]
    assert msg == "Network Configuration must be provided when networkMode 'awsvpc' is specified."
    elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])  # type: ignore[attr-defined]


def test_awsvpc_service_behind_alb_with_ip_targets(
    server: ServerProcess, agent: tuple[str, AgentProcess]
) -> None:
    cluster, _ = agent
    ecs, ec2, elbv2 = server.client("ecs"), server.client("ec2"), server.client("elbv2")
    subnet = _default_subnet(ec2)
    tag = uuid.uuid4().hex[:8]
    lb_group = ec2.create_security_group(GroupName=f"lb-{tag}", Description="lb")["GroupId"]  # type: ignore[attr-defined]
    task_group = ec2.create_security_group(GroupName=f"task-{tag}", Description="tasks")["GroupId"]  # type: ignore[attr-defined]
    port80 = {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80}
    ec2.authorize_security_group_ingress(  # type: ignore[attr-defined]
        GroupId=lb_group, IpPermissions=[{**port80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    )
    ec2.authorize_security_group_ingress(  # type: ignore[attr-defined]
        GroupId=task_group, IpPermissions=[{**port80, "UserIdGroupPairs": [{"GroupId": lb_group}]}]
    )
    lb = elbv2.create_load_balancer(  # type: ignore[attr-defined]
        Name=short(f"svc-{tag}"), Subnets=[subnet["SubnetId"]], SecurityGroups=[lb_group]
    )["LoadBalancers"][0]
    tg = elbv2.create_target_group(  # type: ignore[attr-defined]
        Name=short(f"svc-tg-{tag}"),
        Protocol="HTTP",
        Port=80,
        VpcId=subnet["VpcId"],
        TargetType="ip",
        HealthCheckPath="/",
        **FAST_CHECKS,
    )["TargetGroups"][0]
    elbv2.modify_target_group_attributes(  # type: ignore[attr-defined]
        TargetGroupArn=tg["TargetGroupArn"],
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "1"}],
    )
    elbv2.create_listener(  # type: ignore[attr-defined]
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
    )
    td = _web_family(ecs, f"svc-{tag}")
    ecs.create_service(  # type: ignore[attr-defined]
        cluster=cluster,
        serviceName="web",
        taskDefinition=td,
        desiredCount=2,
        networkConfiguration=_network(subnet["SubnetId"], task_group),
        loadBalancers=[{"targetGroupArn": tg["TargetGroupArn"], "containerName": "web", "containerPort": 80}],
    )
    try:
        ecs.get_waiter("services_stable").wait(cluster=cluster, services=["web"], WaiterConfig=FAST)  # type: ignore[attr-defined]
        tasks = service_tasks(ecs, cluster, "web")
        assert len(tasks) == 2 and all(t["lastStatus"] == "RUNNING" for t in tasks)
        addresses = sorted(_address(t) for t in tasks)
        assert len(set(addresses)) == 2

        # the ip target group holds each task's address and container port; both become healthy
        def targets() -> list[tuple[str, int, str]]:
            d = elbv2.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]  # type: ignore[attr-defined]
            return sorted((x["Target"]["Id"], x["Target"]["Port"], x["TargetHealth"]["State"]) for x in d)

        wait_until(
            lambda: targets() == [(a, 80, "healthy") for a in addresses],
            timeout=HEALTHY_WITHIN,
            interval=0.25,
            what="both tasks' ip targets healthy",
        )

        # through the load balancer both tasks answer; directly from the host neither does
        answered = set()

        def both_answer() -> bool:
            status, body = get(lb["DNSName"], 80, "/", timeout=5)
            assert status == 200
            answered.add(body.strip())
            return len(answered) == 2

        wait_until(both_answer, timeout=HEALTHY_WITHIN, interval=0.05, what="both tasks through the LB")
        assert not any(_get(f"http://{a}/", 1.0) for a in addresses)

        # authorize the host on the running tasks' group: reachable directly; revoke: not any more
        host_rule = {**port80, "IpRanges": [{"CidrIp": subnet["CidrBlock"].rsplit(".", 2)[0] + ".0.1/32"}]}
        ec2.authorize_security_group_ingress(GroupId=task_group, IpPermissions=[host_rule])  # type: ignore[attr-defined]
        wait_until(
            lambda: all(_get(f"http://{a}/", 0.3) for a in addresses),
            timeout=3,
            interval=0.05,
            what="authorized",
        )
        ec2.revoke_security_group_ingress(GroupId=task_group, IpPermissions=[host_rule])  # type: ignore[attr-defined]
        wait_until(
            lambda: not any(_get(f"http://{a}/", 0.3) for a in addresses),
            timeout=3,
            interval=0.05,
            what="revoked",
        )
        assert get(lb["DNSName"], 80, "/", timeout=5)[0] == 200

        # scaling in drains the task's target and releases its interface
        ecs.update_service(cluster=cluster, service="web", desiredCount=1)  # type: ignore[attr-defined]
        ecs.get_waiter("services_stable").wait(cluster=cluster, services=["web"], WaiterConfig=FAST)  # type: ignore[attr-defined]
        (kept,) = service_tasks(ecs, cluster, "web")

        wait_until(
            lambda: [t[0] for t in targets()] == [_address(kept)],
            timeout=30,
            what="the stopped task's target deregistered",
        )
        gone = next(a for a in addresses if a != _address(kept))
        wait_until(
            lambda: (
                not ec2.describe_network_interfaces(  # type: ignore[attr-defined]
                    Filters=[{"Name": "private-ip-address", "Values": [gone]}]
                )["NetworkInterfaces"]
            ),
            timeout=30,
            what="the stopped task's interface released",
        )
    finally:
        ecs.delete_service(cluster=cluster, service="web", force=True)  # type: ignore[attr-defined]
        wait_until(
            lambda: (
                not service_tasks(ecs, cluster, "web")
                and all(t["lastStatus"] == "STOPPED" for t in service_tasks(ecs, cluster, "web", "STOPPED"))
            ),
            timeout=60,
            what="service tasks stopped",
        )
        elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])  # type: ignore[attr-defined]
        elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])  # type: ignore[attr-defined]
