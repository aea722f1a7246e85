"""The service operations through boto3 against the real server, with an in-test agent (no Docker):
validation, idempotency, describe/list, deletion and the waiters, events, DeleteCluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, WaiterError

from tests.conftest import ServerProcess, wait_until
from tests.services.agent_client import TestAgent

from .conftest import FAST, describe_service, events_of


@pytest.fixture
def agent(server: ServerProcess, cluster: str) -> Any:
    a = TestAgent(server, cluster)
    a.register()
    try:
        yield a
    finally:
        a.close()


def td(ecs: Any, family: str, **container: Any) -> str:
    definition = {"name": "web", "image": "busybox", "memory": 64, **container}
    return str(
        ecs.register_task_definition(family=family, containerDefinitions=[definition])["taskDefinition"][
            "taskDefinitionArn"
        ]
    )


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def run_all(agent: TestAgent) -> list[str]:
    """Play the agent: report RUNNING for every task it is told to run; their ARNs."""
    out = agent.poll()
    arns = []
    for t in out["tasks"]:
        if t["desiredStatus"] == "RUNNING":
            agent.say(t["taskArn"], "RUNNING")
            arns.append(t["taskArn"])
        else:
            agent.say(t["taskArn"], "STOPPED")
    return arns


def test_create_describe_list_and_tags(ecs, cluster, agent, unique):  # type: ignore[no-untyped-def]
    arn = td(ecs, unique)
    created = ecs.create_service(
        cluster=cluster,
        serviceName="web",
        taskDefinition=arn,
        desiredCount=2,
        tags=[{"key": "team", "value": "a"}],
        propagateTags="SERVICE",
        enableECSManagedTags=True,
        placementStrategy=[{"type": "binpack", "field": "memory"}],
    )["service"]
    assert created["status"] == "ACTIVE" and created["desiredCount"] == 2
    assert created["serviceArn"].endswith(f":service/{cluster}/web")
    assert created["deploymentConfiguration"]["maximumPercent"] == 200
    assert created["deploymentConfiguration"]["minimumHealthyPercent"] == 100
    assert created["schedulingStrategy"] == "REPLICA" and created["launchType"] == "EC2"
    [dep] = created["deployments"]
    assert (
        dep["status"] == "PRIMARY"
        and dep["rolloutState"] == "IN_PROGRESS"
        and dep["id"].startswith("ecs-svc/")
    )

    listed = wait_until(
        lambda: len(ecs.list_tasks(cluster=cluster, serviceName="web")["taskArns"]) == 2 and 1
    )
    assert listed
    tasks = ecs.describe_tasks(
        cluster=cluster,
        tasks=ecs.list_tasks(cluster=cluster, serviceName="web")["taskArns"],
        include=["TAGS"],
    )["tasks"]
    for t in tasks:
        assert t["group"] == "service:web" and t["startedBy"] == dep["id"]
        tags = {x["key"]: x["value"] for x in t["tags"]}
        assert tags == {"team": "a", "aws:ecs:serviceName": "web", "aws:ecs:clusterName": cluster}

    run_all(agent)
    stable = wait_until(
        lambda: (
            (s := describe_service(ecs, cluster, "web"))["runningCount"] == 2
            and len(s["deployments"]) == 1
            and s
        ),
        what="runningCount 2",
    )
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=["web"], WaiterConfig=FAST)
    assert stable["pendingCount"] == 0
    shown = ecs.describe_services(cluster=cluster, services=["web", "nope"], include=["TAGS"])
    assert shown["services"][0]["tags"] == [{"key": "team", "value": "a"}]
    assert shown["failures"][0]["reason"] == "MISSING" and shown["failures"][0]["arn"].endswith("/nope")
    msgs = wait_until(
        lambda: (m := events_of(ecs, cluster, "web"))[0] == "(service web) has reached a steady state." and m,
        what="the steady-state event (after the settle time)",
    )
    assert msgs[1].startswith("(service web) (deployment ecs-svc/") and msgs[1].endswith(
        "deployment completed."
    )
    assert msgs[-1].startswith("(service web) has started 2 tasks: (task ")

    by_arn = ecs.describe_services(cluster=cluster, services=[created["serviceArn"]])["services"]
    assert by_arn[0]["serviceName"] == "web"
    count = ecs.describe_clusters(clusters=[cluster])["clusters"][0]["activeServicesCount"]
    assert count == 1


def test_list_services_filters_and_pages(ecs, cluster, unique):  # type: ignore[no-untyped-def]
    arn = td(ecs, unique)
    for i in range(5):
        ecs.create_service(cluster=cluster, serviceName=f"s{i}", taskDefinition=arn, desiredCount=0)
    ecs.create_service(cluster=cluster, serviceName="d0", taskDefinition=arn, schedulingStrategy="DAEMON")
    seen: list[str] = []
    token = None
    while True:
        page = ecs.list_services(cluster=cluster, maxResults=2, **({"nextToken": token} if token else {}))
        assert len(page["serviceArns"]) <= 2
        seen += page["serviceArns"]
        token = page.get("nextToken")
        if not token:
            break
    assert sorted(a.rsplit("/", 1)[-1] for a in seen) == ["d0", "s0", "s1", "s2", "s3", "s4"]
    daemons = ecs.list_services(cluster=cluster, schedulingStrategy="DAEMON")["serviceArns"]
    assert [a.rsplit("/", 1)[-1] for a in daemons] == ["d0"]
    assert len(ecs.list_services(cluster=cluster, launchType="EC2")["serviceArns"]) == 6
    assert ecs.list_services(cluster=cluster, launchType="FARGATE")["serviceArns"] == []
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=cluster)
    assert code(e) == "ClusterContainsServicesException"
    for name in ("d0", "s0", "s1", "s2", "s3", "s4"):
        ecs.delete_service(cluster=cluster, service=name)
    wait_until(
        lambda: all(
            s["status"] == "INACTIVE"
            for s in ecs.describe_services(cluster=cluster, services=["d0", "s0"])["services"]
        ),
        what="INACTIVE services",
    )
    wait_until(lambda: ecs.describe_clusters(clusters=[cluster])["clusters"][0]["activeServicesCount"] == 0)
    for name in ("s1", "s2", "s3", "s4"):
        wait_until(lambda n=name: describe_service(ecs, cluster, n)["status"] == "INACTIVE")
    assert (
        ecs.delete_cluster(cluster=cluster)["cluster"]["status"] == "INACTIVE"
    )  # INACTIVE services do not count


def test_validation_errors(ecs, cluster, unique):  # type: ignore[no-untyped-def]
    arn = td(ecs, unique)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"serviceName": "x"}, "InvalidParameterException"),  # REPLICA needs desiredCount
        ({"serviceName": "bad name", "desiredCount": 1}, "InvalidParameterException"),
        ({"serviceName": "x", "desiredCount": 1, "launchType": "FARGATE"}, "UnsupportedFeatureException"),
        (
            {
                "serviceName": "x",
                "desiredCount": 1,
                "loadBalancers": [{"targetGroupArn": "arn:x", "containerName": "web", "containerPort": 80}],
            },
            "InvalidParameterException",  # no such target group (test_services_lb.py has the rest)
        ),
        (
            {"serviceName": "x", "desiredCount": 1, "serviceRegistries": [{"registryArn": "arn:x"}]},
            "UnsupportedFeatureException",
        ),
        (
            {"serviceName": "x", "desiredCount": 1, "deploymentConfiguration": {"maximumPercent": 50}},
            "InvalidParameterException",
        ),
        (
            {
                "serviceName": "x",
                "desiredCount": 1,
                "deploymentConfiguration": {"minimumHealthyPercent": 150},
            },
            "InvalidParameterException",
        ),
        (
            {"serviceName": "x", "schedulingStrategy": "DAEMON", "placementStrategy": [{"type": "random"}]},
            "InvalidParameterException",
        ),
        (
            {"serviceName": "x", "desiredCount": 1, "placementConstraints": [{"type": "memberOf"}]},
            "InvalidParameterException",
        ),
    ]
    for kw, expected in cases:
        with pytest.raises(ClientError) as e:
            ecs.create_service(cluster=cluster, taskDefinition=arn, **kw)
        assert code(e) == expected, kw
    with pytest.raises(ClientError) as e:
        ecs.create_service(cluster=cluster, serviceName="x", taskDefinition=unique + "-none", desiredCount=1)
    assert code(e) == "ClientException"
    with pytest.raises(ClientError) as e:
        ecs.create_service(cluster=unique + "-nope", serviceName="x", taskDefinition=arn, desiredCount=1)
    assert code(e) == "ClusterNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.update_service(cluster=cluster, service="missing", desiredCount=1)
    assert code(e) == "ServiceNotFoundException"


def test_client_token_idempotency(ecs, cluster, unique):  # type: ignore[no-untyped-def]
    arn = td(ecs, unique)
    kw = {
        "cluster": cluster,
        "serviceName": "web",
        "taskDefinition": arn,
        "desiredCount": 0,
        "clientToken": "tok-1",
    }
    first = ecs.create_service(**kw)["service"]
    again = ecs.create_service(**kw)["service"]
    assert again["serviceArn"] == first["serviceArn"] and again["createdAt"] == first["createdAt"]
    with pytest.raises(ClientError) as e:
        ecs.create_service(**{**kw, "desiredCount": 1})
    assert code(e) == "InvalidParameterException" and "not idempotent" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        ecs.create_service(**{**kw, "clientToken": "tok-2"})
    assert code(e) == "InvalidParameterException"


def test_update_makes_deployments_and_delete_drains_to_inactive(ecs, cluster, agent, unique):  # type: ignore[no-untyped-def]
    v1, v2 = td(ecs, unique), td(ecs, unique, memory=32)
    ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=v1, desiredCount=1)
    wait_until(lambda: run_all(agent), what="a task to run")
    wait_until(
        lambda: describe_service(ecs, cluster, "web")["deployments"][0]["rolloutState"] == "COMPLETED",
        what="the first deployment to complete",
    )
    same = ecs.update_service(cluster=cluster, service="web", taskDefinition=v1)["service"]
    assert len(same["deployments"]) == 1  # the same revision makes no deployment
    updated = ecs.update_service(cluster=cluster, service="web", taskDefinition=v2)["service"]
    assert [d["status"] for d in updated["deployments"]] == ["PRIMARY", "ACTIVE"]
    assert updated["taskDefinition"] == v2 and updated["deployments"][1]["rolloutState"] == "COMPLETED"
    forced = ecs.update_service(cluster=cluster, service="web", forceNewDeployment=True)["service"]
    assert len(forced["deployments"]) == 3 and forced["taskDefinition"] == v2

    with pytest.raises(ClientError) as e:
        ecs.delete_service(cluster=cluster, service="web")
    assert code(e) == "InvalidParameterException"  # scaled above 0
    gone = ecs.delete_service(cluster=cluster, service="web", force=True)["service"]
    assert gone["status"] == "DRAINING" and gone["desiredCount"] == 0
    with pytest.raises(ClientError) as e:
        ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=v1, desiredCount=1)
    assert code(e) == "InvalidParameterException"  # still draining
    with pytest.raises(WaiterError):
        ecs.get_waiter("services_stable").wait(
            cluster=cluster, services=["web"], WaiterConfig={"Delay": 1, "MaxAttempts": 1}
        )

    def stop_everything() -> bool:
        out = agent.poll()
        for t in out["tasks"]:
            agent.say(t["taskArn"], "STOPPED" if t["desiredStatus"] == "STOPPED" else "RUNNING")
        return describe_service(ecs, cluster, "web")["status"] == "INACTIVE"

    wait_until(stop_everything, what="INACTIVE")
    ecs.get_waiter("services_inactive").wait(cluster=cluster, services=["web"], WaiterConfig=FAST)
    with pytest.raises(ClientError) as e:
        ecs.update_service(cluster=cluster, service="web", desiredCount=1)
    assert code(e) == "ServiceNotActiveException"
    assert ecs.list_services(cluster=cluster)["serviceArns"] == []
    again = ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=v1, desiredCount=0)[
        "service"
    ]
    assert again["status"] == "ACTIVE"  # the name of an INACTIVE service can be used again


def test_a_users_task_in_the_services_group_is_not_the_services(ecs, cluster, agent, unique):  # type: ignore[no-untyped-def]
    """Membership is who started the task, not its group: a RunTask naming group "service:web" neither
    counts toward service web nor is scaled in by it, and ListTasks(serviceName) leaves it out."""
    arn = td(ecs, unique)
    ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=arn, desiredCount=1)
    [own] = wait_until(lambda: run_all(agent), what="the service's task to run")
    wait_until(
        lambda: describe_service(ecs, cluster, "web")["deployments"][0]["rolloutState"] == "COMPLETED",
        what="the deployment to complete",
    )
    [stray] = ecs.run_task(cluster=cluster, taskDefinition=arn, group="service:web", startedBy="alice")[
        "tasks"
    ]
    assert stray["group"] == "service:web"
    agent.say(stray["taskArn"], "RUNNING")

    def settled() -> bool:
        service = describe_service(ecs, cluster, "web")
        return bool(service["runningCount"] == 1 and service["pendingCount"] == 0)

    wait_until(settled, what="runningCount to settle at 1")
    listed = ecs.list_tasks(cluster=cluster, serviceName="web")["taskArns"]
    assert listed == [own]
    described = ecs.describe_tasks(cluster=cluster, tasks=[stray["taskArn"], own])["tasks"]
    assert {t["taskArn"]: t["desiredStatus"] for t in described} == {
        stray["taskArn"]: "RUNNING",
        own: "RUNNING",
    }
    ecs.update_service(cluster=cluster, service="web", desiredCount=0)
    wait_until(
        lambda: ecs.describe_tasks(cluster=cluster, tasks=[own])["tasks"][0]["desiredStatus"] == "STOPPED",
        what="scale-in to stop the service's own task",
    )
    assert (
        ecs.describe_tasks(cluster=cluster, tasks=[stray["taskArn"]])["tasks"][0]["desiredStatus"]
        == "RUNNING"
    )


def test_no_room_is_an_event_with_the_reason(ecs, cluster, server, unique):  # type: ignore[no-untyped-def]
    arn = td(ecs, unique, memory=4096)
    ecs.create_service(cluster=cluster, serviceName="big", taskDefinition=arn, desiredCount=1)
    wait_until(
        lambda: any(
            "no container instance met all of its requirements" in m for m in events_of(ecs, cluster, "big")
        ),
        what="unable-to-place event (no instances)",
    )
    assert "No Container Instances were found" in events_of(ecs, cluster, "big")[0]
    small = TestAgent(server, cluster, memory=512)
    small.register()
    try:
        wait_until(
            lambda: "has insufficient memory available" in events_of(ecs, cluster, "big")[0],
            what="unable-to-place event naming memory",
        )
        msgs = events_of(ecs, cluster, "big")
        assert msgs[0].startswith(
            "(service big) was unable to place a task because no container instance met all"
        )
        assert len([m for m in msgs if "insufficient memory" in m]) == 1  # not repeated
    finally:
        small.close()


def test_aws_cli_service_walkthrough(server, cluster, unique, tmp_path: Path):  # type: ignore[no-untyped-def]
    aws = str(Path(sys.executable).with_name("aws"))

    def cli(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [aws, "--endpoint-url", server.endpoint, "--output", "json", "ecs", *args],
            env=server.cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return dict(json.loads(done.stdout)) if done.stdout.strip() else {}

    cli(
        "register-task-definition",
        "--family",
        unique,
        "--container-definitions",
        '[{"name":"web","image":"busybox","memory":64}]',
    )
    out = cli(
        "create-service",
        "--cluster",
        cluster,
        "--service-name",
        "web",
        "--task-definition",
        unique,
        "--desired-count",
        "0",
        "--deployment-configuration",
        "maximumPercent=200,minimumHealthyPercent=50,deploymentCircuitBreaker={enable=true,rollback=true}",
    )
    assert out["service"]["deploymentConfiguration"]["deploymentCircuitBreaker"] == {
        "enable": True,
        "rollback": True,
    }
    cli("wait", "services-stable", "--cluster", cluster, "--services", "web")
    cli("delete-service", "--cluster", cluster, "--service", "web")
    wait_until(lambda: describe_service(server.client("ecs"), cluster, "web")["status"] == "INACTIVE")
    cli("wait", "services-inactive", "--cluster", cluster, "--services", "web")
    assert (
        cli("describe-services", "--cluster", cluster, "--services", "web")["services"][0]["status"]
        == "INACTIVE"
    )
