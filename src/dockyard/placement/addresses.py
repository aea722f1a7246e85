"""awsvpc task addresses: chosen by the server and claimed in the same transaction that creates the
tasks, so RunTask, StartTask and the service controller (which places through here too) never hand
one address out twice.

    /ec2/subnets/<account>/<region>/<subnet id>              Subnet (read: its range)
    /ec2/enis/<account>/<region>/<subnet id>/<address>       NetworkInterface: the address claim

A claim is create-only (``Compare.absent``) and lives as long as its task: a claim whose task is
STOPPED or gone is reaped (compare-and-delete) by whoever lists the claims next. It lives here,
below both ``services`` (RunTask, the EC2 API) and ``controller`` (services in awsvpc mode).
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

import orjson

from dockyard.domain.ec2 import NetworkInterface, Subnet, free_addresses, mac_address, pick_addresses
from dockyard.domain.task_eni import eni_document
from dockyard.domain.tasks import Task
from dockyard.placement import keys
from dockyard.scheduler import Placement
from dockyard.store.base import Compare, Conflict, Delete, Put, StateStore


def _scope(account: str, region: str) -> str:
    return f"{account}/{region}/"


def subnet_key(account: str, region: str, subnet_id: str) -> str:
    return f"/ec2/subnets/{_scope(account, region)}{subnet_id}"


def eni_prefix(account: str, region: str, subnet_id: str = "") -> str:
    return f"/ec2/enis/{_scope(account, region)}" + (f"{subnet_id}/" if subnet_id else "")


def eni_key(account: str, region: str, subnet_id: str, address: str) -> str:
    return f"{eni_prefix(account, region, subnet_id)}{address}"


async def read_subnets(
    store: StateStore, account: str, region: str, subnet_ids: Sequence[str]
) -> list[Subnet]:
    """The subnets that still exist among ``subnet_ids``."""
    out = []
    for sid in subnet_ids:
        kv = await store.get(subnet_key(account, region, sid))
        if kv is not None:
            out.append(Subnet.from_doc(orjson.loads(kv.value)))
    return out


async def live_interfaces(
    store: StateStore, account: str, region: str, subnet_id: str = ""
) -> list[NetworkInterface]:
    """Interfaces whose task has not stopped; the claims of stopped or vanished tasks are reaped."""
    result = await store.list(eni_prefix(account, region, subnet_id))
    live = []
    for kv in result.kvs:
        eni = NetworkInterface.from_doc(orjson.loads(kv.value))
        owner = await store.get(eni.task_key)
        # a load balancer's interface lives as long as its document (which has no lastStatus)
        status = orjson.loads(owner.value).get("lastStatus", "ACTIVE") if owner is not None else None
        if status is None or status == "STOPPED":
            with contextlib.suppress(Conflict):
                await store.txn([Compare.mod_revision(kv.key, kv.mod_revision)], [], [Delete(kv.key)])
            continue
        live.append(eni)
    return live


@dataclass(frozen=True)
class Planned:
    """Addresses chosen for the tasks of one request, claimed in the tasks' own transaction."""

    account: str
    region: str
    subnet: Subnet
    addresses: tuple[str, ...]
    groups: tuple[str, ...]

    def guards(self) -> list[Compare]:
        return [Compare.absent(eni_key(self.account, self.region, self.subnet.id, a)) for a in self.addresses]

    def interface(self, index: int, task_arn: str, task_key: str, instance_arn: str) -> NetworkInterface:
        address = self.addresses[index]
        return NetworkInterface(
            id="eni-" + uuid.uuid5(uuid.NAMESPACE_URL, task_arn).hex[:17],
            subnet_id=self.subnet.id,
            vpc_id=self.subnet.vpc_id,
            address=address,
            mac=mac_address(address),
            groups=self.groups,
            task_arn=task_arn,
            task_key=task_key,
            instance_arn=instance_arn,
            zone=self.subnet.zone,
            owner=self.account,
        )

    def put(self, eni: NetworkInterface) -> Put:
        return Put(eni_key(self.account, self.region, eni.subnet_id, eni.address), orjson.dumps(eni.to_doc()))


async def plan_addresses(
    store: StateStore,
    account: str,
    region: str,
    subnets: Sequence[Subnet],
    groups: Sequence[str],
    count: int,
    rng: random.Random,
    *,
    partial: bool = False,
) -> Planned:
    """``count`` free addresses of one of ``subnets`` (chosen at random), not claimed yet; with
    ``partial``, as many as are free if fewer (at least one). ``InsufficientFreeAddresses`` if not."""
    subnet = rng.choice(list(subnets))
    taken = [e.address for e in await live_interfaces(store, account, region, subnet.id)]
    if partial:
        count = max(1, min(count, free_addresses(subnet.cidr, taken)))
    return Planned(
        account, region, subnet, tuple(pick_addresses(subnet.cidr, taken, count, rng)), tuple(groups)
    )


@dataclass(frozen=True)
class Interfaces:
    """The interfaces of the tasks one placement makes: ask ``index`` gets address ``index``."""

    scope: keys.Scope
    planned: Planned
    task_ids: tuple[str, ...]

    def _interface(self, index: int, t: Task, instance_arn: str) -> NetworkInterface:
        return self.planned.interface(index, t.arn, keys.task(self.scope, t.id), instance_arn)

    def attach(self, index: int, placement: Placement, t: Task) -> Task:
        """``t`` (ask ``index``, built for ``placement``) with its interface."""
        eni = self._interface(index, t, placement.instance_arn)
        return replace(t, eni=eni_document(eni, self.planned.subnet, self.planned.region))

    def puts(self, tasks: Sequence[Task]) -> list[Put]:
        """The address claims of the tasks that were placed."""
        return [
            self.planned.put(self._interface(self.task_ids.index(t.id), t, t.container_instance_arn))
            for t in tasks
        ]

    def guards(self) -> list[Compare]:
        return self.planned.guards()
