"""ECS services behind load balancers: the checks CreateService makes on ``loadBalancers``, and the
targets the services controller registers for a task (through ``lb.registrations``).

A service's ``loadBalancers`` entry ``{targetGroupArn, containerName, containerPort}`` becomes, for
a task of the service (bridge or host network mode, target type ``instance``)::

    Target(id=<container instance's ec2InstanceId>, port=<the task's host port for containerPort>,
           address=<the container instance's address>)

and for a task in awsvpc mode (target type ``ip``; no host ports: the task has its own address)::

    Target(id=<the task's privateIPv4Address>, port=<containerPort>, address=<the same address>)

ECS refuses an ``instance`` target group for an awsvpc service and an ``ip`` one for the others.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dockyard.clock import Clock
from dockyard.domain.container_instances import ContainerInstance
from dockyard.domain.elb_errors import ElbError
from dockyard.domain.errors import InvalidParameter
from dockyard.domain.target_groups import HEALTHY, INITIAL, INSTANCE, IP, UNHEALTHY, TargetHealth
from dockyard.domain.task_definitions import NetworkMode, TaskDefinition
from dockyard.domain.tasks import Task
from dockyard.lb import records, registrations
from dockyard.lb.registrations import Target
from dockyard.store.base import StateStore

LOCAL_ADDRESS = "127.0.0.1"  # where an agent on this machine publishes host ports by default


@dataclass(frozen=True)
class ServiceLoadBalancer:
    target_group_arn: str
    container_name: str
    container_port: int

    @staticmethod
    def from_wire(wire: Mapping[str, Any]) -> ServiceLoadBalancer:
        arn, name, port = wire.get("targetGroupArn"), wire.get("containerName"), wire.get("containerPort")
        if not arn or not name or port is None:
            raise InvalidParameter(
                "loadBalancers entries need targetGroupArn, containerName and containerPort "
                "(classic load balancers by loadBalancerName are not supported by Dockyard)."
            )
        return ServiceLoadBalancer(str(arn), str(name), int(port))

    def to_wire(self) -> dict[str, Any]:
        return {
            "targetGroupArn": self.target_group_arn,
            "containerName": self.container_name,
            "containerPort": self.container_port,
        }


def instance_address(instance: ContainerInstance) -> str:
    return instance.private_ip or LOCAL_ADDRESS


async def check_service_load_balancers(
    store: StateStore, td: TaskDefinition, load_balancers: Sequence[Mapping[str, Any]]
) -> list[ServiceLoadBalancer]:
    """CreateService's checks, with ECS's messages: the container and port exist in the task
    definition, the target group exists, is attached to a load balancer and fits the network mode."""
    out = []
    mode = td.effective_network_mode
    for wire in load_balancers:
        lb = ServiceLoadBalancer.from_wire(wire)
        container = next((c for c in td.container_definitions if c.name == lb.container_name), None)
        if container is None:
            raise InvalidParameter(
                f"The container {lb.container_name} does not exist in the task definition."
            )
        if not any(p.container_port == lb.container_port for p in container.port_mappings):
            name, port = lb.container_name, lb.container_port
            raise InvalidParameter(f"The container {name} did not have a container port {port} defined.")
        try:
            tg, _ = await records.target_group(store, lb.target_group_arn)
        except ElbError:
            raise InvalidParameter(f"Target group {lb.target_group_arn} does not exist.") from None
        if not tg.in_use():
            raise InvalidParameter(
                f"The target group with targetGroupArn {tg.arn} does not have an associated load balancer."
            )
        if (tg.target_type == IP) != (mode is NetworkMode.AWSVPC) or tg.target_type not in (INSTANCE, IP):
            raise InvalidParameter(
                f"The provided target group {tg.arn} has target type {tg.target_type}, which is incompatible "
                f"with the {mode.value} network mode specified in the task definition."
            )
        out.append(lb)
    return out


def task_targets(
    load_balancers: Sequence[ServiceLoadBalancer], task: Task, instance: ContainerInstance
) -> list[tuple[str, Target]]:
    """(target group ARN, Target) for each of the service's load balancers the task can serve now:
    one whose container reports a network binding for the container port, or, awsvpc, the task's
    own address and the container port (PURE)."""
    out = []
    address = str(task.eni["privateIPv4Address"]) if task.eni else None
    for lb in load_balancers:
        container = task.container(lb.container_name)
        if container is None:
            continue
        if address is not None:
            out.append((lb.target_group_arn, Target(id=address, port=lb.container_port, address=address)))
            continue
        for binding in container.network_bindings:
            if binding.get("containerPort") == lb.container_port and binding.get("hostPort"):
                target = Target(
                    id=instance.ec2_instance_id,
                    port=int(binding["hostPort"]),
                    address=instance_address(instance),
                )
                out.append((lb.target_group_arn, target))
                break
    return out


# ---- what the services controller calls, per task ------------------------------------------------


async def register_task(
    store: StateStore,
    clock: Clock,
    load_balancers: Sequence[ServiceLoadBalancer],
    task: Task,
    instance: ContainerInstance,
) -> bool:
    """ACTIVATING: register the task with each of the service's target groups. False (nothing
    registered) while some container has not reported the host port of its load-balanced port."""
    targets = task_targets(load_balancers, task, instance)
    if len(targets) < len(load_balancers):
        return False
    for tg_arn, target in targets:
        await registrations.register(store, clock, tg_arn, [target])
    return True


async def deregister_task(
    store: StateStore,
    clock: Clock,
    load_balancers: Sequence[ServiceLoadBalancer],
    task: Task,
    instance: ContainerInstance,
    keep: Collection[tuple[str, int]] = (),
) -> float:
    """DEACTIVATING (or the task died): drain the task's targets; returns when the last drain ends
    (epoch seconds): stop the task at or after that moment. Targets in ``keep`` ((id, port) now
    served by another task: a stopped task's host port taken again) are left alone."""
    deadline = clock.time()
    for tg_arn, target in task_targets(load_balancers, task, instance):
        if (target.id, target.port) in keep:
            continue
        deadline = max(deadline, await registrations.deregister(store, clock, tg_arn, [target]))
    return deadline


# the health of every registered target of some target groups: {tg ARN: {(id, port): health}}
GroupStates = Mapping[str, Mapping[tuple[str, int], TargetHealth]]


async def group_states(store: StateStore, clock: Clock, target_group_arns: Iterable[str]) -> GroupStates:
    """Read once what ``task_health_in`` needs for many tasks (a group that no longer exists: empty)."""
    out: dict[str, dict[tuple[str, int], TargetHealth]] = {}
    for arn in set(target_group_arns):
        states: dict[tuple[str, int], TargetHealth] = {}
        try:
            for _, target, health in await registrations.health(store, clock, arn):
                if target.port is not None:
                    states[(target.id, target.port)] = health
        except ElbError:
            pass
        out[arn] = states
    return out


def task_health_in(
    load_balancers: Sequence[ServiceLoadBalancer],
    task: Task,
    instance: ContainerInstance,
    states: GroupStates,
) -> tuple[str, str | None]:
    """(``healthy`` | ``unhealthy`` | ``initial``, the target group that fails) from ``group_states``
    (PURE): as ``task_health``."""
    targets = task_targets(load_balancers, task, instance)
    if len(targets) < len(load_balancers):
        return INITIAL, None
    verdicts = []
    for tg_arn, target in targets:
        health = states.get(tg_arn, {}).get((target.id, target.port or 0))
        verdicts.append((health.state if health is not None else INITIAL, tg_arn))
    for state, tg_arn in verdicts:
        if state == UNHEALTHY:
            return UNHEALTHY, tg_arn
    return (HEALTHY if all(state == HEALTHY for state, _ in verdicts) else INITIAL), None


async def task_health(
    store: StateStore,
    clock: Clock,
    load_balancers: Sequence[ServiceLoadBalancer],
    task: Task,
    instance: ContainerInstance,
) -> str:
    """``healthy`` when every target of the task is; ``unhealthy`` when one is; else ``initial``
    (registering, checks not decided yet, or draining)."""
    targets = task_targets(load_balancers, task, instance)
    if len(targets) < len(load_balancers):
        return INITIAL
    states = []
    for tg_arn, target in targets:
        [(_, _, health)] = await registrations.health(store, clock, tg_arn, [target])
        states.append(health.state)
    if UNHEALTHY in states:
        return UNHEALTHY
    return HEALTHY if all(s == HEALTHY for s in states) else INITIAL
