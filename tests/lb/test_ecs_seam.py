"""The seam the services controller uses: CreateService's checks, a task's targets, and
register -> health -> deregister (drain) -> gone, on the in-memory store with a fake clock."""

from __future__ import annotations

import pytest

from dockyard.clock import FakeClock
from dockyard.domain.container_instances import ContainerInstance
from dockyard.domain.errors import InvalidParameter
from dockyard.domain.load_balancers import listener_arn, load_balancer_arn, target_group_arn
from dockyard.domain.resources import Resources
from dockyard.domain.target_groups import (
    HealthRecord,
    TargetGroup,
    default_attributes,
    default_health_check,
)
from dockyard.domain.task_definitions import TaskDefinition
from dockyard.domain.tasks import Container, Task
from dockyard.lb import keys, registrations
from dockyard.lb.ecs import (
    ServiceLoadBalancer,
    check_service_load_balancers,
    deregister_task,
    register_task,
    task_health,
    task_targets,
)
from dockyard.lb.records import encode
from dockyard.lb.registrations import Target
from dockyard.store.base import Put
from dockyard.store.memory import MemoryStore

TG_ID, LB_ID = "a" * 16, "b" * 16
TG_ARN = target_group_arn("us-east-1", "1", "web", TG_ID)
LB_ARN = load_balancer_arn("us-east-1", "1", "application", "lb", LB_ID)


async def put_group(store: MemoryStore, in_use: bool = True, target_type: str = "instance") -> TargetGroup:
    users = {listener_arn("us-east-1", "1", "application", "lb", LB_ID, "c" * 16): LB_ARN} if in_use else {}
    attributes = {**default_attributes("application"), "deregistration_delay.timeout_seconds": "30"}
    tg = TargetGroup(
        TG_ARN,
        "web",
        TG_ID,
        "HTTP",
        80,
        "vpc",
        target_type,
        default_health_check("HTTP"),
        attributes,
        0.0,
        users,
    )
    await store.txn(puts=[Put(keys.target_group("1", "us-east-1", "web"), encode(tg.to_document()))])
    return tg


def task_definition(network_mode: str = "bridge") -> TaskDefinition:
    return TaskDefinition.from_wire(
        {
            "family": "web",
            "networkMode": network_mode,
            "containerDefinitions": [
                {"name": "web", "image": "busybox", "portMappings": [{"containerPort": 80}]}
            ],
        }
    )


async def test_create_service_checks():
    store = MemoryStore(lease_check_interval=None)
    await put_group(store)
    good = [{"targetGroupArn": TG_ARN, "containerName": "web", "containerPort": 80}]
    assert await check_service_load_balancers(store, task_definition(), good) == [
        ServiceLoadBalancer(TG_ARN, "web", 80)
    ]
    bad = {
        "does not exist in the task definition": [{**good[0], "containerName": "db"}],
        "did not have a container port 81": [{**good[0], "containerPort": 81}],
        "does not exist": [{**good[0], "targetGroupArn": target_group_arn("us-east-1", "1", "nope", TG_ID)}],
    }
    for message, lbs in bad.items():
        with pytest.raises(InvalidParameter, match=message):
            await check_service_load_balancers(store, task_definition(), lbs)
    with pytest.raises(InvalidParameter, match="incompatible with the awsvpc network mode"):
        await check_service_load_balancers(store, task_definition("awsvpc"), good)
    await put_group(store, in_use=False)
    with pytest.raises(InvalidParameter, match="does not have an associated load balancer"):
        await check_service_load_balancers(store, task_definition(), good)


def test_task_targets_use_the_instance_and_the_host_port():
    instance = ContainerInstance(
        arn="arn:ci",
        id="ci",
        cluster="c",
        ec2_instance_id="i-0123",
        registered=Resources(),
        private_ip="127.0.0.1",
    )
    bound = Container("web", "arn:c", "busybox", network_bindings=({"containerPort": 80, "hostPort": 32768},))
    task = Task(
        "arn:t", "t", "c", "arn:c", "arn:td", "arn:ci", "ci", (bound,), Resources(), 0.0, "service:web"
    )
    lbs = [ServiceLoadBalancer(TG_ARN, "web", 80), ServiceLoadBalancer(TG_ARN, "web", 81)]
    assert task_targets(lbs, task, instance) == [(TG_ARN, Target("i-0123", 32768, "127.0.0.1"))]


async def test_register_health_drain_and_expiry():
    clock = FakeClock()
    store = MemoryStore(clock, lease_check_interval=None)
    await put_group(store)
    target = Target("i-0123", 32768, "127.0.0.1")
    await registrations.register(store, clock, TG_ARN, [target])
    await registrations.register(store, clock, TG_ARN, [target])  # idempotent
    [(reg, _, health)] = await registrations.health(store, clock, TG_ARN, [target])
    assert reg is not None and health.reason == "Elb.RegistrationInProgress"

    # the data plane's observation for this registration makes it healthy
    key = keys.health("1", "us-east-1", TG_ID, reg.key)
    await store.txn(puts=[Put(key, encode(HealthRecord(reg.registration_id, "healthy").to_document()))])
    assert (await registrations.health(store, clock, TG_ARN, [target]))[0][2].state == "healthy"

    deadline = await registrations.deregister(store, clock, TG_ARN, [target])
    assert deadline == clock.time() + 30
    assert (await registrations.health(store, clock, TG_ARN))[0][2].state == "draining"
    assert await registrations.deregister(store, clock, TG_ARN, [target]) == deadline  # idempotent
    clock.advance(30)
    assert await registrations.health(store, clock, TG_ARN) == []
    kv = await store.get(keys.target("1", "us-east-1", TG_ID, reg.key))
    assert kv is not None and await registrations.expire(store, clock, kv)
    assert await store.get(key) is None

    # registered again: a new registration, whose health starts over
    await registrations.register(store, clock, TG_ARN, [target])
    [(again, _, health)] = await registrations.health(store, clock, TG_ARN, [target])
    assert again is not None and again.registration_id != reg.registration_id and health.state == "initial"


async def test_task_level_calls_for_the_services_controller():
    clock = FakeClock()
    store = MemoryStore(clock, lease_check_interval=None)
    await put_group(store)
    instance = ContainerInstance(
        arn="arn:ci",
        id="ci",
        cluster="c",
        ec2_instance_id="i-0123",
        registered=Resources(),
        private_ip="127.0.0.1",
    )
    lbs = [ServiceLoadBalancer(TG_ARN, "web", 80)]
    pending = Container("web", "arn:c", "busybox")
    task = Task(
        "arn:t", "t", "c", "arn:c", "arn:td", "arn:ci", "ci", (pending,), Resources(), 0.0, "service:web"
    )
    assert not await register_task(store, clock, lbs, task, instance)  # no host port reported yet
    bound = Container("web", "arn:c", "busybox", network_bindings=({"containerPort": 80, "hostPort": 32768},))
    task = Task(
        "arn:t", "t", "c", "arn:c", "arn:td", "arn:ci", "ci", (bound,), Resources(), 0.0, "service:web"
    )
    assert await register_task(store, clock, lbs, task, instance)
    assert await task_health(store, clock, lbs, task, instance) == "initial"
    [(reg, _, _)] = await registrations.health(store, clock, TG_ARN)
    assert reg is not None
    key = keys.health("1", "us-east-1", TG_ID, reg.key)
    await store.txn(puts=[Put(key, encode(HealthRecord(reg.registration_id, "healthy").to_document()))])
    assert await task_health(store, clock, lbs, task, instance) == "healthy"
    await store.txn(puts=[Put(key, encode(HealthRecord(reg.registration_id, "unhealthy").to_document()))])
    assert await task_health(store, clock, lbs, task, instance) == "unhealthy"
    assert await deregister_task(store, clock, lbs, task, instance) == clock.time() + 30
    assert await task_health(store, clock, lbs, task, instance) == "initial"  # draining
