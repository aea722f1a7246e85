"""PutAttributes, DeleteAttributes, ListAttributes over real signed HTTP, and what they change for
placement and ListContainerInstances(filter)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.services.conftest import register_td


def code(e: ClientError) -> str:
    return str(e.response["Error"]["Code"])


def attribute(name: str, target: str, value: str | None = None, **kw: str) -> dict[str, str]:
    out = {"name": name, "targetId": target, **kw}
    if value is not None:
        out["value"] = value
    return out


def test_put_list_delete_and_place_by_attribute(ecs, cluster, agents, unique):
    a, b = agents(cluster), agents(cluster)
    short_b = b.instance_arn.rsplit("/", 1)[1]
    put = ecs.put_attributes(
        cluster=cluster,
        attributes=[
            attribute("stack", a.instance_arn, "prod"),
            attribute("stack", short_b, "dev", targetType="container-instance"),
            attribute("gpu", a.instance_arn),
        ],
    )["attributes"]
    assert {(x["name"], x.get("value"), x["targetId"]) for x in put} == {
        ("stack", "prod", a.instance_arn),
        ("stack", "dev", b.instance_arn),
        ("gpu", None, a.instance_arn),
    }
    listed = ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="stack")
    assert sorted((x["targetId"], x["value"]) for x in listed["attributes"]) == sorted(
        [(a.instance_arn, "prod"), (b.instance_arn, "dev")]
    )
    assert all(x["targetType"] == "container-instance" for x in listed["attributes"])
    only_prod = ecs.list_attributes(
        cluster=cluster, targetType="container-instance", attributeName="stack", attributeValue="prod"
    )["attributes"]
    assert [x["targetId"] for x in only_prod] == [a.instance_arn]
    everything = []
    for page in ecs.get_paginator("list_attributes").paginate(
        cluster=cluster, targetType="container-instance", PaginationConfig={"PageSize": 7}
    ):
        assert len(page["attributes"]) <= 7
        everything += page["attributes"]
    assert len(everything) == len({(x["targetId"], x["name"]) for x in everything}) > 6

    # placement and filters see the change
    register_td(ecs, unique, memory=10)
    out = ecs.run_task(
        cluster=cluster,
        taskDefinition=unique,
        count=2,
        placementConstraints=[{"type": "memberOf", "expression": "attribute:stack == dev"}],
    )
    assert {t["containerInstanceArn"] for t in out["tasks"]} == {b.instance_arn}
    assert ecs.list_container_instances(cluster=cluster, filter="attribute:gpu exists")[
        "containerInstanceArns"
    ] == [a.instance_arn]
    [described] = ecs.describe_container_instances(cluster=cluster, containerInstances=[a.instance_arn])[
        "containerInstances"
    ]
    assert {"name": "stack", "value": "prod"} in described["attributes"]

    ecs.delete_attributes(cluster=cluster, attributes=[attribute("stack", b.instance_arn)])
    assert [
        x["targetId"]
        for x in ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="stack")[
            "attributes"
        ]
    ] == [a.instance_arn]
    again = ecs.run_task(
        cluster=cluster,
        taskDefinition=unique,
        placementConstraints=[{"type": "memberOf", "expression": "attribute:stack == dev"}],
    )
    assert again["tasks"] == [] and {f["reason"] for f in again["failures"]} == {
        "MemberOf placement constraint unsatisfied"
    }


def test_attribute_errors(ecs, cluster, agents):
    a = agents(cluster)
    missing = a.instance_arn.rsplit("/", 1)[0] + "/0123456789abcdef0123456789abcdef"
    cases = [
        ([attribute("x", missing, "1")], "TargetNotFoundException"),
        ([attribute("x", "0123456789abcdef", "1")], "InvalidParameterException"),  # short id, no type
        ([attribute("bad name!", a.instance_arn, "1")], "InvalidParameterException"),
        ([attribute("x", a.instance_arn, " padded")], "InvalidParameterException"),
        ([attribute(f"c{i}", a.instance_arn, "1") for i in range(11)], "InvalidParameterException"),
    ]
    for attributes, expected in cases:
        with pytest.raises(ClientError) as e:
            ecs.put_attributes(cluster=cluster, attributes=attributes)
        assert code(e.value) == expected, attributes
    for batch in range(2):
        ecs.put_attributes(
            cluster=cluster, attributes=[attribute(f"c{batch}{i}", a.instance_arn, "1") for i in range(5)]
        )
    with pytest.raises(ClientError) as e:
        ecs.put_attributes(cluster=cluster, attributes=[attribute("one-too-many", a.instance_arn, "1")])
    assert code(e.value) == "AttributeLimitExceededException"
    ecs.put_attributes(
        cluster=cluster, attributes=[attribute("c00", a.instance_arn, "2")]
    )  # replacing is fine
    with pytest.raises(ClientError) as e:
        ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeValue="1")
    assert code(e.value) == "InvalidParameterException"
    a.call(
        "AmazonEC2ContainerServiceV20141113.DeregisterContainerInstance",
        {"cluster": cluster, "containerInstance": a.instance_arn, "force": True},
        as_admin=True,
    )
    with pytest.raises(ClientError) as e:
        ecs.delete_attributes(cluster=cluster, attributes=[attribute("c00", a.instance_arn)])
    assert code(e.value) == "TargetNotFoundException"
