"""Resource tags as ECS applies them: at most 50 per resource, keys unique, the aws: prefix reserved."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dockyard.domain.errors import InvalidParameter

MAX_TAGS = 50

Tag = tuple[str, str]


def parse_tags(tags: Sequence[Mapping[str, Any]] | None) -> tuple[Tag, ...]:
    """Wire tags ([{key, value}]) to pairs, checking ECS's rules."""
    out: dict[str, str] = {}
    for t in tags or ():
        key = t.get("key")
        if not isinstance(key, str) or not key:
            raise InvalidParameter("Tag keys must be 1 to 128 characters.")
        if key.lower().startswith("aws:"):
            raise InvalidParameter(f"Tag key '{key}' uses the reserved prefix 'aws:'.")
        out[key] = str(t.get("value", ""))
    if len(out) > MAX_TAGS:
        raise InvalidParameter(f"A resource can have at most {MAX_TAGS} tags; got {len(out)}.")
    return tuple(out.items())


def merge_tags(current: Iterable[Tag], added: Iterable[Tag]) -> tuple[Tag, ...]:
    merged = dict(current)
    merged.update(added)
    if len(merged) > MAX_TAGS:
        raise InvalidParameter(f"A resource can have at most {MAX_TAGS} tags; this would make {len(merged)}.")
    return tuple(merged.items())


def remove_tags(current: Iterable[Tag], keys: Iterable[str]) -> tuple[Tag, ...]:
    drop = set(keys)
    return tuple((k, v) for k, v in current if k not in drop)


def tags_to_wire(tags: Iterable[Tag]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags]
