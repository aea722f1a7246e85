"""The watch-fed membership cache behind ``DockyardAgentV1.NetworkRules``: groups, task and load
balancer interfaces follow the store's writes; an interface counts while its owner lives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from dockyard.domain.ec2 import NetworkInterface, Rule, SecurityGroup
from dockyard.domain.task_status import TaskStatus
from dockyard.placement.keys import Scope
from dockyard.services.ec2_membership import Membership
from dockyard.store.base import Delete, Put
from dockyard.store.memory import MemoryStore

A, R = "000000000000", "us-east-1"
SCOPE = Scope(A, R, "c")


@dataclass
class _Task:
    last_status: TaskStatus


@dataclass
class _Tasks:
    """The two reads ``Membership`` makes of the cluster cache."""

    held: dict[str, _Task] = field(default_factory=dict)
    applied_revision: int = 0

    def task(self, scope: Scope, task_id: str) -> _Task | None:
        return self.held.get(task_id)


def _eni(address: str, groups: tuple[str, ...], owner_key: str) -> NetworkInterface:
    return NetworkInterface(
        id="eni-" + address.replace(".", ""),
        subnet_id="subnet-1",
        vpc_id="vpc-1",
        address=address,
        mac="02:42:00:00:00:00",
        groups=groups,
        task_arn="arn",
        task_key=owner_key,
        instance_arn="",
        zone=R + "a",
        owner=A,
    )


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the cache did not follow")


async def test_membership_follows_groups_interfaces_and_load_balancers() -> None:
    store = MemoryStore()
    cache = Membership(store)
    tasks = _Tasks()
    group = SecurityGroup("sg-1", "web", "d", "vpc-1", A, (Rule("tcp", 80, 80, group_id="sg-lb"),))
    await store.txn([], [Put(f"/ec2/groups/{A}/{R}/sg-1", orjson.dumps(group.to_doc()))])
    cache.start()
    try:
        await cache.ready()
        assert cache.group(A, R, "sg-1") == group and cache.group(A, R, "sg-2") is None
        assert cache.members(A, R, tasks) == {}  # type: ignore[arg-type]

        # a task's interface counts while its task has not stopped
        task_key = f"/tasks/{A}/{R}/c/t1"
        eni_key = f"/ec2/enis/{A}/{R}/subnet-1/10.213.0.9"
        put = await store.txn(
            [], [Put(eni_key, orjson.dumps(_eni("10.213.0.9", ("sg-1",), task_key).to_doc()))]
        )
        await _until(lambda: cache.applied_revision >= put.revision)
        # not in the cluster cache yet, which has not caught up: counts
        assert cache.members(A, R, tasks) == {"sg-1": ["10.213.0.9"]}  # type: ignore[arg-type]
        tasks.applied_revision = put.revision  # caught up, and the task is not there: gone
        assert cache.members(A, R, tasks) == {}  # type: ignore[arg-type]
        tasks.held["t1"] = _Task(TaskStatus.RUNNING)
        assert cache.members(A, R, tasks) == {"sg-1": ["10.213.0.9"]}  # type: ignore[arg-type]
        tasks.held["t1"] = _Task(TaskStatus.STOPPED)
        assert cache.members(A, R, tasks) == {}  # type: ignore[arg-type]

        # a load balancer: its listen address and its interface, while its document exists
        lb_key = f"/elb/load-balancers/{A}/{R}/web"
        lb_eni = f"/ec2/enis/{A}/{R}/subnet-1/10.213.0.20"
        await store.txn(
            [],
            [
                Put(lb_key, orjson.dumps({"address": "127.1.2.3", "securityGroups": ["sg-lb"]})),
                Put(lb_eni, orjson.dumps(_eni("10.213.0.20", ("sg-lb",), lb_key).to_doc())),
            ],
        )
        await _until(lambda: len(cache.members(A, R, tasks).get("sg-lb", [])) == 2)  # type: ignore[arg-type]
        assert sorted(cache.members(A, R, tasks)["sg-lb"]) == ["10.213.0.20", "127.1.2.3"]  # type: ignore[arg-type]

        # a rule authorized on the group shows at once; the load balancer deleted: no member left
        wider = SecurityGroup(
            "sg-1", "web", "d", "vpc-1", A, (*group.ingress, Rule("tcp", 22, 22, cidr="10.0.0.0/8"))
        )
        await store.txn([], [Put(f"/ec2/groups/{A}/{R}/sg-1", orjson.dumps(wider.to_doc()))])
        await _until(lambda: cache.group(A, R, "sg-1") == wider)
        await store.txn([], [], [Delete(lb_key), Delete(lb_eni)])
        await _until(lambda: "sg-lb" not in cache.members(A, R, tasks))  # type: ignore[arg-type]
    finally:
        await cache.close()
        await store.close()
