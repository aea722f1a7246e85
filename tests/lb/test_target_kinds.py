"""Other kinds of load balancers and targets: a network load balancer (TCP), and ``instance``
targets that are busybox httpd containers published on a container instance's address."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from tests.conftest import free_port, wait_until
from tests.lb.backends import get, start_backend
from tests.lb.conftest import FAST_CHECKS, HEALTHY_WITHIN, short

IMAGE = "dockyard/busybox:latest"


def _docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, timeout=30)
    return probe.returncode == 0


def healthy(elbv2, tg_arn: str, count: int) -> bool:  # type: ignore[no-untyped-def]
    out = elbv2.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
    return len(out) == count and all(d["TargetHealth"]["State"] == "healthy" for d in out)


def test_network_load_balancer_carries_tcp(elbv2, backends, unique):
    lb = elbv2.create_load_balancer(Name=short(unique), Type="network")["LoadBalancers"][0]
    tg = elbv2.create_target_group(
        Name=short("t-" + unique),
        Protocol="TCP",
        Port=80,
        VpcId="vpc-1",
        TargetType="ip",
        HealthCheckIntervalSeconds=5,
        HealthCheckTimeoutSeconds=2,
        HealthyThresholdCount=2,
        UnhealthyThresholdCount=2,
    )["TargetGroups"][0]
    try:
        assert tg["HealthCheckProtocol"] == "TCP" and "HealthCheckPath" not in tg
        elbv2.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="TCP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
        )
        a, b = start_backend(f"{unique}-a"), start_backend(f"{unique}-b")
        backends += [a, b]
        elbv2.register_targets(
            TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": x.host, "Port": x.port} for x in (a, b)]
        )
        wait_until(lambda: healthy(elbv2, tg["TargetGroupArn"], 2), timeout=HEALTHY_WITHIN, what="healthy")
        seen = {get(lb["DNSName"], 80)[1] for _ in range(20)}
        assert seen == {a.id, b.id}
    finally:
        elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
        elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])


@pytest.mark.skipif(
    not _docker_ready(), reason="needs Docker and the local busybox image (scripts/docker.sh)"
)
def test_busybox_containers_as_instance_targets(lb_server, elbv2, unique):
    ecs = lb_server.client("ecs")
    cluster = short(unique)
    ecs.create_cluster(clusterName=cluster)
    instance_id = "i-0" + uuid.uuid4().hex[:16]
    identity = json.dumps({"instanceId": instance_id, "privateIp": "127.0.0.1", "region": lb_server.region})
    instance_arn = ecs.register_container_instance(
        cluster=cluster,
        instanceIdentityDocument=identity,
        totalResources=[{"name": "CPU", "type": "INTEGER", "integerValue": 1024}],
    )["containerInstance"]["containerInstanceArn"]
    lb = elbv2.create_load_balancer(Name=short(unique))["LoadBalancers"][0]
    tg = elbv2.create_target_group(
        Name=short("i-" + unique),
        Protocol="HTTP",
        Port=80,
        VpcId="vpc-1",
        TargetType="instance",
        **FAST_CHECKS,
    )["TargetGroups"][0]
    containers: list[str] = []
    try:
        elbv2.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
        )
        ports = []
        for i in range(2):
            port = free_port()
            name = f"dockyard-lbtest-{uuid.uuid4().hex[:12]}"
            script = f"mkdir -p /srv && echo task-{i} > /srv/index.html && exec httpd -f -p 80 -h /srv"
            subprocess.run(
                [
                    "docker",
                    "run",
                    "-d",
                    "--rm",
                    "--name",
                    name,
                    "-p",
                    f"127.0.0.1:{port}:80",
                    IMAGE,
                    "sh",
                    "-c",
                    script,
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            containers.append(name)
            ports.append(port)
        # instance targets: the container instance's ec2InstanceId and each task's host port
        elbv2.register_targets(
            TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": instance_id, "Port": p} for p in ports]
        )
        wait_until(
            lambda: healthy(elbv2, tg["TargetGroupArn"], 2), timeout=HEALTHY_WITHIN, what="containers healthy"
        )
        seen = {get(lb["DNSName"], 80)[1].strip() for _ in range(20)}
        assert seen == {"task-0", "task-1"}

        # a container that dies behind the load balancer's back: its requests are retried elsewhere
        subprocess.run(["docker", "kill", containers[0]], check=True, capture_output=True, timeout=30)
        results = [get(lb["DNSName"], 80) for _ in range(20)]
        assert all(status == 200 and body.strip() == "task-1" for status, body in results), results
    finally:
        for name in containers:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
        elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
        ecs.deregister_container_instance(cluster=cluster, containerInstance=instance_arn, force=True)
        ecs.delete_cluster(cluster=cluster)
