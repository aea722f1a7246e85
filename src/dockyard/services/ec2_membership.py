"""Security groups and who is in them, kept current by the store's watch (an informer, as the
cluster cache), so ``DockyardAgentV1.NetworkRules`` (every agent with awsvpc tasks asks 4 times a
second) reads memory, not the store.

    /ec2/groups/<account>/<region>/<group id>                SecurityGroup
    /ec2/enis/<account>/<region>/<subnet id>/<address>       NetworkInterface (tasks' and LBs')
    /elb/load-balancers/<account>/<region>/<name>            LoadBalancer (its groups, its address)

``list`` then ``watch`` from the revision the list read, per prefix; a ``Compacted`` watch re-lists.
An interface counts while its owner lives: a task the cluster cache holds and that has not STOPPED
(one the cluster cache has not caught up with yet counts too), a load balancer whose document
exists. Claims of stopped tasks are left to the readers that reap them (``placement.addresses``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from dockyard.domain.ec2 import NetworkInterface, SecurityGroup
from dockyard.domain.task_status import TaskStatus
from dockyard.lb import keys as lb_keys
from dockyard.placement import keys
from dockyard.placement.cache import ClusterCache
from dockyard.services.context import Env
from dockyard.store.base import Compacted, EventType, StateStore, StoreClosed

log = logging.getLogger("dockyard.services.ec2")

EXTRAS_KEY = "ec2_membership"
EC2 = "/ec2/"
GROUPS, ENIS = "groups", "enis"


@dataclass(frozen=True)
class _LoadBalancer:
    address: str
    groups: tuple[str, ...]


@dataclass
class _Region:
    groups: dict[str, SecurityGroup]
    enis: dict[str, tuple[NetworkInterface, int]]  # key -> (interface, mod_revision)
    lbs: dict[str, _LoadBalancer]  # key -> its address and groups


class Membership:
    def __init__(self, store: StateStore, retry_delay: float = 0.5) -> None:
        self._store = store
        self._retry_delay = retry_delay
        self._regions: dict[tuple[str, str], _Region] = {}
        self._listed: dict[str, asyncio.Event] = {
            EC2: asyncio.Event(),
            lb_keys.LOAD_BALANCERS: asyncio.Event(),
        }
        self._runners: list[asyncio.Task[None]] = []
        self.applied_revision = 0

    def start(self) -> None:
        if not self._runners:
            loop = asyncio.get_running_loop()
            self._runners = [loop.create_task(self._follow(p), name=f"membership {p}") for p in self._listed]

    async def ready(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._listed.values())), timeout)

    async def close(self) -> None:
        for r in self._runners:
            r.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        self._runners = []

    # -- reads -----------------------------------------------------------------------------------

    def group(self, account: str, region: str, group_id: str) -> SecurityGroup | None:
        found = self._regions.get((account, region))
        return found.groups.get(_group_key(account, region, group_id)) if found else None

    def members(self, account: str, region: str, tasks: ClusterCache) -> dict[str, list[str]]:
        """Each group's member addresses: live task interfaces, load balancers' interfaces and
        listen addresses."""
        out: dict[str, list[str]] = {}
        found = self._regions.get((account, region))
        if found is None:
            return out
        for eni, mod_revision in found.enis.values():
            if not self._live(found, eni, mod_revision, tasks):
                continue
            for g in eni.groups:
                out.setdefault(g, []).append(eni.address)
        for lb in found.lbs.values():
            for g in lb.groups:
                out.setdefault(g, []).append(lb.address)
        return out

    @staticmethod
    def _live(found: _Region, eni: NetworkInterface, mod_revision: int, tasks: ClusterCache) -> bool:
        if eni.task_key.startswith(lb_keys.LOAD_BALANCERS):
            return eni.task_key in found.lbs
        parsed = keys.parse(eni.task_key)
        if parsed is None:
            return False
        task = tasks.task(parsed[1], parsed[2])
        if task is None:  # gone, or made after what the cluster cache applied so far
            return tasks.applied_revision < mod_revision
        return task.last_status is not TaskStatus.STOPPED

    # -- the watches -----------------------------------------------------------------------------

    async def _follow(self, prefix: str) -> None:
        while True:
            try:
                listed = await self._store.list(prefix)
                for region in self._regions.values():
                    _clear(region, prefix)
                for kv in listed.kvs:
                    self._put(kv.key, kv.value, kv.mod_revision)
                self._advance(listed.revision)
                self._listed[prefix].set()
                async for event in self._store.watch(prefix, listed.revision + 1):
                    if event.type is EventType.PUT:
                        self._put(event.kv.key, event.kv.value, event.kv.mod_revision)
                    else:
                        self._delete(event.kv.key)
                    self._advance(event.kv.mod_revision)
            except Compacted as e:
                log.info("security group membership fell behind compaction (%s); re-listing", e)
            except StoreClosed:
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("security group membership watch failed; re-listing")
                await asyncio.sleep(self._retry_delay)

    def _advance(self, revision: int) -> None:
        self.applied_revision = max(self.applied_revision, revision)

    def _region(self, account: str, region: str) -> _Region:
        found = self._regions.get((account, region))
        if found is None:
            found = self._regions[(account, region)] = _Region({}, {}, {})
        return found

    def _put(self, key: str, value: bytes, mod_revision: int) -> None:
        where = _where(key)
        if where is None:
            return
        kind, account, region = where
        try:
            doc: Mapping[str, Any] = orjson.loads(value)
            r = self._region(account, region)
            if kind == GROUPS:
                r.groups[key] = SecurityGroup.from_doc(doc)
            elif kind == ENIS:
                r.enis[key] = (NetworkInterface.from_doc(doc), mod_revision)
            else:
                r.lbs[key] = _LoadBalancer(str(doc.get("address")), tuple(doc.get("securityGroups") or ()))
        except Exception:
            log.exception("security group membership: cannot decode %s; ignoring it", key)

    def _delete(self, key: str) -> None:
        where = _where(key)
        if where is None:
            return
        r = self._regions.get(where[1:])
        if r is not None:
            r.groups.pop(key, None)
            r.enis.pop(key, None)
            r.lbs.pop(key, None)


def _group_key(account: str, region: str, group_id: str) -> str:
    return f"{EC2}{GROUPS}/{account}/{region}/{group_id}"


def _where(key: str) -> tuple[str, str, str] | None:
    """(groups | enis | lbs, account, region) of a key this cache follows; None for the others."""
    if key.startswith(lb_keys.LOAD_BALANCERS):
        parts = key[len(lb_keys.LOAD_BALANCERS) :].split("/")
        return ("lbs", parts[0], parts[1]) if len(parts) == 3 else None
    parts = key[len(EC2) :].split("/") if key.startswith(EC2) else []
    if len(parts) >= 4 and parts[0] in (GROUPS, ENIS):
        return parts[0], parts[1], parts[2]
    return None


def _clear(region: _Region, prefix: str) -> None:
    if prefix == EC2:
        region.groups.clear()
        region.enis.clear()
    else:
        region.lbs.clear()


async def membership(env: Env) -> Membership:
    """The process's membership cache, started on first use and loaded."""
    found: Membership | None = env.extras.get(EXTRAS_KEY)
    if found is None:
        found = env.extras[EXTRAS_KEY] = Membership(env.store)
        found.start()
    await found.ready()
    return found
