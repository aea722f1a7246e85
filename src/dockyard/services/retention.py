"""Retention: expire INACTIVE and deleted objects, then compact the store's history.

Runs in the server as a background loop so long benchmarks and long-lived servers do not grow the
store without bound. Compaction keeps ``compaction_keep_seconds`` of history for watchers to catch up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from dockyard.services import clusters, container_instances, services, task_definitions, tasks
from dockyard.services.context import Env

log = logging.getLogger("dockyard.retention")


async def sweep(env: Env) -> int:
    """One pass: remove what has been INACTIVE/deleted (or STOPPED) for longer than its retention."""
    now = env.clock.time()
    cutoff = now - env.settings.inactive_retention_seconds
    removed = await clusters.expire_clusters(env, cutoff)
    removed += await task_definitions.expire_task_definitions(env, cutoff)
    removed += await container_instances.expire_instances(env, cutoff)
    removed += await tasks.expire_tasks(env, now - env.settings.stopped_task_retention_seconds)
    removed += await services.expire_services(env, cutoff)
    return removed


async def run(env: Env) -> None:
    """Sweep and compact forever, every ``retention_interval_seconds``."""
    samples: deque[tuple[float, int]] = deque()
    while True:
        try:
            removed = await sweep(env)
            now = env.clock.monotonic()
            samples.append((now, await env.store.revision()))
            # compact to the newest revision that is older than the keep window
            target = 0
            while samples and samples[0][0] <= now - env.settings.compaction_keep_seconds:
                target = samples.popleft()[1]
            if target > await env.store.compacted_revision():
                await env.store.compact(target)
            if removed:
                log.info("retention removed %d expired objects", removed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention sweep failed")
        await asyncio.sleep(env.settings.retention_interval_seconds)
