"""Attribute use cases: PutAttributes, DeleteAttributes, ListAttributes (target type
``container-instance``, the only one ECS has).

Attributes live in the instance's registration document, next to those its agent registered, and
are written with compare-and-swap on that document only: the allocation record placement compares
is never touched, so an attribute change never conflicts with a placement. The cluster cache picks
the change up from the watch and the next decision's ``memberOf`` and ``spread`` see it.

A target is a container instance ARN, or its id with ``targetType`` given; a deregistered (INACTIVE)
or unknown instance is ``TargetNotFoundException``. An instance carries at most 10 custom
attributes (names outside ``ecs.`` and ``com.amazonaws.ecs.``, which the agent registers), else
``AttributeLimitExceededException``. Names are 1-128 letters, digits, ``-_./\\``; values 1-128
letters, digits, ``-_.@/\\:`` and inner spaces, as ECS's ``Attribute`` documents them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson

from dockyard.domain.container_instances import Attribute, ContainerInstance, InstanceStatus
from dockyard.domain.errors import AttributeLimitExceeded, InvalidParameter, TargetNotFound
from dockyard.placement.commit import encode
from dockyard.services import keys, refs
from dockyard.services.cluster_state import cluster_cache, scope_of
from dockyard.services.clusters import decode_token, require_active_cluster
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.operations import operation
from dockyard.services.retry import retry_on_conflict
from dockyard.store.base import Compare, Put

CONTAINER_INSTANCE = "container-instance"
MAX_PER_CALL = 10
MAX_CUSTOM = 10
DEFAULT_MAX_RESULTS = 100
BUILT_IN_PREFIXES = ("ecs.", "com.amazonaws.ecs.")
_NAME = re.compile(r"^[A-Za-z0-9_./\\-]{1,128}$")
_VALUE = re.compile(r"^[A-Za-z0-9_.@/\\: -]{1,128}$")


def _custom(name: str) -> bool:
    return not name.startswith(BUILT_IN_PREFIXES)


def _check(item: Mapping[str, Any], where: str, *, with_value: bool) -> None:
    name = str(item.get("name") or "")
    if not _NAME.match(name):
        raise InvalidParameter(
            f"{where}.name '{name[:130]}' is invalid: use 1 to 128 letters, numbers, hyphens, underscores, "
            "periods, forward or back slashes."
        )
    value = item.get("value")
    if with_value and value is not None:
        text = str(value)
        if not _VALUE.match(text) or text != text.strip():
            raise InvalidParameter(
                f"{where}.value for '{name}' is invalid: use 1 to 128 letters, numbers, hyphens, "
                "underscores, periods, at signs, slashes, colons or inner spaces."
            )
    target_type = item.get("targetType")
    if target_type is not None and target_type != CONTAINER_INSTANCE:
        raise InvalidParameter(f"{where}.targetType must be {CONTAINER_INSTANCE}.")


def _target(ctx: RequestContext, cluster: str, item: Mapping[str, Any], where: str) -> str:
    """The instance id the attribute targets."""
    ref = str(item.get("targetId") or "")
    if not ref:
        raise InvalidParameter(f"{where}.targetId is required.")
    if not ref.startswith("arn:") and item.get("targetType") != CONTAINER_INSTANCE:
        raise InvalidParameter(f"{where}.targetType is required when targetId is not an ARN.")
    instance_id = refs.instance_id(ctx, cluster, ref)
    if not instance_id:
        raise TargetNotFound(f"Could not find container instance '{ref[:300]}' in cluster {cluster}.")
    return instance_id


def _wire(instance: ContainerInstance, name: str, value: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "targetId": instance.arn, "targetType": CONTAINER_INSTANCE}
    if value is not None:
        out["value"] = value
    return out


async def _change(env: Env, ctx: RequestContext, req: Request, *, put: bool) -> list[dict[str, Any]]:
    items = list(req["attributes"])
    if not 1 <= len(items) <= MAX_PER_CALL:
        raise InvalidParameter(f"attributes must list 1 to {MAX_PER_CALL} attributes.")
    cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
    scope = scope_of(ctx, cluster.name)
    by_instance: dict[str, list[tuple[str, str | None]]] = {}
    for i, item in enumerate(items):
        where = f"attributes[{i}]"
        _check(item, where, with_value=put)
        instance_id = _target(ctx, cluster.name, item, where)
        value = item.get("value") if put else None
        by_instance.setdefault(instance_id, []).append((str(item["name"]), value))
    applied: list[dict[str, Any]] = []
    for instance_id, changes in by_instance.items():
        instance = await _apply(env, scope, instance_id, changes, put=put, cluster=cluster.name)
        applied += [_wire(instance, name, value) for name, value in changes]
    return applied


async def _apply(
    env: Env,
    scope: keys.Scope,
    instance_id: str,
    changes: list[tuple[str, str | None]],
    *,
    put: bool,
    cluster: str,
) -> ContainerInstance:
    async def attempt() -> ContainerInstance:
        key = keys.instance(scope, instance_id)
        kv = await env.store.get(key)
        instance = ContainerInstance.from_document(orjson.loads(kv.value)) if kv is not None else None
        if kv is None or instance is None or instance.status is InstanceStatus.INACTIVE:
            raise TargetNotFound(f"Could not find container instance '{instance_id}' in cluster {cluster}.")
        attributes: dict[str, str | None] = dict(instance.attributes)
        for name, value in changes:
            if put:
                attributes[name] = value
            else:
                attributes.pop(name, None)
        if put and sum(1 for n in attributes if _custom(n)) > MAX_CUSTOM:
            raise AttributeLimitExceeded(
                f"A container instance can have at most {MAX_CUSTOM} custom attributes; remove some with "
                "DeleteAttributes first."
            )
        new_attributes: tuple[Attribute, ...] = tuple(attributes.items())
        if new_attributes != instance.attributes:
            changed = replace(instance, attributes=new_attributes)
            await env.store.txn([Compare.unchanged(kv, key)], [Put(key, encode(changed.to_document()))])
            return changed
        return instance

    return await retry_on_conflict(attempt)


@operation("PutAttributes")
async def put_attributes(env: Env, ctx: RequestContext, req: Request) -> Response:
    return {"attributes": await _change(env, ctx, req, put=True)}


@operation("DeleteAttributes")
async def delete_attributes(env: Env, ctx: RequestContext, req: Request) -> Response:
    return {"attributes": await _change(env, ctx, req, put=False)}


@operation("ListAttributes")
async def list_attributes(env: Env, ctx: RequestContext, req: Request) -> Response:
    if req.get("targetType") != CONTAINER_INSTANCE:
        raise InvalidParameter(f"targetType must be {CONTAINER_INSTANCE}.")
    name = req.get("attributeName")
    value = req.get("attributeValue")
    if value is not None and not name:
        raise InvalidParameter("attributeValue needs attributeName.")
    limit = req.get("maxResults") or DEFAULT_MAX_RESULTS
    if not 1 <= limit <= DEFAULT_MAX_RESULTS:
        raise InvalidParameter(f"maxResults must be between 1 and {DEFAULT_MAX_RESULTS}; got {limit}.")
    after = decode_token(req.get("nextToken"))
    cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
    scope = scope_of(ctx, cluster.name)
    cache = await cluster_cache(env)
    found: list[tuple[str, ContainerInstance, str, str | None]] = []
    for entry in cache.instances(scope):
        instance = entry.value
        if instance.status is InstanceStatus.INACTIVE:
            continue
        for attr_name, attr_value in instance.attributes:
            if (name and attr_name != name) or (value is not None and attr_value != value):
                continue
            position = f"{instance.id}\x00{attr_name}"
            if after is None or position > after:
                found.append((position, instance, attr_name, attr_value))
    found.sort(key=lambda f: f[0])
    page = found[:limit]
    out: Response = {"attributes": [_wire(i, n, v) for _, i, n, v in page]}
    if len(found) > limit:
        out["nextToken"] = refs.encode_token(page[-1][0])
    return out
