"""Coalescing: concurrent requests that would compare-and-swap the same record commit as one batch.

When many requests of one process update the same hot record (RegisterTaskDefinition bumping a
family's revision counter), one-transaction-per-request makes all but one of them fail the compare
in every commit and retry. A ``Coalescer`` instead queues requests per key and runs one drainer task
per key: it takes up to ``max_batch`` queued items, calls ``commit(key, items)`` (which reads once,
decides for the whole batch, and commits one transaction that compares the record once), answers
every caller of the batch once that call returns, and repeats while items are queued. So one batch
per key is in flight, and whatever arrives meanwhile forms the next batch, much as the store's group
commit does for fsyncs.

``commit`` stays responsible for optimistic concurrency across processes: on a conflict it re-reads
and retries the whole batch (``retry_on_conflict``). An exception it raises fails every caller of
that batch; a caller that is cancelled while queued is left out of its batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)  # what requests coalesce on (e.g. account, region, family)
T = TypeVar("T")  # one request's item
R = TypeVar("R")  # one request's result


class Coalescer(Generic[K, T, R]):
    """Per key, one batch in flight; ``submit`` returns the item's result once its batch committed."""

    def __init__(self, commit: Callable[[K, Sequence[T]], Awaitable[Sequence[R]]], *, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit = commit
        self._max_batch = max_batch
        self._queues: dict[K, list[tuple[T, asyncio.Future[R]]]] = {}
        self._drainers: dict[K, asyncio.Task[None]] = {}
        self.batches = 0  # batches committed or failed (for tests and metrics)

    async def submit(self, key: K, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = []
            self._drainers[key] = loop.create_task(self._drain(key, queue))
        queue.append((item, future))
        return await future

    async def _drain(self, key: K, queue: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            while queue:
                taken = queue[: self._max_batch]
                del queue[: self._max_batch]
                batch = [(item, future) for item, future in taken if not future.done()]
                if batch:
                    await self._run(key, batch)
        finally:
            # Normally no await since the loop saw ``queue`` empty, so nothing was queued meanwhile;
            # when cancelled (the loop is shutting down), nobody will answer what is still queued.
            for _, future in queue:
                future.cancel()
            del self._queues[key]
            del self._drainers[key]

    async def _run(self, key: K, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        try:
            results = await self._commit(key, [item for item, _ in batch])
            answers = list(zip(batch, results, strict=True))
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is shutting down): nobody will answer them
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in answers:
            if not future.done():
                future.set_result(result)
