"""The table from ELBv2 operation names to use cases (the query protocol's counterpart of
``operations.py``); use cases have the same signature, requests and responses use the ELBv2 model's
member names."""

from __future__ import annotations

from collections.abc import Callable

from dockyard.services.operations import Handler

ELB_OPERATIONS: dict[str, Handler] = {}


def elb_operation(name: str) -> Callable[[Handler], Handler]:
    """Register ``handler`` as the implementation of the ELBv2 operation ``name``."""

    def register(handler: Handler) -> Handler:
        if name in ELB_OPERATIONS:
            raise RuntimeError(f"ELBv2 operation {name} registered twice")
        ELB_OPERATIONS[name] = handler
        return handler

    return register


def load_elb() -> dict[str, Handler]:
    """Import every ELBv2 use-case module so their operations register themselves."""
    from dockyard.services import (  # noqa: F401
        elb_tags,
        listeners,
        load_balancers,
        target_groups,
        targets,
    )

    return ELB_OPERATIONS
