"""Placement strategies and constraints through RunTask and ListContainerInstances(filter), over
real signed HTTP with the test playing the agents."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from botocore.exceptions import ClientError

from tests.services.conftest import register_td


def code(e: ClientError) -> str:
    return str(e.response["Error"]["Code"])


def message(e: ClientError) -> str:
    return str(e.response["Error"]["Message"])


def identity(n: int, zone: str) -> str:
    return orjson.dumps(
        {"instanceId": f"i-{n:017x}", "privateIp": "127.0.0.1", "availabilityZone": zone}
    ).decode()


def make(agents, cluster, n: int, zone: str, memory: int = 1000, **attributes):  # type: ignore[no-untyped-def]
    agent = agents(cluster, memory=memory, attributes={"ecs.availability-zone": zone, **attributes})
    agent.register(containerInstanceArn=agent.instance_arn, instanceIdentityDocument=identity(n, zone))
    return agent


def placed_on(out) -> list[str]:  # type: ignore[no-untyped-def]
    return [t["containerInstanceArn"] for t in out["tasks"]]


def test_binpack_fills_the_fullest_instance_first(ecs, cluster, agents, unique):
    made = [make(agents, cluster, n, "az-a") for n in range(3)]
    register_td(ecs, unique, memory=300)
    binpack = [{"type": "binpack", "field": "memory"}]
    first = placed_on(ecs.run_task(cluster=cluster, taskDefinition=unique, placementStrategy=binpack))
    more = ecs.run_task(cluster=cluster, taskDefinition=unique, count=3, placementStrategy=binpack)
    assert placed_on(more)[:2] == first * 2  # 3 x 300 fit in 1000 on the first one
    assert placed_on(more)[2] != first[0] and {placed_on(more)[2], first[0]} <= {a.instance_arn for a in made}


def test_spread_across_zones_then_instances(ecs, cluster, agents, unique):
    made = [make(agents, cluster, n, zone) for n, zone in enumerate(["az-a", "az-b", "az-c", "az-c"])]
    zone_of = {a.instance_arn: z for a, z in zip(made, ["az-a", "az-b", "az-c", "az-c"], strict=True)}
    register_td(ecs, unique, memory=10)
    spread = [
        {"type": "spread", "field": "attribute:ecs.availability-zone"},
        {"type": "spread", "field": "instanceId"},
    ]
    out = ecs.run_task(cluster=cluster, taskDefinition=unique, count=6, placementStrategy=spread)
    assert out["failures"] == []
    assert Counter(zone_of[a] for a in placed_on(out)) == {"az-a": 2, "az-b": 2, "az-c": 2}
    assert Counter(placed_on(out))[made[2].instance_arn] == 1  # az-c's two tasks on two instances
    again = ecs.run_task(cluster=cluster, taskDefinition=unique, count=3, placementStrategy=spread)
    assert Counter(zone_of[a] for a in placed_on(again)) == {"az-a": 1, "az-b": 1, "az-c": 1}


def test_distinct_instance_and_member_of_merged_with_the_task_definition(ecs, cluster, agents, unique):
    prod_b = make(agents, cluster, 1, "az-b", stack="prod")
    make(agents, cluster, 2, "az-a", stack="prod")
    make(agents, cluster, 3, "az-b", stack="dev")
    ecs.register_task_definition(
        family=unique,
        containerDefinitions=[{"name": "web", "image": "busybox", "memory": 10}],
        placementConstraints=[{"type": "memberOf", "expression": "attribute:stack == prod"}],
    )
    out = ecs.run_task(
        cluster=cluster,
        taskDefinition=unique,
        count=2,
        placementConstraints=[
            {"type": "distinctInstance"},
            {"type": "memberOf", "expression": "attribute:ecs.availability-zone == az-b"},
        ],
    )
    assert placed_on(out) == [prod_b.instance_arn]
    reasons = Counter(f["reason"] for f in out["failures"])
    assert reasons == {
        "DistinctInstance placement constraint unsatisfied": 1,
        "MemberOf placement constraint unsatisfied": 2,
    }


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (
            {"placementConstraints": [{"type": "memberOf", "expression": "attribute:stack ="}]},
            "placementConstraints[0]: Invalid cluster query expression at position 17",
        ),
        ({"placementStrategy": [{"type": "random"}] * 6}, "at most 5 placement strategies"),
        ({"placementStrategy": [{"type": "binpack", "field": "disk"}]}, "cpu or memory"),
        ({"placementConstraints": [{"type": "distinctInstance", "expression": "x"}]}, "no expression"),
        ({"placementConstraints": [{"type": "distinctInstance"}] * 11}, "at most 10"),
    ],
)
def test_bad_strategies_and_constraints_fail_the_request(ecs, cluster, agents, unique, kwargs, words):  # type: ignore[no-untyped-def]
    agents(cluster)
    register_td(ecs, unique)
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=cluster, taskDefinition=unique, **kwargs)
    assert code(e.value) == "InvalidParameterException" and words in message(e.value)
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == []


def test_list_container_instances_filters_with_the_query_language(ecs, cluster, agents, unique):
    a = make(agents, cluster, 1, "az-a", stack="prod")
    b = make(agents, cluster, 2, "az-b")
    register_td(ecs, unique, memory=10)
    ecs.run_task(
        cluster=cluster,
        taskDefinition=unique,
        placementConstraints=[{"type": "memberOf", "expression": f"ec2InstanceId == i-{1:017x}"}],
    )

    def listed(expression: str) -> set[str]:
        return set(ecs.list_container_instances(cluster=cluster, filter=expression)["containerInstanceArns"])

    assert listed("attribute:stack exists") == {a.instance_arn}
    assert listed("attribute:stack !exists") == {b.instance_arn}
    assert listed(f"task:group == family:{unique}") == {a.instance_arn}
    assert listed(f"not(task:group == family:{unique})") == {b.instance_arn}
    assert listed("attribute:ecs.availability-zone in [az-a, az-b] and agentConnected == true") == {
        a.instance_arn,
        b.instance_arn,
    }
    assert listed("runningTasksCount > 0") == set()  # the task is PROVISIONING, not RUNNING
    assert listed("agentVersion >= 0.1.0 and registeredAt > 2020-01-01") == {a.instance_arn, b.instance_arn}
    assert listed("ec2InstanceId =~ i-0+2") == {b.instance_arn}
    ecs.update_container_instances_state(
        cluster=cluster, containerInstances=[b.instance_arn], status="DRAINING"
    )
    assert set(
        ecs.list_container_instances(
            cluster=cluster, filter="attribute:ecs.os-type == linux", status="DRAINING"
        )["containerInstanceArns"]
    ) == {b.instance_arn}
    with pytest.raises(ClientError) as e:
        ecs.list_container_instances(cluster=cluster, filter="attribute:stack == (prod")
    assert code(e.value) == "InvalidParameterException" and "position 20" in message(e.value)
