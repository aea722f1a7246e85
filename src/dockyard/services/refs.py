"""Resolving what a request names (an id or an ARN) inside one cluster, and list page tokens."""

from __future__ import annotations

import base64

from dockyard.domain import arns
from dockyard.domain.errors import InvalidParameter
from dockyard.services.context import RequestContext


def _scoped_id(ctx: RequestContext, cluster: str, parsed: arns.ClusterScoped) -> str | None:
    if parsed.arn is not None and (parsed.arn.region, parsed.arn.account) != (ctx.region, ctx.account_id):
        return None
    if parsed.cluster is not None and parsed.cluster != cluster:
        return None
    return parsed.id


def instance_id(ctx: RequestContext, cluster: str, ref: str) -> str | None:
    """The id of the container instance ``ref`` names in ``cluster``; None if it names another."""
    try:
        return _scoped_id(ctx, cluster, arns.parse_container_instance(ref))
    except InvalidParameter:
        return None


def task_id(ctx: RequestContext, cluster: str, ref: str) -> str | None:
    """The id of the task ``ref`` names in ``cluster``; None if it names another."""
    try:
        return _scoped_id(ctx, cluster, arns.parse_task(ref))
    except InvalidParameter:
        return None


def instance_arn(ctx: RequestContext, cluster: str, ref: str) -> str:
    """``ref`` as a container instance ARN (as given when it already is one)."""
    if arns.is_arn(ref):
        return ref
    return arns.container_instance_arn(ctx.region, ctx.account_id, cluster, ref)


def task_arn(ctx: RequestContext, cluster: str, ref: str) -> str:
    """``ref`` as a task ARN (as given when it already is one)."""
    if arns.is_arn(ref):
        return ref
    return arns.task_arn(ctx.region, ctx.account_id, cluster, ref)


def encode_token(last: str) -> str:
    """A nextToken that continues after ``last`` (an id)."""
    return base64.urlsafe_b64encode(last.encode()).decode()
