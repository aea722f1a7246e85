"""The service controller gives each awsvpc task an address of its deployment's subnets, claimed in
the transaction that creates the task (two controllers never hand one out twice), and says so in the
service's events when the subnet has none left. Each deployment keeps its own network
configuration (an UpdateService that changes it does not move an older deployment's tasks)."""

from __future__ import annotations

from dataclasses import replace

import orjson

from dockyard.domain.container_instances import Allocation, ContainerInstance
from dockyard.domain.deployments import DeploymentStatus, demoted, promoted
from dockyard.domain.ec2 import NetworkInterface, Subnet
from dockyard.domain.resources import Resources
from dockyard.domain.services import Service, ServiceCounts, with_new_deployment
from dockyard.domain.task_definitions import NetworkMode
from dockyard.domain.task_status import TaskStatus
from dockyard.placement import addresses, keys
from dockyard.store.base import Put
from dockyard.store.memory import MemoryStore
from tests.controller.factories import service, td
from tests.controller.test_loop import put_service, read_service, run_controllers, service_tasks, world
from tests.placement.factories import SCOPE, instance_arn

__all__ = ["world"]  # the fixture, re-used

SUBNET = Subnet("subnet-1", "vpc-1", "10.213.0.0/29", SCOPE.region + "a", SCOPE.account)  # 3 usable addresses
NETWORK = {
    "awsvpcConfiguration": {"subnets": [SUBNET.id], "securityGroups": ["sg-1"], "assignPublicIp": "DISABLED"}
}


async def _setup(store: MemoryStore) -> None:
    puts = [Put(addresses.subnet_key(SCOPE.account, SCOPE.region, SUBNET.id), orjson.dumps(SUBNET.to_doc()))]
    for name in ("e0", "e1"):  # instances that take awsvpc tasks (the world's take none: no ENI)
        instance = ContainerInstance(
            arn=instance_arn(name, SCOPE),
            id=name,
            cluster=SCOPE.cluster,
            ec2_instance_id="i-" + name,
            registered=Resources(100_000, 100_000, frozenset(), enis=8),
            attributes=(("ecs.os-type", "linux"),),
        )
        puts += [
            Put(keys.instance(SCOPE, name), orjson.dumps(instance.to_document())),
            Put(keys.allocation(SCOPE, name), orjson.dumps(Allocation().to_document())),
            Put(keys.liveness(SCOPE, name), b"{}", lease=await store.grant_lease(3600)),
        ]
    await store.txn([], puts)


async def test_awsvpc_service_tasks_get_distinct_claimed_addresses(world):  # type: ignore[no-untyped-def]
    store, caches = world
    await _setup(store)
    definition = replace(td(1), network_mode=NetworkMode.AWSVPC)
    await put_service(store, replace(service(4, definition=definition), network_configuration=NETWORK))

    async def placed_three() -> bool:
        tasks = [t for t in await service_tasks(store) if t.last_status is TaskStatus.RUNNING]
        svc = await read_service(store)
        return len(tasks) == 3 and any("not enough free addresses" in e.message for e in svc.events)

    await run_controllers(store, caches, placed_three)
    tasks = await service_tasks(store)
    assert len(tasks) == 3  # the subnet has three usable addresses
    assert {t.instance_id for t in tasks} <= {"e0", "e1"}
    shown = sorted(str(t.eni["privateIPv4Address"]) for t in tasks if t.eni)
    assert shown == ["10.213.0.4", "10.213.0.5", "10.213.0.6"]
    for t in tasks:
        assert t.eni is not None and t.eni["subnetId"] == SUBNET.id and t.eni["securityGroups"] == ["sg-1"]
        kv = await store.get(
            addresses.eni_key(SCOPE.account, SCOPE.region, SUBNET.id, t.eni["privateIPv4Address"])
        )
        assert kv is not None
        claim = NetworkInterface.from_doc(orjson.loads(kv.value))
        assert claim.task_arn == t.arn and claim.instance_arn == t.container_instance_arn
    events = [e.message for e in (await read_service(store)).events]
    assert any(
        m.startswith("(service svc) failed to launch a task with (error There are not enough free addresses")
        for m in events
    )


OTHER = Subnet("subnet-2", "vpc-1", "10.213.0.16/29", SCOPE.region + "a", SCOPE.account)
NETWORK_2 = {
    "awsvpcConfiguration": {"subnets": [OTHER.id], "securityGroups": ["sg-2"], "assignPublicIp": "DISABLED"}
}


def test_each_deployment_keeps_its_network_configuration() -> None:
    definition = replace(td(1), network_mode=NetworkMode.AWSVPC)
    first = replace(service(2, definition=definition), network_configuration=NETWORK)
    legacy = replace(  # a document written before deployments carried their configuration
        first, deployments=tuple(replace(d, network_configuration=None) for d in first.deployments)
    )
    for svc in (first, legacy):
        old = svc.deployments[0]
        assert svc.network_for(old) == NETWORK
        updated = with_new_deployment(svc, definition, "ecs-svc/2", 10.0, NETWORK_2)
        primary, older = updated.deployments
        assert primary.id == "ecs-svc/2" and primary.status is DeploymentStatus.PRIMARY
        assert primary.network_configuration == NETWORK_2 == updated.network_configuration
        assert older.status is DeploymentStatus.ACTIVE and older.network_configuration == NETWORK
        assert updated.network_for(older) == NETWORK
        # as documents and on the wire: each deployment shows its own; the service its primary's
        again = Service.from_document(orjson.loads(orjson.dumps(updated.to_document())))
        assert [d.network_configuration for d in again.deployments] == [NETWORK_2, NETWORK]
        assert again.network_configuration == NETWORK_2
        wire = updated.to_wire(ServiceCounts())
        assert wire["networkConfiguration"] == NETWORK_2
        assert [d["networkConfiguration"] for d in wire["deployments"]] == [NETWORK_2, NETWORK]
        # forceNewDeployment (no configuration given) keeps the service's
        forced = with_new_deployment(updated, definition, "ecs-svc/3", 20.0)
        assert [d.network_configuration for d in forced.deployments] == [NETWORK_2, NETWORK_2, NETWORK]


async def test_an_older_deployment_starts_tasks_with_its_own_network(world):  # type: ignore[no-untyped-def]
    """A rollback makes the first deployment PRIMARY again: its tasks go to its own subnet and
    groups, not the ones the (failed) newer deployment brought."""
    store, caches = world
    await _setup(store)
    await store.txn(
        [], [Put(addresses.subnet_key(SCOPE.account, SCOPE.region, OTHER.id), orjson.dumps(OTHER.to_doc()))]
    )
    definition = replace(td(1), network_mode=NetworkMode.AWSVPC)
    first = replace(service(2, definition=definition), network_configuration=NETWORK)
    first = replace(first, deployments=(replace(first.deployments[0], network_configuration=NETWORK),))
    updated = with_new_deployment(
        first, replace(td(2), network_mode=NetworkMode.AWSVPC), "ecs-svc/2", 1.0, NETWORK_2
    )
    newer, older = updated.deployments
    rolled_back = replace(
        updated, deployments=(promoted(older, 2, 2.0), replace(demoted(newer, 2.0), desired_count=0))
    )
    await put_service(store, rolled_back)

    async def two_running() -> bool:
        tasks = [t for t in await service_tasks(store) if t.last_status is TaskStatus.RUNNING]
        return len(tasks) == 2

    await run_controllers(store, caches, two_running)
    tasks = await service_tasks(store)
    assert {t.started_by for t in tasks} == {older.id}
    for t in tasks:
        assert t.eni is not None and t.eni["subnetId"] == SUBNET.id and t.eni["securityGroups"] == ["sg-1"]
