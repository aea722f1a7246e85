"""Documents for placement tests, written straight into a store (no API, no agent)."""

from __future__ import annotations

import orjson

from dockyard.domain.container_instances import Allocation, ContainerInstance
from dockyard.domain.resources import Resources
from dockyard.placement import keys
from dockyard.placement.keys import Scope
from dockyard.store.base import Put, StateStore

SCOPE = Scope("000000000000", "us-east-1", "c")


def instance_arn(instance_id: str, scope: Scope = SCOPE) -> str:
    return f"arn:aws:ecs:{scope.region}:{scope.account}:container-instance/{scope.cluster}/{instance_id}"


async def add_instance(
    store: StateStore,
    instance_id: str,
    *,
    cpu: int = 1024,
    memory: int = 1024,
    ports: frozenset[int] = frozenset({22}),
    connected: bool = True,
    scope: Scope = SCOPE,
) -> ContainerInstance:
    instance = ContainerInstance(
        arn=instance_arn(instance_id, scope),
        id=instance_id,
        cluster=scope.cluster,
        ec2_instance_id="i-" + instance_id,
        registered=Resources(cpu, memory, ports),
        attributes=(("ecs.os-type", "linux"),),
    )
    puts = [
        Put(keys.instance(scope, instance_id), orjson.dumps(instance.to_document())),
        Put(keys.allocation(scope, instance_id), orjson.dumps(Allocation().to_document())),
    ]
    if connected:
        lease = await store.grant_lease(3600)
        puts.append(Put(keys.liveness(scope, instance_id), b"{}", lease=lease))
    await store.txn([], puts)
    return instance
