"""The table from EC2 operation names to use cases (the EC2 protocol's counterpart of
``operations.py``); requests and responses use the ``ec2`` model's member names."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dockyard.services.operations import Handler

EC2_OPERATIONS: dict[str, Handler] = {}


def ec2_operation(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        if name in EC2_OPERATIONS:
            raise RuntimeError(f"EC2 operation {name} registered twice")
        EC2_OPERATIONS[name] = handler
        return handler

    return register


def load_ec2() -> dict[str, Handler]:
    from dockyard.services import ec2_groups, ec2_vpcs  # noqa: F401

    return EC2_OPERATIONS


def matches(wire: Mapping[str, Any], filters: Sequence[Mapping[str, Any]], fields: Mapping[str, str]) -> bool:
    """EC2 ``Filters``: every filter must match one of its values (exact match; ``*`` matches any)."""
    for f in filters:
        name = str(f.get("Name") or "")
        values = [str(v) for v in f.get("Values") or ()]
        if name.startswith("tag:"):
            tags = {t["Key"]: t["Value"] for t in wire.get("Tags") or ()}
            actual: Any = tags.get(name[4:])
        elif name in fields:
            actual = wire.get(fields[name])
        else:
            continue  # filters Dockyard does not know match everything, as moto does
        if isinstance(actual, bool):
            actual = "true" if actual else "false"
        if "*" not in values and str(actual) not in values:
            return False
    return True
