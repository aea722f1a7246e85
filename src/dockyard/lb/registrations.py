"""The seam between ECS and load balancing: register, deregister (drain) and ask the health of targets.

Used by the ELBv2 API (RegisterTargets, DeregisterTargets, DescribeTargetHealth) and by the services
controller for a service's ``loadBalancers``. Only store writes happen here (compare-and-swap); the
load-balancer reconciler (``lb/reconciler.py``) sees them through its watch and drives HAProxy::

    ACTIVATING    register(store, clock, tg_arn, [Target(ec2InstanceId, hostPort, instance privateIp)])
                  then poll health(...) until HEALTHY: only then does the task count toward the
                  deployment's healthy minimum
    RUNNING       health(...) UNHEALTHY past healthCheckGracePeriodSeconds -> replace the task
    DEACTIVATING  deadline = deregister(store, clock, tg_arn, [(id, port)]); stop the task once
                  clock.time() >= deadline (the data plane stopped sending it new requests at once)
    died          deregister(...) as soon as the agent reports the container stopped

Every function is idempotent: registering a registered target keeps its registration (and its
health), deregistering an unknown target does nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import orjson

from dockyard.clock import Clock
from dockyard.domain.load_balancers import parse_arn
from dockyard.domain.target_groups import (
    NOT_REGISTERED,
    Registration,
    TargetHealth,
    describe_health,
    target_key,
)
from dockyard.lb import keys, records
from dockyard.store.base import Compare, Conflict, Delete, KeyValue, Put, StateStore

T = TypeVar("T")
_CHUNK = 40  # targets per transaction: 2 operations each + the target group compare, below 128


@dataclass(frozen=True)
class Target:
    """One target to register. ``address`` is where traffic goes (the host's address for ``instance``)."""

    id: str
    port: int | None = None
    address: str | None = None
    availability_zone: str | None = None


async def _retry(attempt: Callable[[], Awaitable[T]], attempts: int = 32) -> T:
    """Re-read, re-decide and commit again when a compare fails."""
    for _ in range(attempts - 1):
        try:
            return await attempt()
        except Conflict:
            continue
    return await attempt()


def _chunks(items: Sequence[Target], size: int = _CHUNK) -> Iterable[Sequence[Target]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def register(store: StateStore, clock: Clock, target_group_arn: str, targets: Sequence[Target]) -> None:
    """Register ``targets`` (ports default to the group's); a draining target is registered anew."""
    for chunk in _chunks(targets):

        async def attempt(chunk: Sequence[Target] = chunk) -> None:
            tg, tg_kv = await records.target_group(store, target_group_arn)
            parsed = parse_arn(tg.arn, "targetgroup")
            now = clock.time()
            compares = [Compare.unchanged(tg_kv, tg_kv.key)]
            puts: list[Put] = []
            seen: set[str] = set()
            for t in chunk:
                port = t.port or tg.port
                key = keys.target(parsed.account, parsed.region, tg.id, target_key(t.id, port))
                if key in seen:
                    continue
                seen.add(key)
                kv = await store.get(key)
                existing = Registration.from_document(orjson.loads(kv.value)) if kv else None
                if existing is not None and existing.drain_until is None:
                    continue
                fresh = Registration(
                    target_id=t.id,
                    port=port,
                    address=t.address or t.id,
                    registered_at=now,
                    registration_id=secrets.token_hex(8),
                    availability_zone=t.availability_zone,
                )
                compares.append(Compare.unchanged(kv, key))
                puts.append(Put(key, records.encode(fresh.to_document())))
            if puts:
                await store.txn(compares, puts)

        await _retry(attempt)


async def deregister(
    store: StateStore, clock: Clock, target_group_arn: str, targets: Sequence[Target]
) -> float:
    """Start draining ``targets``; returns when the last of them stops existing (epoch seconds).

    With a deregistration delay of 0, or when no listener uses the group, targets go at once.
    """
    deadline = clock.time()
    for chunk in _chunks(targets):

        async def attempt(chunk: Sequence[Target] = chunk) -> float:
            tg, _ = await records.target_group(store, target_group_arn)
            parsed = parse_arn(tg.arn, "targetgroup")
            now = clock.time()
            until = now + tg.deregistration_delay() if tg.in_use() else now
            latest = now
            compares: list[Compare] = []
            puts: list[Put] = []
            deletes: list[Delete] = []
            for t in chunk:
                key = keys.target(parsed.account, parsed.region, tg.id, target_key(t.id, t.port or tg.port))
                kv = await store.get(key)
                if kv is None or any(c.key == key for c in compares):
                    continue
                reg = Registration.from_document(orjson.loads(kv.value))
                if reg.drain_until is not None:
                    latest = max(latest, reg.drain_until)
                    continue
                compares.append(Compare.unchanged(kv, key))
                if until <= now:
                    deletes.append(Delete(key))
                    deletes.append(Delete(keys.health(parsed.account, parsed.region, tg.id, reg.key)))
                else:
                    puts.append(Put(key, records.encode(replace(reg, drain_until=until).to_document())))
                    latest = max(latest, until)
            if puts or deletes:
                await store.txn(compares, puts, deletes)
            return latest

        deadline = max(deadline, await _retry(attempt))
    return deadline


async def health(
    store: StateStore, clock: Clock, target_group_arn: str, targets: Sequence[Target] | None = None
) -> list[tuple[Registration | None, Target, TargetHealth]]:
    """The health of ``targets`` (default: every registered target) as DescribeTargetHealth tells it."""
    tg, _ = await records.target_group(store, target_group_arn)
    now = clock.time()
    registered = {reg.key: reg for reg, _ in await records.registrations(store, tg) if not reg.gone(now)}
    observed = await records.health_records(store, tg)
    out: list[tuple[Registration | None, Target, TargetHealth]] = []
    if targets is None:
        for key, reg in sorted(registered.items()):
            target = Target(reg.target_id, reg.port, reg.address, reg.availability_zone)
            out.append((reg, target, describe_health(reg, tg.in_use(), observed.get(key), now)))
        return out
    for t in targets:
        if t.port is None:  # every registration of this id
            matches = [r for r in registered.values() if r.target_id == t.id]
            if not matches:
                out.append((None, t, NOT_REGISTERED))
            for reg in matches:
                target = Target(reg.target_id, reg.port, reg.address, reg.availability_zone)
                out.append((reg, target, describe_health(reg, tg.in_use(), observed.get(reg.key), now)))
            continue
        found = registered.get(target_key(t.id, t.port))
        key = target_key(t.id, t.port)
        out.append((found, t, describe_health(found, tg.in_use(), observed.get(key), now)))
    return out


async def expire(store: StateStore, clock: Clock, kv: KeyValue) -> bool:
    """Remove a registration whose drain ended (and its health record); False if it changed meanwhile."""
    reg = Registration.from_document(orjson.loads(kv.value))
    if not reg.gone(clock.time()):
        return False
    account, region = keys.scope_of(kv.key)
    tg_id = kv.key.split("/")[5]
    try:
        await store.txn(
            [Compare.unchanged(kv, kv.key)],
            deletes=[Delete(kv.key), Delete(keys.health(account, region, tg_id, reg.key))],
        )
    except Conflict:
        return False
    return True
