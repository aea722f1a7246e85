"""Committing a decision: every transaction compares the service document's revision and writes it.

- ``commit_service``: the service document alone (rollout state, events), compared and put.
- ``commit_stops``: the tasks to stop (compared on their ``mod_revision`` as the cache read them)
  with the service document, in transactions of at most ``MAX_TXN_OPS`` operations chained on the
  revision each one created; a task the agent can no longer stop is made STOPPED at once and its
  reservation released from its instance's allocation record in the same transaction.
- ``commit_starts``: placement through ``placement.commit.place_tasks`` (the shared seam RunTask
  uses), guarded by the service document's revision, with the service document (and its "has
  started" event) among the transaction's puts. awsvpc services: each task's address is chosen
  first (``placement.addresses``), in the subnets and groups of the task's deployment, and claimed
  (create-only) in the same transaction.

Because the service document is compared *and* written in each of them, two controllers acting on
the same decision cannot both commit: the second one's compare fails, it re-reads and re-decides.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from dockyard.domain.container_instances import Allocation
from dockyard.domain.ec2 import InsufficientFreeAddresses, Subnet
from dockyard.domain.services import PropagateTags, Service
from dockyard.domain.tags import Tag
from dockyard.domain.task_definitions import NetworkMode
from dockyard.domain.task_lifecycle import LOAD_BALANCERS, Merged, request_stop, stop_now
from dockyard.domain.tasks import Task, needs, new_task
from dockyard.placement import addresses, ids, keys
from dockyard.placement.cache import ClusterCache, Entry
from dockyard.placement.commit import PlaceOutcome, encode, place_tasks
from dockyard.scheduler import Failure, Placement, TaskAsk
from dockyard.store.base import MAX_TXN_OPS, Compare, KeyValue, Put, StateStore

from . import events
from .model import NewId, Start, Stop
from .placing import constraints_of, strategy_of

OPS_PER_TASK = 2  # a compare and a put


async def commit_service(store: StateStore, key: str, revision: int, service: Service) -> int:
    """Put ``service`` if its document is still at ``revision``; the new revision."""
    result = await store.txn([Compare.mod_revision(key, revision)], [Put(key, encode(service.to_document()))])
    return result.revision


async def commit_stops(
    store: StateStore,
    scope: keys.Scope,
    key: str,
    revision: int,
    service: Service,
    stops: Sequence[Stop],
    tasks: Mapping[str, Entry[Task]],
    now: float,
) -> int:
    """Stop ``stops`` (tasks as the cache holds them) and write ``service``; the new revision."""
    merged: list[tuple[Entry[Task], Merged]] = []
    for stop in stops:
        entry = tasks.get(stop.task_id)
        if entry is None:
            continue
        task = entry.value
        m = (
            stop_now(task, reason=stop.reason, stop_code=events.SCHEDULER_STOP_CODE, now=now)
            if stop.at_once
            else request_stop(task, reason=stop.reason, stop_code=events.SCHEDULER_STOP_CODE, now=now)
        )
        if m.changed:
            merged.append((entry, m))
    doc = encode(service.to_document())
    # each chunk: its tasks, the allocation records it releases from, and the service document
    budget = (MAX_TXN_OPS - 2) // (2 * OPS_PER_TASK)
    chunks = [merged[i : i + budget] for i in range(0, len(merged), budget)] or [[]]
    for chunk in chunks:
        compares = [Compare.mod_revision(key, revision)]
        puts = [Put(key, doc)]
        released: dict[str, list[str]] = {}
        for entry, m in chunk:
            task_key = keys.task(scope, m.task.id)
            compares.append(Compare.mod_revision(task_key, entry.mod_revision))
            puts.append(Put(task_key, encode(m.task.to_document())))
            if m.released:
                released.setdefault(m.task.instance_id, []).append(m.task.id)
        for instance_id, task_ids in sorted(released.items()):
            alloc_key = keys.allocation(scope, instance_id)
            kv = await store.get(alloc_key)
            if kv is None:
                continue
            allocation = Allocation.from_document(orjson.loads(kv.value))
            compares.append(Compare.unchanged(kv, alloc_key))
            puts.append(Put(alloc_key, encode(allocation.without(task_ids).to_document())))
        revision = (await store.txn(compares, puts)).revision
    return revision


@dataclass(frozen=True)
class Started:
    tasks: list[Task]
    failures: list[Failure]
    asked: int  # how many this transaction tried (the rest is decided again)


def start_budget(instances: int, per_task: int = OPS_PER_TASK) -> int:
    """How many tasks fit in one transaction: a compare and a put per task (twice for awsvpc tasks:
    their address claims), a compare and a put per instance whose allocation record changes, and
    the service document's compare and put."""
    room = MAX_TXN_OPS - 2
    for k in range(room // per_task, 0, -1):
        if per_task * k + OPS_PER_TASK * min(k, max(instances, 1)) <= room:
            return k
    return 1


def task_tags(service: Service, start: Start) -> tuple[Tag, ...]:
    deployment = service.deployment(start.deployment_id)
    tags: dict[str, str] = {}
    if service.propagate_tags is PropagateTags.SERVICE:
        tags.update(service.tags)
    elif service.propagate_tags is PropagateTags.TASK_DEFINITION and deployment is not None:
        tags.update(deployment.task_definition.tags)
    if service.enable_ecs_managed_tags:
        tags["aws:ecs:clusterName"] = service.cluster
        tags["aws:ecs:serviceName"] = service.name
    return tuple(tags.items())


async def commit_starts(
    store: StateStore,
    cache: ClusterCache,
    scope: keys.Scope,
    key: str,
    revision: int,
    service: Service,
    starts: Sequence[Start],
    *,
    instance_arns: Mapping[str, str],
    rng: random.Random,
    now: float,
    new_id: NewId,
    max_events: int,
    max_tasks: int = 1000,
) -> Started:
    """Place and create the tasks ``starts`` ask for, in transactions of ``start_budget`` tasks.

    Each transaction compares the service document's revision; the next one continues from the
    revision the previous one wrote, as long as the document is still the one it wrote (else the
    decision is made again). At most ``max_tasks`` per call, so other services get their turn.
    """
    deployment = service.deployment(starts[0].deployment_id)
    assert deployment is not None and all(s.deployment_id == deployment.id for s in starts)
    td = deployment.task_definition
    need = needs(td, {})
    asks: list[TaskAsk] = []
    for s in starts:
        pinned = instance_arns.get(s.instance_id) if s.instance_id is not None else None
        asks.extend(TaskAsk(need, td.requires_attributes, instance=pinned) for _ in range(s.count))
    asks = asks[:max_tasks]
    # awsvpc: the deployment's own configuration (an older deployment keeps the one it was made with)
    network = service.network_for(deployment) if td.effective_network_mode is NetworkMode.AWSVPC else None
    subnets: list[Subnet] = []
    groups: tuple[str, ...] = ()
    if network is not None:  # awsvpc: every task gets an address in one of the service's subnets
        cfg = network.get("awsvpcConfiguration") or {}
        subnets = await addresses.read_subnets(store, scope.account, scope.region, cfg.get("subnets") or ())
        groups = tuple(cfg.get("securityGroups") or ())
    per_task = 2 * OPS_PER_TASK if network is not None else OPS_PER_TASK
    budget = start_budget(len(cache.instances(scope)), per_task)
    tags = task_tags(service, starts[0])
    strategy, constraints = strategy_of(service), constraints_of(service, td)
    gates = (LOAD_BALANCERS,) if service.load_balancers else ()
    placed: list[Task] = []
    failures: list[Failure] = []
    offset = 0
    current = service
    while offset < len(asks):
        chunk = asks[offset : offset + budget]
        interfaces: addresses.Interfaces | None = None
        plan: addresses.Planned | None = None
        short_of_addresses: str | None = None
        if network is not None:
            planned = await _plan_addresses(store, scope, subnets, groups, len(chunk), rng)
            if isinstance(planned, str):  # no address left: say so, and try again later
                after = events.add(
                    current, [events.launch_failed(service.name, planned)], now, new_id, max_events
                )
                if after != current:
                    await commit_service(store, key, revision, after)
                break
            if len(planned.addresses) < len(chunk):  # the subnet has fewer: these, then the event
                chunk = chunk[: len(planned.addresses)]
                short_of_addresses = f"There are not enough free addresses in subnet {planned.subnet.cidr}."
            plan = planned
        task_ids, container_ids = ids.task_ids(len(chunk), len(td.container_definitions))
        if plan is not None:
            interfaces = addresses.Interfaces(scope, plan, tuple(task_ids))

        def build(
            index: int,
            placement: Placement,
            task_ids: list[str] = task_ids,
            container_ids: list[list[str]] = container_ids,
            interfaces: addresses.Interfaces | None = interfaces,
        ) -> Task:
            entry = cache.instance(scope, placement.instance_id)
            zone = entry.value.attribute_map().get("ecs.availability-zone") if entry else None
            task = new_task(
                region=scope.region,
                account=scope.account,
                cluster=scope.cluster,
                task_id=task_ids[index],
                container_ids=container_ids[index],
                td=td,
                overrides={},
                instance_arn=placement.instance_arn,
                instance_id=placement.instance_id,
                group=service.group,
                service=service.name,
                started_by=deployment.id,
                tags=tags,
                now=now,
                availability_zone=zone,
                gates=gates,
            )
            return task if interfaces is None else interfaces.attach(index, placement, task)

        written: list[tuple[Service, bytes]] = []

        def extra(
            tasks: list[Task],
            failed: list[Failure],
            base: Service = current,
            written: list[tuple[Service, bytes]] = written,
            interfaces: addresses.Interfaces | None = interfaces,
            short: str | None = short_of_addresses,
        ) -> list[Put]:
            after = _noted(base, tasks, failed, now, new_id, max_events)
            if short is not None:
                after = events.add(
                    after, [events.launch_failed(service.name, short)], now, new_id, max_events
                )
            doc = encode(after.to_document())
            written.append((after, doc))
            claims = interfaces.puts(tasks) if interfaces is not None else []
            return [Put(key, doc), *claims]

        outcome: PlaceOutcome = await place_tasks(
            store,
            cache,
            scope,
            chunk,
            build,
            rng=rng,
            guards=[Compare.mod_revision(key, revision), *(interfaces.guards() if interfaces else ())],
            extra_puts=extra,
            group=service.group,
            strategy=strategy,
            constraints=constraints,
        )
        if not outcome.tasks:  # nothing placed: place_tasks wrote nothing; record why (once)
            after = _noted(current, [], outcome.failures, now, new_id, max_events)
            if after != current:
                await commit_service(store, key, revision, after)
            failures = outcome.failures
            break
        placed += outcome.tasks
        offset += len(chunk)
        if outcome.failures:
            failures = outcome.failures
            break
        if short_of_addresses is not None:
            break
        if offset >= len(asks):
            break
        kv = await store.get(key)
        if kv is None or kv.value != written[-1][1]:
            break  # the service changed meanwhile: the next round decides again
        revision, current = kv.mod_revision, written[-1][0]
    return Started(placed, failures, offset)


async def _plan_addresses(
    store: StateStore,
    scope: keys.Scope,
    subnets: Sequence[Subnet],
    groups: Sequence[str],
    count: int,
    rng: random.Random,
) -> addresses.Planned | str:
    """Addresses for up to ``count`` awsvpc tasks in one of ``subnets``, or why there are none."""
    if not subnets:
        return "none of the service's subnets exists any more"
    try:
        return await addresses.plan_addresses(
            store, scope.account, scope.region, subnets, groups, count, rng, partial=True
        )
    except InsufficientFreeAddresses as e:
        return str(e)


def _noted(
    service: Service,
    tasks: Sequence[Task],
    failures: Sequence[Failure],
    now: float,
    new_id: NewId,
    limit: int,
) -> Service:
    """``service`` with the events of one placement: the tasks started, or why some could not be."""
    messages = []
    if tasks:
        messages.append(events.started(service.name, [t.id for t in tasks]))
    if failures or not tasks:
        messages.append(events.unable_to_place(service.name, failures))
    return events.add(service, messages, now, new_id, limit)


def decode_service(kv: KeyValue) -> Service:
    return Service.from_document(orjson.loads(kv.value))
