"""Reading load-balancing documents by ARN: the store side shared by the ELBv2 API and the seam."""

from __future__ import annotations

import orjson

from dockyard.domain.elb_errors import (
    ListenerNotFound,
    LoadBalancerNotFound,
    RuleNotFound,
    TargetGroupNotFound,
)
from dockyard.domain.load_balancers import Listener, LoadBalancer, Rule, parse_arn
from dockyard.domain.target_groups import HealthRecord, Registration, TargetGroup
from dockyard.lb import keys
from dockyard.store.base import KeyValue, StateStore


def encode(doc: object) -> bytes:
    return orjson.dumps(doc)


async def load_balancer(store: StateStore, arn: str) -> tuple[LoadBalancer, KeyValue]:
    parsed = parse_arn(arn, "loadbalancer")
    kv = await store.get(keys.load_balancer(parsed.account, parsed.region, parsed.parts[1]))
    if kv is not None:
        lb = LoadBalancer.from_document(orjson.loads(kv.value))
        if lb.arn == arn:
            return lb, kv
    raise LoadBalancerNotFound(f"Load balancer '{arn}' not found")


async def target_group(store: StateStore, arn: str) -> tuple[TargetGroup, KeyValue]:
    parsed = parse_arn(arn, "targetgroup")
    kv = await store.get(keys.target_group(parsed.account, parsed.region, parsed.parts[0]))
    if kv is not None:
        tg = TargetGroup.from_document(orjson.loads(kv.value))
        if tg.arn == arn:
            return tg, kv
    raise TargetGroupNotFound(f"Target group '{arn}' not found")


async def listener(store: StateStore, arn: str) -> tuple[Listener, KeyValue]:
    parsed = parse_arn(arn, "listener")
    _, _, lb_id, listener_id = parsed.parts
    kv = await store.get(keys.listener(parsed.account, parsed.region, lb_id, listener_id))
    if kv is not None:
        found = Listener.from_document(orjson.loads(kv.value))
        if found.arn == arn:
            return found, kv
    raise ListenerNotFound(f"Listener '{arn}' not found")


async def rule(store: StateStore, arn: str) -> tuple[Rule, KeyValue]:
    parsed = parse_arn(arn, "listener-rule")
    _, _, _, listener_id, rule_id = parsed.parts
    kv = await store.get(keys.rule(parsed.account, parsed.region, listener_id, rule_id))
    if kv is not None:
        found = Rule.from_document(orjson.loads(kv.value))
        if found.arn == arn:
            return found, kv
    raise RuleNotFound(f"Rule '{arn}' not found")


async def list_all(store: StateStore, prefix: str) -> list[KeyValue]:
    out: list[KeyValue] = []
    cursor: str | None = None
    while True:
        page = await store.list(prefix, start_after=cursor, limit=500)
        out.extend(page.kvs)
        if not page.more or not page.kvs:
            return out
        cursor = page.kvs[-1].key


async def registrations(store: StateStore, tg: TargetGroup) -> list[tuple[Registration, KeyValue]]:
    parsed = parse_arn(tg.arn, "targetgroup")
    kvs = await list_all(store, keys.targets_prefix(parsed.account, parsed.region, tg.id))
    return [(Registration.from_document(orjson.loads(kv.value)), kv) for kv in kvs]


async def health_records(store: StateStore, tg: TargetGroup) -> dict[str, HealthRecord]:
    """The data plane's observations of the group's targets, by target key."""
    parsed = parse_arn(tg.arn, "targetgroup")
    prefix = keys.health_prefix(parsed.account, parsed.region, tg.id)
    kvs = await list_all(store, prefix)
    return {kv.key[len(prefix) :]: HealthRecord.from_document(orjson.loads(kv.value)) for kv in kvs}
