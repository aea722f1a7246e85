"""The table from ECS operation names to use cases.

A use case is ``async def handler(env, ctx, request) -> response`` where request and response are
the operation's wire shapes (already validated against botocore's model by the api layer). Agent-only
operations are registered under their full target (``DockyardAgentV1.Poll``) and validate by hand.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dockyard.services.context import Env, Request, RequestContext, Response

Handler = Callable[[Env, RequestContext, Request], Awaitable[Response]]

OPERATIONS: dict[str, Handler] = {}


def operation(name: str) -> Callable[[Handler], Handler]:
    """Register ``handler`` as the implementation of the ECS operation ``name``."""

    def register(handler: Handler) -> Handler:
        if name in OPERATIONS:
            raise RuntimeError(f"operation {name} registered twice")
        OPERATIONS[name] = handler
        return handler

    return register


def load_all() -> dict[str, Handler]:
    """Import every use-case module so their operations register themselves."""
    from dockyard.services import (  # noqa: F401
        agent_protocol,
        attributes,
        clusters,
        container_instances,
        services,
        tags,
        task_definitions,
        tasks,
    )

    return OPERATIONS
