"""Optimistic concurrency: re-read, re-decide and retry a transaction when a compare fails."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dockyard.domain.errors import ServerError
from dockyard.store.base import Conflict

T = TypeVar("T")

MAX_ATTEMPTS = 64


async def retry_on_conflict(attempt: Callable[[], Awaitable[T]], *, attempts: int = MAX_ATTEMPTS) -> T:
    """Run ``attempt`` (which reads, decides and commits) until it commits without a conflict."""
    for n in range(attempts):
        try:
            return await attempt()
        except Conflict:
            if n >= 2:
                # jittered backoff so colliding writers spread out; the first retries are immediate
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**n)))
    raise ServerError("too many concurrent updates; retry the request")
