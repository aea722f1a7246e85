"""The server's cluster cache (``placement.cache``), started on first use and shared by use cases."""

from __future__ import annotations

from dockyard.placement.cache import ClusterCache
from dockyard.placement.keys import Scope
from dockyard.services.context import Env, RequestContext

CACHE = "cluster_cache"


async def cluster_cache(env: Env, *, sync: bool = True) -> ClusterCache:
    """The cache, loaded; with ``sync``, caught up with every write committed before the call."""
    cache: ClusterCache | None = env.extras.get(CACHE)
    if cache is None:
        cache = env.extras[CACHE] = ClusterCache(env.store)
        cache.start()
    await cache.ready()
    if sync:
        await cache.sync()
    return cache


def scope_of(ctx: RequestContext, cluster: str) -> Scope:
    return Scope(ctx.account_id, ctx.region, cluster)
