"""UpdateService changes placementStrategy, placementConstraints, deploymentConfiguration and
healthCheckGracePeriodSeconds: DescribeServices shows each, and the next placements follow the new
strategy and constraint. The real server and a real agent process running three hollow instances
(``--runtime simulated``) in zones a, b, b."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.conftest import ServerProcess, wait_until

from .conftest import Agents, describe_service, register, service_tasks

ZONES = ("us-east-1a", "us-east-1b", "us-east-1b")


def _instances_by_zone(ecs: Any, cluster: str) -> dict[str, str]:
    """container instance ARN -> its ecs.availability-zone."""
    arns = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    described = ecs.describe_container_instances(cluster=cluster, containerInstances=arns)
    return {
        ci["containerInstanceArn"]: next(
            a["value"] for a in ci["attributes"] if a["name"] == "ecs.availability-zone"
        )
        for ci in described["containerInstances"]
    }


def _placed(ecs: Any, cluster: str, name: str, count: int) -> dict[str, str]:
    """task ARN -> container instance ARN, once ``count`` tasks of the service are RUNNING."""

    def running() -> dict[str, str] | None:
        tasks = [t for t in service_tasks(ecs, cluster, name) if t["lastStatus"] == "RUNNING"]
        if len(tasks) != count:
            return None
        return {t["taskArn"]: t["containerInstanceArn"] for t in tasks}

    out: dict[str, str] = wait_until(running, timeout=60, interval=0.2, what=f"{count} RUNNING tasks")
    return out


def test_update_service_placement_and_deployment_settings(
    server: ServerProcess, ecs: Any, cluster: str, agents: Agents, unique: str
) -> None:
    agents.spawn(
        server,
        cluster,
        "hollow",
        "--runtime",
        "simulated",
        "--instances",
        "3",
        "--availability-zones",
        ",".join(ZONES),
        "--cpu-units",
        "4096",
        "--memory-mib",
        "4096",
    )
    zones = wait_until(
        lambda: len(z := _instances_by_zone(ecs, cluster)) == 3 and z, what="three hollow instances"
    )
    in_b = {arn for arn, zone in zones.items() if zone == "us-east-1b"}
    in_a = set(zones) - in_b
    assert len(in_b) == 2 and len(in_a) == 1

    td = register(ecs, unique, memory=128)
    ecs.create_service(
        cluster=cluster,
        serviceName=unique,
        taskDefinition=td,
        desiredCount=0,
        placementStrategy=[{"type": "spread", "field": "instanceId"}],
    )

    updated = ecs.update_service(
        cluster=cluster,
        service=unique,
        placementStrategy=[{"type": "binpack", "field": "memory"}],
        placementConstraints=[
            {"type": "memberOf", "expression": "attribute:ecs.availability-zone == us-east-1b"}
        ],
        deploymentConfiguration={
            "maximumPercent": 150,
            "minimumHealthyPercent": 50,
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        },
        healthCheckGracePeriodSeconds=45,
    )["service"]
    described = describe_service(ecs, cluster, unique)
    for view in (updated, described):
        assert view["placementStrategy"] == [{"type": "binpack", "field": "memory"}]
        assert view["placementConstraints"] == [
            {"type": "memberOf", "expression": "attribute:ecs.availability-zone == us-east-1b"}
        ]
        config = view["deploymentConfiguration"]
        assert (config["maximumPercent"], config["minimumHealthyPercent"]) == (150, 50)
        assert config["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
        assert view["healthCheckGracePeriodSeconds"] == 45

    # a standalone task makes the zone-a instance the fullest: binpack alone would choose it
    filler = ecs.run_task(
        cluster=cluster,
        taskDefinition=register(ecs, f"{unique}-filler", memory=1024),
        placementConstraints=[
            {"type": "memberOf", "expression": "attribute:ecs.availability-zone == us-east-1a"}
        ],
    )
    assert not filler["failures"], filler["failures"]
    assert filler["tasks"][0]["containerInstanceArn"] in in_a

    # binpack on memory inside zone b: every task on one zone-b instance
    ecs.update_service(cluster=cluster, service=unique, desiredCount=3)
    first = _placed(ecs, cluster, unique, 3)
    hosts = set(first.values())
    assert len(hosts) == 1 and hosts <= in_b, Counter(zones[h] for h in first.values())

    # now spread over instances with no constraint: the next tasks go where the service has fewest
    updated = ecs.update_service(
        cluster=cluster,
        service=unique,
        placementStrategy=[{"type": "spread", "field": "instanceId"}],
        placementConstraints=[],
        deploymentConfiguration={"maximumPercent": 200, "minimumHealthyPercent": 100},
        healthCheckGracePeriodSeconds=0,
    )["service"]
    described = describe_service(ecs, cluster, unique)
    for view in (updated, described):
        assert view["placementStrategy"] == [{"type": "spread", "field": "instanceId"}]
        assert view.get("placementConstraints", []) == []
        config = view["deploymentConfiguration"]
        assert (config["maximumPercent"], config["minimumHealthyPercent"]) == (200, 100)
        assert view["healthCheckGracePeriodSeconds"] == 0
    ecs.update_service(cluster=cluster, service=unique, desiredCount=6)
    after = _placed(ecs, cluster, unique, 6)
    assert {arn: after[arn] for arn in first} == first  # scaling up moves nothing
    added = Counter(host for arn, host in after.items() if arn not in first)
    (packed,) = hosts
    assert packed not in added and sum(added.values()) == 3, added
    assert sorted(Counter(after.values()).values()) == [1, 2, 3]  # spread: 3 / 2 / 1

    ecs.update_service(cluster=cluster, service=unique, desiredCount=0)
    wait_until(lambda: not service_tasks(ecs, cluster, unique), timeout=60, what="the tasks to stop")
    ecs.delete_service(cluster=cluster, service=unique)
    ecs.stop_task(cluster=cluster, task=filler["tasks"][0]["taskArn"])
