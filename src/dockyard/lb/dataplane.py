"""Drives one load balancer's HAProxy toward its ``LbSpec`` and reports what HAProxy observes.

``apply(spec)`` is level-triggered and cheap when nothing changed::

    process not running      start it with every server; servers not known healthy rendered
                             ``disabled`` (they come in through their checks, as new targets do)
    structure changed        seamless reload (listeners, rules, target groups, check settings)
    servers differ           runtime API commands (``plan``): add, drain, re-enable, delete

``observe()`` reads ``show stat`` and returns a verdict per registration (``observe.judge``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from dockyard.domain.target_groups import HEALTHY
from dockyard.lb.config import Paths, RenderOptions, render, source_arg
from dockyard.lb.model import LbSpec
from dockyard.lb.observe import Verdict, judge, parse_servers_state, parse_stat
from dockyard.lb.plan import plan
from dockyard.lb.process import HaproxyError, HaproxyProcess

log = logging.getLogger("dockyard.lb")
MAX_BACKOFF = 10.0


@dataclass
class _Tracker:
    registration_id: str
    ever_up: bool = False


class DataPlane:
    def __init__(self, binary: str, directory: Path, options: RenderOptions) -> None:
        self.process = HaproxyProcess(binary, directory)
        self.options = options
        self.paths = Paths(
            admin_socket=str(self.process.socket_path), state_file=str(self.process.state_file)
        )
        self.structure: LbSpec | None = None
        self.applied: LbSpec | None = None
        self.error: str | None = None
        self.starts = 0
        self._trackers: dict[tuple[str, str], _Tracker] = {}
        self._failures = 0
        self._retry_at = 0.0

    @property
    def running(self) -> bool:
        return self.process.alive()

    async def apply(self, spec: LbSpec, healthy: frozenset[tuple[str, str]] = frozenset()) -> None:
        """Converge; ``healthy`` names servers the store last saw healthy (used when starting).

        After a failure (an address in use, a refused configuration) it waits before trying again,
        doubling the wait up to ``MAX_BACKOFF`` seconds."""
        now = time.monotonic()
        if self.error is not None and now < self._retry_at:
            return
        try:
            if not self.process.alive():
                if self.starts:
                    log.warning("haproxy of %s is not running; starting it again", spec.name)
                await self._start(spec, healthy)
            elif spec.structure() != self.structure:
                await self._reload(spec)
            if spec != self.applied:
                await self._converge(spec)
            self.error = None
            self._failures = 0
        except (HaproxyError, OSError, TimeoutError) as e:
            self.error = str(e)[:1000]
            self.applied = None
            self._failures += 1
            self._retry_at = now + min(MAX_BACKOFF, 0.5 * 2 ** (self._failures - 1))
            log.error("load balancer %s: %s", spec.name, self.error)

    async def _start(self, spec: LbSpec, healthy: frozenset[tuple[str, str]]) -> None:
        def known_healthy(backend: str, server: str) -> bool:
            tracker = self._trackers.get((backend, server))
            return (backend, server) in healthy or (tracker is not None and tracker.ever_up)

        self.structure = None
        self.applied = None
        await self.process.start(render(spec, self.paths, self.options, known_healthy))
        self.starts += 1
        self.structure = spec.structure()

    async def _reload(self, spec: LbSpec) -> None:
        """Servers the running process has keep their state (through the state file); servers it
        does not have yet are rendered ``disabled`` and brought in through their checks."""
        dump = await self.process.admin.send("show servers state")
        present = parse_servers_state(dump)
        config = render(spec, self.paths, self.options, lambda b, s: (b, s) in present)
        await self.process.reload(config, dump)
        self.structure = spec.structure()
        self.applied = None

    async def _converge(self, spec: LbSpec) -> None:
        observed = parse_servers_state(await self.process.admin.send("show servers state"))
        failed = False
        for command in plan(spec, observed, source_arg(spec, self.options)):
            answer = (await self.process.admin.send(command)).strip()
            if answer and not answer.startswith(("New server registered", "Server deleted")):
                # e.g. "del server" refused while idle connections remain: tried again next tick
                failed = True
                log.info("load balancer %s: %r -> %s", spec.name, command, answer[:300])
        self.applied = None if failed else spec

    async def observe(self, spec: LbSpec) -> dict[tuple[str, str], tuple[str, Verdict]]:
        """{(backend, server): (registration id, verdict)} for servers that are not draining."""
        if not self.process.alive():
            return {}
        stats = parse_stat(await self.process.admin.send("show stat"))
        out: dict[tuple[str, str], tuple[str, Verdict]] = {}
        live: set[tuple[str, str]] = set()
        for be in spec.backends:
            for server in be.servers:
                key = (be.name, server.name)
                live.add(key)
                stat = stats.get(key)
                if stat is None or server.draining:
                    continue
                tracker = self._trackers.get(key)
                if tracker is None or tracker.registration_id != server.registration_id:
                    tracker = self._trackers[key] = _Tracker(server.registration_id)
                verdict = judge(stat, tracker.ever_up, be.health_check.unhealthy_threshold)
                if verdict.state == HEALTHY:
                    tracker.ever_up = True
                out[key] = (server.registration_id, verdict)
        for key in set(self._trackers) - live:
            del self._trackers[key]
        return out

    async def stop(self) -> None:
        await self.process.stop()
