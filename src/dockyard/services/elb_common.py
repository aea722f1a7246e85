"""Helpers shared by the ELBv2 use cases: paging markers and the load balancer's data-plane state."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson

from dockyard.domain.elb_errors import ValidationError
from dockyard.domain.load_balancers import LoadBalancer
from dockyard.lb import keys
from dockyard.store.base import KeyValue, StateStore

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 400


def encode_marker(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def decode_marker(marker: str | None, prefix: str) -> str | None:
    if not marker:
        return None
    try:
        key = base64.urlsafe_b64decode(marker.encode()).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValidationError("The marker is not valid") from None
    if not key.startswith(prefix):
        raise ValidationError("The marker is not valid")
    return key


async def page(
    store: StateStore,
    prefix: str,
    req: dict[str, Any],
    decode: Callable[[KeyValue], Awaitable[T | None]],
) -> tuple[list[T], str | None]:
    """One page of ``decode(kv)`` results under ``prefix`` (None results are skipped)."""
    size = int(req.get("PageSize") or DEFAULT_PAGE_SIZE)
    cursor = decode_marker(req.get("Marker"), prefix)
    items: list[T] = []
    while True:
        result = await store.list(prefix, start_after=cursor, limit=size)
        for i, kv in enumerate(result.kvs):
            cursor = kv.key
            item = await decode(kv)
            if item is not None:
                items.append(item)
            if len(items) == size:
                more = i < len(result.kvs) - 1 or result.more
                return items, encode_marker(cursor) if more else None
        if not result.more or not result.kvs:
            return items, None


def with_marker(out: dict[str, Any], marker: str | None) -> dict[str, Any]:
    if marker:
        out["NextMarker"] = marker
    return out


async def lb_state(store: StateStore, lb: LoadBalancer, account: str, region: str) -> tuple[str, str | None]:
    """``active`` once its HAProxy serves, ``failed`` (and why) if it cannot, else ``provisioning``."""
    kv = await store.get(keys.dataplane(account, region, lb.name))
    if kv is None:
        return "provisioning", None
    doc = orjson.loads(kv.value)
    if doc.get("address") != lb.address:
        return "provisioning", None
    if doc.get("state") == "active":
        return "active", None
    return "failed", (doc.get("reason") or "The load balancer's data plane did not start")[:1000]


def exclusive(req: dict[str, Any], names: Sequence[str]) -> None:
    given = [n for n in names if req.get(n)]
    if len(given) > 1:
        raise ValidationError(f"{' and '.join(given)} cannot be specified together")
