"""RunTask and StartTask in awsvpc mode through boto3, placement only (a test agent registers the
instance; no containers): the configurable number of awsvpc tasks an instance takes (the ``ENI``
resource, ``dockyard agent --awsvpc-tasks``) and RunTask's own network-configuration checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dockyard.agent.registration import HostFacts
from tests.conftest import ServerProcess
from tests.services.agent_client import TestAgent


@pytest.fixture
def cluster(dockyard_server: ServerProcess, unique: str) -> str:
    dockyard_server.client("ecs").create_cluster(clusterName=unique)  # type: ignore[attr-defined]
    return unique


@pytest.fixture
def agent(dockyard_server: ServerProcess, cluster: str) -> Iterator[TestAgent]:
    a = TestAgent(dockyard_server, cluster)
    body = a.registration_body()
    body["totalResources"].append({"name": "ENI", "type": "INTEGER", "integerValue": 1})
    a.register(totalResources=body["totalResources"])
    try:
        yield a
    finally:
        a.close()


def _awsvpc_family(ecs: Any, family: str) -> str:
    out = ecs.register_task_definition(
        family=family,
        networkMode="awsvpc",
        containerDefinitions=[{"name": "web", "image": "dockyard/busybox:latest", "memory": 16}],
    )
    return str(out["taskDefinition"]["taskDefinitionArn"])


def _network(subnet: str, public: str = "DISABLED") -> dict[str, Any]:
    return {"awsvpcConfiguration": {"subnets": [subnet], "assignPublicIp": public}}


def _default_subnet(dockyard_server: ServerProcess) -> str:
    ec2 = dockyard_server.client("ec2")
    found = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]  # type: ignore[attr-defined]
    return str(found[0]["SubnetId"])


def test_instance_takes_its_registered_number_of_awsvpc_tasks(dockyard_server, cluster, agent, unique):  # type: ignore[no-untyped-def]
    ecs = dockyard_server.client("ecs")
    td = _awsvpc_family(ecs, unique)
    subnet = _default_subnet(dockyard_server)
    out = ecs.run_task(cluster=cluster, taskDefinition=td, count=2, networkConfiguration=_network(subnet))
    assert len(out["tasks"]) == 1
    assert [f["reason"] for f in out["failures"]] == ["RESOURCE:ENI"]
    [attachment] = out["tasks"][0]["attachments"]
    assert attachment["type"] == "ElasticNetworkInterface"
    again = ecs.start_task(
        cluster=cluster,
        taskDefinition=td,
        containerInstances=[agent.instance_arn],
        networkConfiguration=_network(subnet),
    )
    assert again["tasks"] == [] and again["failures"][0]["reason"] == "RESOURCE:ENI"
    ecs.stop_task(cluster=cluster, task=out["tasks"][0]["taskArn"])


def test_run_task_checks_its_network_configuration(dockyard_server, cluster, agent, unique):  # type: ignore[no-untyped-def]
    ecs = dockyard_server.client("ecs")
    td = _awsvpc_family(ecs, unique)
    subnet = _default_subnet(dockyard_server)
    for kwargs in (
        {},  # awsvpc needs one
        {"networkConfiguration": _network(subnet, public="ENABLED")},  # not for the EC2 launch type
        {"networkConfiguration": _network("subnet-00000000000000000")},  # no such subnet
    ):
        with pytest.raises(ClientError) as e:
            ecs.run_task(cluster=cluster, taskDefinition=td, **kwargs)
        assert e.value.response["Error"]["Code"] == "InvalidParameterException", kwargs
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ecs.list_tasks(cluster=cluster)["taskArns"] == []  # nothing half-made


def test_agent_registers_the_awsvpc_task_count_it_is_given() -> None:
    facts = HostFacts(cluster="c", instance_id="i-1", region="us-east-1", cpu_units=1024, memory_mib=512)
    assert "ENI" not in {r["name"] for r in facts.resources()}  # the server's default (16)
    facts = HostFacts(
        cluster="c", instance_id="i-1", region="us-east-1", cpu_units=1024, memory_mib=512, awsvpc_tasks=3
    )
    assert {"name": "ENI", "type": "INTEGER", "integerValue": 3} in facts.resources()
