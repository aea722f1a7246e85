"""The load-balancer reconciler: watches ``/elb/`` and keeps one HAProxy per load balancer in step.

Runs inside the server as a background job (``cli/server_cmd.py``). Level-triggered, informer style::

    list /elb/ -> documents (in memory) <- watch /elb/ from the list's revision (each event wakes us)
    every wake-up or poll interval:
        build_specs(documents, now)                 PURE (lb/model.py)
        subnet addresses                            on their bridges (lb/vpc.py): HAProxy's source
        DataPlane.apply(spec) per load balancer     start | reload | runtime API; restart if dead
        DataPlane.observe(spec)                     show stat -> HealthRecord, written on change
        registrations whose drain ended             deleted (compare-and-swap)
        /elb-dataplane/... status, hosts file       written on change

Its own writes go outside ``/elb/`` (health, status) so they never wake it. With several servers on
one store, exactly one must run this (a lease holder); today every server runs its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from dockyard.clock import Clock
from dockyard.domain.load_balancers import Listener, LoadBalancer, Rule, parse_arn
from dockyard.domain.target_groups import HEALTHY, HealthRecord, Registration, TargetGroup
from dockyard.lb import keys, registrations
from dockyard.lb.config import RenderOptions
from dockyard.lb.dataplane import DataPlane
from dockyard.lb.hosts import write_hosts
from dockyard.lb.model import LbSpec, Snapshot, build_specs, next_deadline
from dockyard.lb.process import remove_directory
from dockyard.lb.records import encode, list_all
from dockyard.lb.settings import LbSettings, resolve_source_ports
from dockyard.lb.vpc import SubnetAddresses, reap_stale
from dockyard.store.base import MAX_TXN_OPS, Compacted, Delete, EventType, KeyValue, Put, StateStore

log = logging.getLogger("dockyard.lb")
_DECODED = (keys.LOAD_BALANCERS, keys.TARGET_GROUPS, keys.LISTENERS, keys.RULES, keys.TARGETS)


def ephemeral_low(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int | None:
    """The first port of the kernel's ephemeral range (None when it cannot be read)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class _Status:
    state: str  # active | failed
    reason: str | None
    address: str
    pid: int | None

    def to_document(self) -> dict[str, object]:
        return {"state": self.state, "reason": self.reason, "address": self.address, "pid": self.pid}


class LoadBalancerReconciler:
    def __init__(self, store: StateStore, clock: Clock, settings: LbSettings) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.options = RenderOptions(
            maxconn=settings.maxconn,
            nbthread=settings.nbthread,
            connect_timeout_ms=settings.connect_timeout_ms,
            source_ports=resolve_source_ports(settings.source_ports, ephemeral_low()),
        )
        self.planes: dict[str, DataPlane] = {}
        self._docs: dict[str, KeyValue] = {}
        self._snapshot = Snapshot()
        self._dirty = True
        self._wake = asyncio.Event()
        self._health: dict[str, HealthRecord] = {}  # what the store holds, by key
        self._statuses: dict[str, _Status] = {}
        self._hosts: dict[str, str] | None = None
        self._next_expiry: float | None = None
        self.subnet_addresses = SubnetAddresses()
        self._sources: dict[str, str] = {}  # load balancer ARN -> its subnet address (placed)

    # ---- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile until cancelled; then stop every HAProxy and remove this server's host lines."""
        try:
            await reap_stale()  # at start: the nft tables and addresses killed servers left go
            while True:
                try:
                    await self._run_once()
                except asyncio.CancelledError:
                    raise
                except Compacted:
                    log.info("load-balancer watch compacted; listing again")
                except Exception:
                    log.exception("load-balancer reconciler failed; starting over")
                    await asyncio.sleep(1.0)
        finally:
            await self.close()

    async def close(self) -> None:
        planes, self.planes = list(self.planes.values()), {}
        await asyncio.gather(*(p.stop() for p in planes), return_exceptions=True)
        self._sources.clear()
        await self.subnet_addresses.close()
        if self._hosts:
            self._write_hosts({})

    async def _run_once(self) -> None:
        page = await self.store.list(keys.ROOT, limit=1)
        revision = page.revision
        self._docs = {kv.key: kv for kv in await list_all(self.store, keys.ROOT)}
        self._health = {
            kv.key: HealthRecord.from_document(orjson.loads(kv.value))
            for kv in await list_all(self.store, keys.HEALTH)
        }
        self._dirty = True
        watcher = asyncio.create_task(self._watch(revision + 1))
        try:
            while True:
                if watcher.done():
                    watcher.result()  # re-raises Compacted or a store error
                    return
                self._wake.clear()  # before the tick: a change arriving during it wakes the next one
                await self.tick()
                timeout = self.settings.poll_interval
                if self._next_expiry is not None:
                    timeout = max(0.0, min(timeout, self._next_expiry - self.clock.time()))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher

    async def _watch(self, from_revision: int) -> None:
        async for event in self.store.watch(keys.ROOT, from_revision):
            if event.type is EventType.PUT:
                self._docs[event.kv.key] = event.kv
            else:
                self._docs.pop(event.kv.key, None)
            self._dirty = True
            self._wake.set()

    # ---- one pass -----------------------------------------------------------------------------

    async def tick(self) -> None:
        if self._dirty:
            self._snapshot = self._decode()
            self._dirty = False
        now = self.clock.time()
        specs = build_specs(self._snapshot, now)
        for arn in [a for a in self.planes if a not in specs]:
            plane = self.planes.pop(arn)
            await plane.stop()
            remove_directory(plane.process.directory)
            await self._forget_status(arn)
        specs = await self._with_sources(specs)
        await asyncio.gather(
            *(self._plane(arn).apply(spec, self._healthy(spec)) for arn, spec in specs.items())
        )
        await self._record_health(specs)
        await self._expire(now)
        await self._record_status(specs)
        self._sync_hosts(specs)

    async def _with_sources(self, specs: dict[str, LbSpec]) -> dict[str, LbSpec]:
        """Each load balancer's subnet address placed on its bridge and made its HAProxy source
        (the loopback address while it cannot be placed); addresses of gone ones removed."""
        for arn in [a for a in self._sources if a not in specs]:
            await self.subnet_addresses.release(self._sources.pop(arn))
        out = {}
        for arn, spec in specs.items():
            att = spec.attachment
            if att is not None and await self.subnet_addresses.ensure(att):
                self._sources[arn] = att.address
                spec = replace(spec, source=att.address)
            out[arn] = spec
        return out

    def _plane(self, arn: str) -> DataPlane:
        plane = self.planes.get(arn)
        if plane is None:
            lb_id = parse_arn(arn, "loadbalancer").parts[2]
            directory = Path(self.settings.state_dir) / lb_id
            plane = self.planes[arn] = DataPlane(self.settings.haproxy, directory, self.options)
        return plane

    def _decode(self) -> Snapshot:
        snap = Snapshot()
        for key, kv in self._docs.items():
            if not key.startswith(_DECODED):
                continue  # create-only claims (addresses, ports, priorities)
            try:
                doc = orjson.loads(kv.value)
                if key.startswith(keys.LOAD_BALANCERS):
                    snap.load_balancers.append(LoadBalancer.from_document(doc))
                elif key.startswith(keys.TARGET_GROUPS):
                    tg = TargetGroup.from_document(doc)
                    snap.target_groups[tg.arn] = tg
                elif key.startswith(keys.LISTENERS):
                    snap.listeners.append(Listener.from_document(doc))
                elif key.startswith(keys.RULES):
                    snap.rules.append(Rule.from_document(doc))
                elif key.startswith(keys.TARGETS):
                    snap.registrations.setdefault(key.split("/")[5], []).append(
                        Registration.from_document(doc)
                    )
            except (KeyError, ValueError, TypeError):
                log.warning("ignoring an unreadable load-balancing document at %s", key)
        regs = [r for group in snap.registrations.values() for r in group]
        self._next_expiry = next_deadline(regs, self.clock.time())
        return snap

    def _health_key(self, spec: LbSpec, backend: str, server: str) -> str | None:
        be = spec.backend(backend)
        if be is None:
            return None
        tg = parse_arn(be.target_group_arn, "targetgroup")
        return keys.health(tg.account, tg.region, tg.parts[1], server)

    def _healthy(self, spec: LbSpec) -> frozenset[tuple[str, str]]:
        out = set()
        for (backend, name), server in spec.servers().items():
            key = self._health_key(spec, backend, name)
            record = self._health.get(key) if key else None
            if (
                record is not None
                and record.state == HEALTHY
                and record.registration_id == server.registration_id
            ):
                out.add((backend, name))
        return frozenset(out)

    async def _record_health(self, specs: dict[str, LbSpec]) -> None:
        puts: list[Put] = []
        changed: dict[str, HealthRecord] = {}
        for arn, spec in specs.items():
            plane = self.planes.get(arn)
            if plane is None:
                continue
            try:
                verdicts = await plane.observe(spec)
            except (OSError, TimeoutError) as e:
                log.debug("load balancer %s: no stats: %s", spec.name, e)
                continue
            for (backend, server), (registration_id, verdict) in verdicts.items():
                key = self._health_key(spec, backend, server)
                if key is None:
                    continue
                record = HealthRecord(registration_id, verdict.state, verdict.reason, verdict.description)
                if self._health.get(key) != record:
                    changed[key] = record
                    puts.append(Put(key, encode(record.to_document())))
        for i in range(0, len(puts), MAX_TXN_OPS):
            await self.store.txn(puts=puts[i : i + MAX_TXN_OPS])
        self._health.update(changed)

    async def _expire(self, now: float) -> None:
        if self._next_expiry is None or now < self._next_expiry:
            return
        for key, kv in list(self._docs.items()):
            if key.startswith(keys.TARGETS) and await registrations.expire(self.store, self.clock, kv):
                self._health.pop(keys.HEALTH + key[len(keys.TARGETS) :], None)
        self._dirty = True  # recompute the next deadline even if the watch has not caught up yet

    async def _record_status(self, specs: dict[str, LbSpec]) -> None:
        for arn, spec in specs.items():
            plane = self.planes[arn]
            status = _Status(
                state="active" if plane.running and plane.error is None else "failed",
                reason=plane.error,
                address=spec.address,
                pid=plane.process.pid if plane.running else None,
            )
            if self._statuses.get(arn) != status:
                parsed = parse_arn(arn, "loadbalancer")
                await self.store.txn(
                    puts=[
                        Put(
                            keys.dataplane(parsed.account, parsed.region, spec.name),
                            encode(status.to_document()),
                        )
                    ]
                )
                self._statuses[arn] = status

    async def _forget_status(self, arn: str) -> None:
        self._statuses.pop(arn, None)
        parsed = parse_arn(arn, "loadbalancer")
        await self.store.txn(deletes=[Delete(keys.dataplane(parsed.account, parsed.region, parsed.parts[1]))])

    def _sync_hosts(self, specs: dict[str, LbSpec]) -> None:
        if not self.settings.hosts_file:
            return
        entries = {spec.dns_name: spec.address for spec in specs.values() if self.planes[spec.arn].running}
        if entries != self._hosts:
            self._write_hosts(entries)

    def _write_hosts(self, entries: dict[str, str]) -> None:
        path = self.settings.hosts_file
        if not path:
            return
        try:
            write_hosts(Path(path), entries, os.getpid())
            self._hosts = entries
        except OSError as e:
            log.warning("cannot write %s (DNS names of load balancers will not resolve): %s", path, e)
            self._hosts = entries
