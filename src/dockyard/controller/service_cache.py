"""The service documents, kept current by the store's watch (an informer, like the cluster cache).

``store.list("/services/")`` then ``store.watch("/services/", revision + 1)``; a ``Compacted`` watch
re-lists. Each entry keeps the document's ``mod_revision``: the controller compares it in every
transaction that starts or stops tasks of the service. ``on_change`` is called after each applied
change (the controller's loop uses it as a wake-up).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from dockyard.domain.services import Service
from dockyard.placement import keys
from dockyard.store.base import Compacted, EventType, StateStore, StoreClosed

log = logging.getLogger("dockyard.controller.services")

KIND = "services"
PREFIX = keys.prefix(KIND)


@dataclass(frozen=True)
class ServiceEntry:
    key: str
    scope: keys.Scope
    service: Service
    mod_revision: int


class ServiceCache:
    def __init__(
        self, store: StateStore, on_change: Callable[[], None] = lambda: None, retry_delay: float = 0.5
    ) -> None:
        self._store = store
        self._on_change = on_change
        self._retry_delay = retry_delay
        self.entries: dict[str, ServiceEntry] = {}
        self._applied = 0
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="service-cache")

    async def ready(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None

    @property
    def applied_revision(self) -> int:
        return self._applied

    async def wait_applied(self, revision: int, timeout: float = 10.0) -> None:
        """Wait until the change that made a service document's ``revision`` is applied (the watch
        follows service documents only, so wait for one of theirs, not for any store revision)."""
        if self._applied >= revision:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (revision, next(self._tiebreak), future))
        await asyncio.wait_for(asyncio.shield(future), timeout)

    async def _run(self) -> None:
        while True:
            try:
                listed = await self._store.list(PREFIX)
                self.entries = {}
                for kv in listed.kvs:
                    self._put(kv.key, kv.value, kv.mod_revision)
                self._advance(listed.revision)
                self._ready.set()
                self._on_change()
                async for event in self._store.watch(PREFIX, listed.revision + 1):
                    if event.type is EventType.PUT:
                        self._put(event.kv.key, event.kv.value, event.kv.mod_revision)
                    else:
                        self.entries.pop(event.kv.key, None)
                    self._advance(event.kv.mod_revision)
                    self._on_change()
            except Compacted as e:
                log.info("service cache fell behind compaction (%s); re-listing", e)
            except StoreClosed:
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("service cache watch failed; re-listing")
                await asyncio.sleep(self._retry_delay)

    def _put(self, key: str, value: bytes, mod_revision: int) -> None:
        parsed = keys.parse(key)
        if parsed is None or parsed[0] != KIND:
            return
        try:
            service = Service.from_document(orjson.loads(value))
        except Exception:
            log.exception("service cache: cannot decode %s; ignoring it", key)
            return
        self.entries[key] = ServiceEntry(key, parsed[1], service, mod_revision)

    def _advance(self, revision: int) -> None:
        if revision > self._applied:
            self._applied = revision
        while self._waiters and self._waiters[0][0] <= self._applied:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
