"""Clusters through boto3 against a running server."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def test_create_is_idempotent_and_describe_shows_counts(ecs, unique):
    first = ecs.create_cluster(clusterName=unique, tags=[{"key": "team", "value": "a"}])["cluster"]
    again = ecs.create_cluster(clusterName=unique)["cluster"]
    assert first["clusterArn"] == again["clusterArn"]
    assert first["clusterArn"] == f"arn:aws:ecs:us-east-1:000000000000:cluster/{unique}"
    assert first["status"] == "ACTIVE"

    out = ecs.describe_clusters(
        clusters=[unique, "nope-" + unique], include=["SETTINGS", "TAGS", "STATISTICS"]
    )
    [c] = out["clusters"]
    assert c["clusterName"] == unique
    assert c["runningTasksCount"] == 0 and c["registeredContainerInstancesCount"] == 0
    assert c["settings"] == [{"name": "containerInsights", "value": "disabled"}]
    assert c["tags"] == [{"key": "team", "value": "a"}]
    assert any(s["name"] == "runningEC2TasksCount" for s in c["statistics"])
    assert out["failures"] == [
        {"arn": f"arn:aws:ecs:us-east-1:000000000000:cluster/nope-{unique}", "reason": "MISSING"}
    ]
    # without include, settings and tags are left out as ECS does
    [plain] = ecs.describe_clusters(clusters=[first["clusterArn"]])["clusters"]
    assert "settings" not in plain and plain["tags"] == []


def test_list_clusters_paginates(ecs, unique):
    names = [f"{unique}-{i}" for i in range(7)]
    for n in names:
        ecs.create_cluster(clusterName=n)
    seen: list[str] = []
    for page in ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 3}):
        assert len(page["clusterArns"]) <= 3
        seen.extend(page["clusterArns"])
    assert len(seen) == len(set(seen))
    assert {a.rsplit("/", 1)[1] for a in seen} >= set(names)


def test_update_settings_and_cluster(ecs, unique):
    ecs.create_cluster(clusterName=unique)
    out = ecs.update_cluster_settings(
        cluster=unique, settings=[{"name": "containerInsights", "value": "enabled"}]
    )
    assert out["cluster"]["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    out = ecs.update_cluster(
        cluster=unique, configuration={"executeCommandConfiguration": {"logging": "DEFAULT"}}
    )
    assert out["cluster"]["configuration"] == {"executeCommandConfiguration": {"logging": "DEFAULT"}}
    with pytest.raises(ClientError) as e:
        ecs.update_cluster_settings(
            cluster=unique, settings=[{"name": "containerInsights", "value": "maybe"}]
        )
    assert error_code(e.value) == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.update_cluster_settings(
            cluster="missing-" + unique, settings=[{"name": "containerInsights", "value": "enabled"}]
        )
    assert error_code(e.value) == "ClusterNotFoundException"


def test_delete_cluster_makes_it_inactive(ecs, unique):
    ecs.create_cluster(clusterName=unique)
    gone = ecs.delete_cluster(cluster=unique)["cluster"]
    assert gone["status"] == "INACTIVE"
    [c] = ecs.describe_clusters(clusters=[unique])["clusters"]
    assert c["status"] == "INACTIVE"
    assert not any(a.endswith("/" + unique) for a in ecs.list_clusters()["clusterArns"])
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=unique)
    assert error_code(e.value) == "ClusterNotFoundException"
    # the name can be used again
    assert ecs.create_cluster(clusterName=unique)["cluster"]["status"] == "ACTIVE"


def test_bad_cluster_name_is_invalid_parameter(ecs):
    with pytest.raises(ClientError) as e:
        ecs.create_cluster(clusterName="has spaces!")
    assert error_code(e.value) == "InvalidParameterException"
    assert "Cluster name" in e.value.response["Error"]["Message"]


def test_tags_on_clusters(ecs, unique):
    arn = ecs.create_cluster(clusterName=unique)["cluster"]["clusterArn"]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
    ecs.untag_resource(resourceArn=arn, tagKeys=["a"])
    assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "b", "value": "2"}]
    with pytest.raises(ClientError) as e:
        ecs.tag_resource(resourceArn=arn, tags=[{"key": "aws:reserved", "value": "x"}])
    assert error_code(e.value) == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.list_tags_for_resource(resourceArn=arn.replace(unique, "missing-" + unique))
    assert error_code(e.value) == "ClusterNotFoundException"


def test_regions_are_separate(dockyard_server, unique):
    east = dockyard_server.client("ecs")
    west = boto3.client(
        "ecs",
        endpoint_url=dockyard_server.endpoint,
        region_name="us-west-2",
        aws_access_key_id=dockyard_server.access_key,
        aws_secret_access_key=dockyard_server.secret_key,
    )
    arn = west.create_cluster(clusterName=unique)["cluster"]["clusterArn"]
    assert arn.startswith("arn:aws:ecs:us-west-2:")
    assert east.describe_clusters(clusters=[unique])["failures"][0]["reason"] == "MISSING"
