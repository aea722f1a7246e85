"""TagResource, UntagResource and ListTagsForResource on tasks, services and container instances
(ECS semantics), through boto3 against a real server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess
from tests.services.conftest import register_td


def _register_instance(ecs: Any, cluster: str) -> str:
    out = ecs.register_container_instance(
        cluster=cluster,
        totalResources=[
            {"name": "CPU", "type": "INTEGER", "integerValue": 1024},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 2048},
        ],
        tags=[{"key": "rack", "value": "r1"}],
    )
    return str(out["containerInstance"]["containerInstanceArn"])


def _tags(ecs: Any, arn: str) -> dict[str, str]:
    return {t["key"]: t["value"] for t in ecs.list_tags_for_resource(resourceArn=arn)["tags"]}


def _code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


@pytest.fixture
def tagged(ecs: Any, cluster: str, unique: str) -> dict[str, str]:
    """A container instance, a task on it (RunTask tags) and a service (CreateService tags)."""
    instance = _register_instance(ecs, cluster)
    td = register_td(ecs, unique)
    run = ecs.run_task(cluster=cluster, taskDefinition=td, tags=[{"key": "team", "value": "a"}])
    assert run["failures"] == [], run["failures"]
    service = ecs.create_service(
        cluster=cluster,
        serviceName=unique,
        taskDefinition=td,
        desiredCount=0,
        tags=[{"key": "env", "value": "test"}],
    )["service"]["serviceArn"]
    return {"task": run["tasks"][0]["taskArn"], "service": service, "container-instance": instance}


def test_created_tags_are_listed(ecs: Any, tagged: dict[str, str]) -> None:
    assert _tags(ecs, tagged["task"]) == {"team": "a"}
    assert _tags(ecs, tagged["service"]) == {"env": "test"}
    assert _tags(ecs, tagged["container-instance"]) == {"rack": "r1"}


@pytest.mark.parametrize("kind", ["task", "service", "container-instance"])
def test_tag_untag_round_trip(ecs: Any, tagged: dict[str, str], kind: str) -> None:
    arn = tagged[kind]
    before = _tags(ecs, arn)
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "k1", "value": "v1"}, {"key": "k2", "value": "v2"}])
    assert _tags(ecs, arn) == {**before, "k1": "v1", "k2": "v2"}
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "k1", "value": "changed"}])
    assert _tags(ecs, arn) == {**before, "k1": "changed", "k2": "v2"}
    ecs.untag_resource(resourceArn=arn, tagKeys=["k2", *before, "never-there"])
    assert _tags(ecs, arn) == {"k1": "changed"}


def test_describe_shows_new_tags(ecs: Any, cluster: str, tagged: dict[str, str]) -> None:
    for arn in tagged.values():
        ecs.tag_resource(resourceArn=arn, tags=[{"key": "seen", "value": "yes"}])
    task = ecs.describe_tasks(cluster=cluster, tasks=[tagged["task"]], include=["TAGS"])["tasks"][0]
    assert {"key": "seen", "value": "yes"} in task["tags"]
    service = ecs.describe_services(cluster=cluster, services=[tagged["service"]], include=["TAGS"])
    assert {"key": "seen", "value": "yes"} in service["services"][0]["tags"]
    instance = ecs.describe_container_instances(
        cluster=cluster, containerInstances=[tagged["container-instance"]], include=["TAGS"]
    )["containerInstances"][0]
    assert {"key": "seen", "value": "yes"} in instance["tags"]


def test_tag_rules_apply(ecs: Any, tagged: dict[str, str]) -> None:
    arn = tagged["service"]
    with pytest.raises(ClientError) as e:
        ecs.tag_resource(resourceArn=arn, tags=[{"key": "aws:owned", "value": "x"}])
    assert _code(e) == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.tag_resource(resourceArn=arn, tags=[{"key": f"k{i}", "value": "v"} for i in range(50)])
    assert _code(e) == "InvalidParameterException"
    assert _tags(ecs, arn) == {"env": "test"}


@pytest.mark.parametrize("kind", ["task", "service", "container-instance"])
def test_unknown_resources(ecs: Any, cluster: str, tagged: dict[str, str], kind: str) -> None:
    arn = tagged[kind]
    missing = arn.rsplit("/", 1)[0] + "/0123456789abcdef0123456789abcdef"
    for call in (
        lambda a: ecs.list_tags_for_resource(resourceArn=a),
        lambda a: ecs.tag_resource(resourceArn=a, tags=[{"key": "k", "value": "v"}]),
        lambda a: ecs.untag_resource(resourceArn=a, tagKeys=["k"]),
    ):
        with pytest.raises(ClientError) as e:
            call(missing)
        assert _code(e) == "ResourceNotFoundException"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        with pytest.raises(ClientError) as e:
            call(arn.replace(f"/{cluster}/", f"/no-such-{cluster}/"))
        assert _code(e) == "ClusterNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.list_tags_for_resource(resourceArn=arn.replace(":us-east-1:", ":eu-west-1:"))
    assert _code(e) == "InvalidParameterException"


def test_unsupported_and_malformed_arns(ecs: Any, tagged: dict[str, str]) -> None:
    region_account = tagged["task"].split(":task/")[0]
    for arn in (
        f"{region_account}:task/only-an-id",
        f"{region_account}:capacity-provider/cp",
        "not-an-arn",
    ):
        with pytest.raises(ClientError) as e:
            ecs.list_tags_for_resource(resourceArn=arn)
        assert _code(e) == "InvalidParameterException", arn


@pytest.mark.parametrize("kind", ["task", "service", "container-instance"])
def test_concurrent_tagging_loses_nothing(
    dockyard_server: ServerProcess, ecs: Any, tagged: dict[str, str], kind: str
) -> None:
    """Writers racing on one document each re-read on a conflict: every tag lands."""
    arn = tagged[kind]
    before = _tags(ecs, arn)

    def tag(n: int) -> None:
        client: Any = dockyard_server.client("ecs")
        client.tag_resource(resourceArn=arn, tags=[{"key": f"writer-{n}", "value": str(n)}])

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(tag, range(8)))
    assert _tags(ecs, arn) == {**before, **{f"writer-{n}": str(n) for n in range(8)}}
