"""Documents for placement tests, written straight into a store (no API, no agent)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import orjson

from dockyard.domain.container_instances import Allocation, ContainerInstance
from dockyard.domain.resources import Resources
from dockyard.domain.tasks import Container, Task
from dockyard.placement import keys
from dockyard.placement.keys import Scope
from dockyard.scheduler import Placement, TaskAsk
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
    attributes: dict[str, str | None] | None = None,
) -> ContainerInstance:
    instance = ContainerInstance(
        arn=instance_arn(instance_id, scope),
        id=instance_id,
        cluster=scope.cluster,
        ec2_instance_id="i-" + instance_id,
        registered=Resources(cpu, memory, ports),
        attributes=tuple((attributes if attributes is not None else {"ecs.os-type": "linux"}).items()),
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


_ids = itertools.count()


def builder(ask: TaskAsk, group: str = "family:f") -> Callable[[int, Placement], Task]:
    """A TaskBuilder making minimal task documents of ``group`` that reserve ``ask.needs``."""

    def build(index: int, p: Placement) -> Task:
        task_id = f"t{next(_ids)}"
        return Task(
            arn=f"arn:aws:ecs:us-east-1:000000000000:task/c/{task_id}",
            id=task_id,
            cluster="c",
            cluster_arn="arn:aws:ecs:us-east-1:000000000000:cluster/c",
            task_definition_arn="arn:aws:ecs:us-east-1:000000000000:task-definition/f:1",
            container_instance_arn=p.instance_arn,
            instance_id=p.instance_id,
            containers=(Container("web", f"arn:c/{task_id}", "busybox"),),
            reservation=ask.needs,
            created_at=0.0,
            group=group,
        )

    return build


async def allocations(store: StateStore, scope: Scope = SCOPE) -> dict[str, Allocation]:
    page = await store.list(keys.prefix(keys.ALLOCATIONS, scope))
    return {kv.key.rsplit("/", 1)[1]: Allocation.from_document(orjson.loads(kv.value)) for kv in page.kvs}
