"""Tasks through real signed HTTP, with the test playing the agent: placement, failures, stop flow."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.conftest import wait_until
from tests.services.agent_client import own_server_with_agent
from tests.services.conftest import register_td, resources


def code(e: ClientError) -> str:
    return str(e.response["Error"]["Code"])


def remaining(ecs, cluster, instance_arn):  # type: ignore[no-untyped-def]
    [ci] = ecs.describe_container_instances(cluster=cluster, containerInstances=[instance_arn])[
        "containerInstances"
    ]
    return resources(ci)


def test_run_task_places_and_reserves(ecs, cluster, agents, unique):
    agent = agents(cluster, cpu=1024, memory=1000)
    td = register_td(ecs, unique, cpu=100, memory=300, portMappings=[{"containerPort": 80, "hostPort": 8080}])
    out = ecs.run_task(
        cluster=cluster, taskDefinition=unique, startedBy="me", tags=[{"key": "k", "value": "v"}]
    )
    [task] = out["tasks"]
    assert out["failures"] == []
    assert task["lastStatus"] == "PROVISIONING" and task["desiredStatus"] == "RUNNING"
    assert task["taskDefinitionArn"] == td and task["containerInstanceArn"] == agent.instance_arn
    assert task["group"] == f"family:{unique}" and task["startedBy"] == "me" and task["launchType"] == "EC2"
    assert task["tags"] == [{"key": "k", "value": "v"}]
    assert task["containers"][0]["name"] == "web" and task["containers"][0]["lastStatus"] == "PENDING"
    left = remaining(ecs, cluster, agent.instance_arn)
    assert (left["CPU"], left["MEMORY"]) == (924, 700) and 8080 in left["PORTS"]
    [ci] = ecs.describe_container_instances(cluster=cluster, containerInstances=[agent.instance_arn])[
        "containerInstances"
    ]
    assert ci["pendingTasksCount"] == 1
    # the port is taken: the next one fails with RESOURCE:PORTS, naming the instance
    again = ecs.run_task(cluster=cluster, taskDefinition=unique)
    assert again["tasks"] == []
    assert again["failures"] == [
        {
            "arn": agent.instance_arn,
            "reason": "RESOURCE:PORTS",
            "detail": "TCP host ports already in use: 8080",
        }
    ]


@pytest.mark.parametrize(
    ("container", "reason"),
    [({"memory": 5000}, "RESOURCE:MEMORY"), ({"cpu": 4096, "memory": 64}, "RESOURCE:CPU")],
)
def test_run_task_failures_name_the_missing_resource(ecs, cluster, agents, unique, container, reason):
    agent = agents(cluster, cpu=1024, memory=1000)
    register_td(ecs, unique, **container)
    out = ecs.run_task(cluster=cluster, taskDefinition=unique, count=2)
    assert out["tasks"] == []
    assert [(f["arn"], f["reason"]) for f in out["failures"]] == [(agent.instance_arn, reason)]


def test_count_fills_then_fails_and_overrides_change_the_reservation(ecs, cluster, agents, unique):
    agent = agents(cluster, cpu=1024, memory=1000)
    register_td(ecs, unique, memory=300)
    out = ecs.run_task(cluster=cluster, taskDefinition=unique, count=4)
    assert len(out["tasks"]) == 3 and out["failures"][0]["reason"] == "RESOURCE:MEMORY"
    assert remaining(ecs, cluster, agent.instance_arn)["MEMORY"] == 100
    other = agents(cluster, cpu=1024, memory=1000)
    override = {
        "containerOverrides": [{"name": "web", "memory": 200, "command": ["sleep", "1"]}],
        "cpu": "512",
        "taskRoleArn": "arn:aws:iam::000000000000:role/r",
    }
    [task] = ecs.run_task(cluster=cluster, taskDefinition=unique, overrides=override)["tasks"]
    assert task["containerInstanceArn"] == other.instance_arn
    assert task["cpu"] == "512" and task["containers"][0]["memory"] == "200"
    assert task["overrides"]["taskRoleArn"] == "arn:aws:iam::000000000000:role/r"
    left = remaining(ecs, cluster, other.instance_arn)
    assert (left["CPU"], left["MEMORY"]) == (512, 800)
    with pytest.raises(ClientError) as e:
        ecs.run_task(
            cluster=cluster, taskDefinition=unique, overrides={"containerOverrides": [{"name": "zzz"}]}
        )
    assert code(e.value) == "InvalidParameterException"


def test_run_task_refusals(ecs, cluster, unique, agents):
    register_td(ecs, unique)
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=cluster, taskDefinition=unique)
    assert code(e.value) == "InvalidParameterException" and "No Container Instances" in str(e.value)
    agents(cluster)
    for kwargs, expected in [
        ({"count": 11}, "InvalidParameterException"),
        ({"launchType": "FARGATE"}, "UnsupportedFeatureException"),
        ({"taskDefinition": "nope-" + unique}, "ClientException"),
        ({"cluster": "nope-" + unique}, "ClusterNotFoundException"),
    ]:
        with pytest.raises(ClientError) as e:
            ecs.run_task(**{"cluster": cluster, "taskDefinition": unique, **kwargs})
        assert code(e.value) == expected, kwargs
    ecs.deregister_task_definition(taskDefinition=f"{unique}:1")
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=cluster, taskDefinition=f"{unique}:1")
    assert code(e.value) == "ClientException" and "INACTIVE" in str(e.value)


def test_concurrent_run_task_never_over_commits(dockyard_server, ecs, cluster, agents, unique):
    for _ in range(3):
        agents(cluster, cpu=4096, memory=1000)
    register_td(ecs, unique, memory=250)  # room for 4 per instance: 12
    clients = [dockyard_server.client("ecs") for _ in range(4)]

    def run(i: int) -> tuple[int, list[str]]:
        out = clients[i % 4].run_task(cluster=cluster, taskDefinition=unique, count=2)
        return len(out["tasks"]), [f["reason"] for f in out["failures"]]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(run, range(16)))
    assert sum(n for n, _ in results) == 12
    assert {r for _, reasons in results for r in reasons} <= {"RESOURCE:MEMORY"}
    arns = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    for ci in ecs.describe_container_instances(cluster=cluster, containerInstances=arns)[
        "containerInstances"
    ]:
        assert resources(ci)["MEMORY"] >= 0
        assert ci["pendingTasksCount"] == 4


def test_a_static_host_port_is_never_given_twice(dockyard_server, ecs, cluster, agents, unique):
    for _ in range(2):
        agents(cluster)
    register_td(ecs, unique, memory=16, portMappings=[{"containerPort": 80, "hostPort": 8081}])
    clients = [dockyard_server.client("ecs") for _ in range(4)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        placed = list(
            pool.map(lambda i: clients[i % 4].run_task(cluster=cluster, taskDefinition=unique), range(16))
        )
    instances = [t["containerInstanceArn"] for out in placed for t in out["tasks"]]
    assert len(instances) == 2 and len(set(instances)) == 2


def test_client_token_makes_its_tasks_once(dockyard_server, ecs, cluster, agents, unique):
    agents(cluster)
    register_td(ecs, unique, memory=16)
    first = ecs.run_task(cluster=cluster, taskDefinition=unique, count=2, clientToken=unique)
    again = ecs.run_task(cluster=cluster, taskDefinition=unique, count=2, clientToken=unique)
    assert sorted(t["taskArn"] for t in again["tasks"]) == sorted(t["taskArn"] for t in first["tasks"])
    clients = [dockyard_server.client("ecs") for _ in range(4)]
    token = unique + "-race"
    with ThreadPoolExecutor(max_workers=8) as pool:
        outs = list(
            pool.map(
                lambda i: clients[i % 4].run_task(cluster=cluster, taskDefinition=unique, clientToken=token),
                range(8),
            )
        )
    assert len({t["taskArn"] for out in outs for t in out["tasks"]}) == 1
    assert len(ecs.list_tasks(cluster=cluster)["taskArns"]) == 3


def test_stop_flows_through_poll_and_report_and_releases_resources(ecs, cluster, agents, unique):
    agent = agents(cluster, memory=1000)
    register_td(ecs, unique, memory=400, portMappings=[{"containerPort": 80, "hostPort": 8082}])
    [task] = ecs.run_task(cluster=cluster, taskDefinition=unique)["tasks"]
    arn = task["taskArn"]
    answer = agent.poll()
    [wire] = answer["tasks"]
    assert wire["taskArn"] == arn and wire["desiredStatus"] == "RUNNING" and wire["reportedSeq"] == 0
    definition = answer["taskDefinitions"][wire["taskDefinitionArn"]]
    assert definition["family"] == unique and wire["containers"][0]["name"] == "web"
    agent.say(arn, "PENDING", pullStartedAt=1.0, pullStoppedAt=2.0)
    binding = {"bindIP": "127.0.0.1", "containerPort": 80, "hostPort": 8082, "protocol": "tcp"}
    agent.say(
        arn,
        "RUNNING",
        startedAt=3.0,
        containers=[{"name": "web", "status": "RUNNING", "runtimeId": "abc", "networkBindings": [binding]}],
    )
    ecs.get_waiter("tasks_running").wait(
        cluster=cluster, tasks=[arn], WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    [running] = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"]
    assert (
        running["startedAt"].timestamp() == 3.0
        and running["containers"][0]["networkBindings"][0]["hostPort"] == 8082
    )
    assert ecs.describe_clusters(clusters=[cluster])["clusters"][0]["runningTasksCount"] == 1

    stopping = ecs.stop_task(cluster=cluster, task=arn, reason="enough")["task"]
    assert stopping["desiredStatus"] == "STOPPED" and stopping["lastStatus"] == "STOPPING"
    assert stopping["stopCode"] == "UserInitiated" and stopping["stoppedReason"] == "enough"
    [wire] = agent.poll()["tasks"]
    assert wire["desiredStatus"] == "STOPPED" and wire["reportedSeq"] == 2
    assert remaining(ecs, cluster, agent.instance_arn)["MEMORY"] == 600  # held until STOPPED
    agent.say(
        arn,
        "STOPPED",
        executionStoppedAt=9.0,
        containers=[{"name": "web", "status": "STOPPED", "exitCode": 143, "reason": "SIGTERM"}],
    )
    ecs.get_waiter("tasks_stopped").wait(
        cluster=cluster, tasks=[arn], WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    [stopped] = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"]
    assert stopped["stoppedReason"] == "enough" and stopped["containers"][0]["exitCode"] == 143
    for field in ("stoppingAt", "executionStoppedAt", "stoppedAt", "pullStartedAt", "pullStoppedAt"):
        assert field in stopped, field
    left = remaining(ecs, cluster, agent.instance_arn)
    assert left["MEMORY"] == 1000 and 8082 not in left["PORTS"]
    assert agent.poll(known=0)["tasks"] == []  # gone from the desired set
    assert ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"] == [arn]
    # stopping it again answers with the task as it is
    assert ecs.stop_task(cluster=cluster, task=arn)["task"]["lastStatus"] == "STOPPED"
    with pytest.raises(ClientError) as e:
        ecs.stop_task(cluster=cluster, task="nope")
    assert code(e.value) == "InvalidParameterException"


def test_a_task_that_exits_by_itself(ecs, cluster, agents, unique):
    agent = agents(cluster)
    register_td(ecs, unique)
    [task] = ecs.run_task(cluster=cluster, taskDefinition=unique)["tasks"]
    arn = task["taskArn"]
    agent.say(arn, "RUNNING")
    agent.say(arn, "STOPPED", containers=[{"name": "web", "status": "STOPPED", "exitCode": 3}])
    [t] = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"]
    assert (t["lastStatus"], t["desiredStatus"], t["stopCode"]) == (
        "STOPPED",
        "STOPPED",
        "EssentialContainerExited",
    )
    assert t["stoppedReason"] == "Essential container in task exited" and t["containers"][0]["exitCode"] == 3
    with pytest.raises(Exception, match="Waiter TasksRunning failed"):
        ecs.get_waiter("tasks_running").wait(
            cluster=cluster, tasks=[arn], WaiterConfig={"Delay": 0.1, "MaxAttempts": 3}
        )


def test_start_task_on_named_instances(ecs, cluster, agents, unique):
    a, b = agents(cluster), agents(cluster)
    register_td(ecs, unique, memory=64)
    out = ecs.start_task(
        cluster=cluster,
        taskDefinition=unique,
        containerInstances=[b.instance_arn, a.instance_arn.rsplit("/", 1)[1], "nope"],
    )
    assert sorted(t["containerInstanceArn"] for t in out["tasks"]) == sorted([a.instance_arn, b.instance_arn])
    assert [f["reason"] for f in out["failures"]] == ["MISSING"]
    ecs.deregister_container_instance(cluster=cluster, containerInstance=a.instance_arn, force=True)
    out = ecs.start_task(cluster=cluster, taskDefinition=unique, containerInstances=[a.instance_arn])
    assert out["tasks"] == [] and out["failures"][0]["reason"] == "INACTIVE"


def test_describe_and_list_tasks_filters_and_pages(ecs, cluster, agents, unique):
    a, b = agents(cluster), agents(cluster)
    register_td(ecs, unique, memory=16)
    register_td(ecs, unique + "-other", memory=16)
    mine = ecs.start_task(
        cluster=cluster, taskDefinition=unique, containerInstances=[a.instance_arn] * 3, startedBy="alice"
    )["tasks"]
    theirs = ecs.start_task(
        cluster=cluster,
        taskDefinition=unique + "-other",
        containerInstances=[b.instance_arn] * 2,
        group="service:web",
    )["tasks"]
    arns = lambda **kw: sorted(ecs.list_tasks(cluster=cluster, **kw)["taskArns"])  # noqa: E731
    assert arns() == sorted(t["taskArn"] for t in mine + theirs)
    assert arns(startedBy="alice") == sorted(t["taskArn"] for t in mine)
    assert arns(family=unique + "-other") == sorted(t["taskArn"] for t in theirs)
    assert arns(containerInstance=b.instance_arn) == sorted(t["taskArn"] for t in theirs)
    assert arns(serviceName="web") == []  # group "service:web" alone does not make a service's task
    assert arns(launchType="EC2") == arns() and arns(launchType="FARGATE") == []
    assert arns(desiredStatus="STOPPED") == []
    ecs.stop_task(cluster=cluster, task=mine[0]["taskArn"])
    assert arns(desiredStatus="STOPPED") == [mine[0]["taskArn"]]
    seen: list[str] = []
    for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster, PaginationConfig={"PageSize": 2}):
        assert len(page["taskArns"]) <= 2
        seen += page["taskArns"]
    assert sorted(seen) == arns()
    out = ecs.describe_tasks(
        cluster=cluster,
        tasks=[mine[1]["taskArn"], mine[2]["taskArn"].rsplit("/", 1)[1], "nope"],
        include=["TAGS"],
    )
    assert len(out["tasks"]) == 2 and all("tags" in t for t in out["tasks"])
    assert out["failures"] == [
        {"arn": f"arn:aws:ecs:us-east-1:000000000000:task/{cluster}/nope", "reason": "MISSING"}
    ]
    assert "tags" not in ecs.describe_tasks(cluster=cluster, tasks=[mine[1]["taskArn"]])["tasks"][0]
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=cluster)
    assert code(e.value) in ("ClusterContainsContainerInstancesException", "ClusterContainsTasksException")


def test_stopped_tasks_expire_after_the_retention(tmp_path, unique):
    with own_server_with_agent(
        tmp_path, unique, "--stopped-task-retention", "0.5", "--retention-interval", "0.2"
    ) as (_, ecs, agent):
        register_td(ecs, unique)
        [task] = ecs.run_task(cluster=unique, taskDefinition=unique, clientToken="tok")["tasks"]
        arn = task["taskArn"]
        agent.say(arn, "STOPPED")
        assert ecs.describe_tasks(cluster=unique, tasks=[arn])["tasks"][0]["lastStatus"] == "STOPPED"
        wait_until(
            lambda: (
                ecs.describe_tasks(cluster=unique, tasks=[arn])["failures"]
                == [{"arn": arn, "reason": "MISSING"}]
            ),
            what="the STOPPED task to expire",
        )
