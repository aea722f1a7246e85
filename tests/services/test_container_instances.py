"""Container instances through real signed HTTP: registration, describe/list, drain, deregister."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.services.agent_client import ECS_PREFIX, AgentError
from tests.services.conftest import register_td, resources


def code(e: ClientError) -> str:
    return str(e.response["Error"]["Code"])


def test_registration_shows_resources_attributes_and_issues_agent_credentials(ecs, cluster, agents):
    agent = agents(cluster, cpu=2048, memory=3000, ports=["22", "2375"], attributes={"team": "blue"})
    [ci] = ecs.describe_container_instances(cluster=cluster, containerInstances=[agent.instance_arn])[
        "containerInstances"
    ]
    assert ci["containerInstanceArn"].startswith(
        f"arn:aws:ecs:us-east-1:000000000000:container-instance/{cluster}/"
    )
    assert ci["ec2InstanceId"] == "i-0123456789abcdef0"
    assert ci["status"] == "ACTIVE" and ci["agentConnected"] is True
    assert resources(ci, "registeredResources") == {
        "CPU": 2048,
        "MEMORY": 3000,
        "PORTS": [22, 2375],
        "PORTS_UDP": [],
    }
    assert resources(ci) == resources(ci, "registeredResources")
    assert ci["runningTasksCount"] == 0 and ci["pendingTasksCount"] == 0
    attrs = {a["name"]: a.get("value") for a in ci["attributes"]}
    assert attrs["team"] == "blue" and attrs["ecs.availability-zone"] == "local-1a"
    assert ci["versionInfo"]["agentVersion"] == "0.1.0"
    # the credentials work for the agent's own operations
    assert agent.poll()["instanceStatus"] == "ACTIVE"
    [c] = ecs.describe_clusters(clusters=[cluster])["clusters"]
    assert c["registeredContainerInstancesCount"] == 1


def test_agent_credentials_are_refused_for_user_operations(cluster, agents):
    agent = agents(cluster)
    with pytest.raises(ClientError) as e:
        agent.ecs().list_clusters()
    assert code(e.value) == "AccessDeniedException"
    with pytest.raises(AgentError) as e2:
        agent.call(ECS_PREFIX + "RegisterContainerInstance", agent.registration_body())
    assert e2.value.code == "AccessDeniedException"


def test_re_registration_keeps_the_instance(ecs, cluster, agents):
    agent = agents(cluster, memory=1000)
    first = agent.instance_arn
    again = agent.register(
        containerInstanceArn=first, totalResources=[{"name": "MEMORY", "integerValue": 2000}]
    )
    assert again["containerInstance"]["containerInstanceArn"] == first
    assert resources(again["containerInstance"])["MEMORY"] == 2000
    assert agent.poll()["instanceStatus"] == "ACTIVE"
    assert len(ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]) == 1


def test_describe_missing_and_list_pages_and_filters(ecs, cluster, agents):
    made = [agents(cluster).instance_arn for _ in range(5)]
    out = ecs.describe_container_instances(cluster=cluster, containerInstances=[made[0], "nope"])
    assert [ci["containerInstanceArn"] for ci in out["containerInstances"]] == [made[0]]
    assert out["failures"] == [
        {"arn": f"arn:aws:ecs:us-east-1:000000000000:container-instance/{cluster}/nope", "reason": "MISSING"}
    ]
    seen: list[str] = []
    for page in ecs.get_paginator("list_container_instances").paginate(
        cluster=cluster, PaginationConfig={"PageSize": 2}
    ):
        assert len(page["containerInstanceArns"]) <= 2
        seen += page["containerInstanceArns"]
    assert sorted(seen) == sorted(made)
    ecs.update_container_instances_state(cluster=cluster, containerInstances=made[:2], status="DRAINING")
    assert sorted(
        ecs.list_container_instances(cluster=cluster, status="DRAINING")["containerInstanceArns"]
    ) == sorted(made[:2])
    assert len(ecs.list_container_instances(cluster=cluster, status="ACTIVE")["containerInstanceArns"]) == 3
    linux = ecs.list_container_instances(cluster=cluster, filter="attribute:ecs.os-type == linux")
    assert sorted(linux["containerInstanceArns"]) == sorted(made)  # the cluster query language


def test_draining_instances_get_no_new_tasks(ecs, cluster, agents, unique):
    agent = agents(cluster)
    register_td(ecs, unique)
    out = ecs.update_container_instances_state(
        cluster=cluster, containerInstances=[agent.instance_arn, "missing"], status="DRAINING"
    )
    assert out["containerInstances"][0]["status"] == "DRAINING"
    assert [f["reason"] for f in out["failures"]] == ["MISSING"]
    assert agent.poll()["instanceStatus"] == "DRAINING"
    run = ecs.run_task(cluster=cluster, taskDefinition=unique)
    assert run["tasks"] == [] and [f["reason"] for f in run["failures"]] == ["INACTIVE"]
    ecs.update_container_instances_state(
        cluster=cluster, containerInstances=[agent.instance_arn], status="ACTIVE"
    )
    assert len(ecs.run_task(cluster=cluster, taskDefinition=unique)["tasks"]) == 1
    with pytest.raises(ClientError) as e:
        ecs.update_container_instances_state(
            cluster=cluster, containerInstances=[agent.instance_arn], status="DEREGISTERING"
        )
    assert code(e.value) == "InvalidParameterException"


def test_deregister_needs_force_while_tasks_run(ecs, cluster, agents, unique):
    agent = agents(cluster)
    register_td(ecs, unique)
    [task] = ecs.run_task(cluster=cluster, taskDefinition=unique)["tasks"]
    with pytest.raises(ClientError) as e:
        ecs.deregister_container_instance(cluster=cluster, containerInstance=agent.instance_arn)
    assert code(e.value) == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=cluster)
    assert code(e.value) == "ClusterContainsContainerInstancesException"
    gone = ecs.deregister_container_instance(
        cluster=cluster, containerInstance=agent.instance_arn, force=True
    )
    assert gone["containerInstance"]["status"] == "INACTIVE"
    assert gone["containerInstance"]["agentConnected"] is False
    [stopped] = ecs.describe_tasks(cluster=cluster, tasks=[task["taskArn"]])["tasks"]
    assert stopped["lastStatus"] == "STOPPED" and stopped["desiredStatus"] == "STOPPED"
    assert "deregistered" in stopped["stoppedReason"]
    polled = agent.poll()
    assert polled["instanceStatus"] == "INACTIVE" and polled["tasks"] == []
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == []
    [c] = ecs.describe_clusters(clusters=[cluster])["clusters"]
    assert c["registeredContainerInstancesCount"] == 0 and c["runningTasksCount"] == 0
    assert ecs.delete_cluster(cluster=cluster)["cluster"]["status"] == "INACTIVE"


def test_deregister_without_tasks_and_unknown_instances(ecs, cluster, agents):
    agent = agents(cluster)
    out = ecs.deregister_container_instance(
        cluster=cluster, containerInstance=agent.instance_arn.rsplit("/", 1)[1]
    )
    assert out["containerInstance"]["status"] == "INACTIVE"
    # a deregistered instance's agent registers anew with its old ARN: a new instance
    again = agent.register(containerInstanceArn=agent.instance_arn)
    assert (
        again["containerInstance"]["containerInstanceArn"] != out["containerInstance"]["containerInstanceArn"]
    )
    with pytest.raises(ClientError) as e:
        ecs.deregister_container_instance(cluster=cluster, containerInstance="nope")
    assert code(e.value) == "InvalidParameterException"
