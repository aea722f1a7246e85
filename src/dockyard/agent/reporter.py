"""Reports to the server: batched over a short window, one sequenced snapshot per task.

Each runner hands over a full snapshot of its task (``task_report``) with a new per-task ``seq``;
a newer snapshot replaces an unsent older one, so a burst of changes costs one report per task.
Reports leave in one of two ways (docs/agent-protocol.md section 3):

- riding the engine's next ``Poll`` (``take`` before the poll, ``settle`` with its answer): after
  a desired-set answer the engine waits the report window before polling again (``hold``), so the
  reports its runners publish meanwhile go with that poll and cost no request of their own;
- in a ``Report`` of their own, sent by ``Reporter.run`` while no poll is about to carry them (a
  long-poll is outstanding): with ``at_once`` (the real agent), at once when the last Report left
  at least ``window`` seconds ago, else when it is ``window`` old (so under load reports coalesce,
  one call per window and one in flight at a time); without it (hollow agents at scale), once the
  first pending report has waited ``window`` seconds.

A failed send hands its reports back (unless a newer snapshot of the task is pending) and is
retried with backoff. ``on_result(task_arn, seq, accepted)`` learns what the server did;
``on_revision(revision)`` learns the desired-set revision a Report answer carries. The server drops
a report whose seq is not above the one it holds (``accepted: false``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dockyard.agent.task_state import TaskState
from dockyard.client.ecs import ClientError, EcsClient

log = logging.getLogger("dockyard.agent.reporter")

MAX_BATCH = 256  # the server takes at most 256 reports per call
DEFAULT_WINDOW = 0.1  # seconds a report waits for others before a Report call of its own


def task_report(task: TaskState, *, with_seq: bool = True) -> dict[str, Any]:
    """The TaskReport of docs/agent-protocol.md for the task as it is now (seq included, unless
    ``with_seq`` is False: two reports with equal content need not both be sent)."""
    report: dict[str, Any] = {"taskArn": task.arn, "status": task.known.name}
    if with_seq:
        report["seq"] = task.seq
    for key, value in (
        ("reason", task.stopped_reason),
        ("stopCode", task.stop_code),
        ("pullStartedAt", task.pull_started_at),
        ("pullStoppedAt", task.pull_stopped_at),
        ("startedAt", task.started_at),
        ("executionStoppedAt", task.execution_stopped_at),
    ):
        if value is not None:
            report[key] = value
    report["healthStatus"] = task.health.name
    containers = []
    for c in task.containers.values():
        entry: dict[str, Any] = {
            "name": c.name,
            "status": c.known.reported.name,
            "healthStatus": c.health.name,
        }
        if c.runtime_id:
            entry["runtimeId"] = c.runtime_id
        if c.exit_code is not None:
            entry["exitCode"] = c.exit_code
        if c.reason:
            entry["reason"] = c.reason
        if c.network_bindings:
            entry["networkBindings"] = c.network_bindings
        containers.append(entry)
    report["containers"] = containers
    return report


@dataclass
class ReportStats:
    """Counters of one agent process (hollow agents share one)."""

    polls: int = 0  # Poll calls answered
    report_calls: int = 0  # Report calls answered
    task_reports: int = 0  # task reports the server answered, by either call
    piggybacked: int = 0  # of which rode a Poll
    errors: int = 0  # failed calls (retried)

    def as_json(self) -> dict[str, int]:
        return dict(vars(self))


class Reporter:
    def __init__(
        self,
        client: EcsClient,
        *,
        cluster_arn: str,
        instance_arn: str,
        on_result: Callable[[str, int, bool], None] | None = None,
        on_revision: Callable[[int], None] | None = None,
        max_batch: int = MAX_BATCH,
        window: float = DEFAULT_WINDOW,
        stats: ReportStats | None = None,
        at_once: bool = False,
    ) -> None:
        self.client = client
        self.cluster_arn = cluster_arn
        self.instance_arn = instance_arn
        self.on_result = on_result
        self.on_revision = on_revision
        self.max_batch = max_batch
        self.window = window
        self.at_once = at_once
        self.stats = stats if stats is not None else ReportStats()
        self._pending: dict[str, dict[str, Any]] = {}
        self._sending = 0  # batches taken and not yet settled
        self._held = False  # (hold)
        self._wake = asyncio.Event()  # pending reports, and no poll about to carry them
        self._idle = asyncio.Event()  # nothing pending, nothing in flight
        self._idle.set()

    def submit(self, report: dict[str, Any]) -> None:
        current = self._pending.get(report["taskArn"])
        if current is None or current["seq"] < report["seq"]:
            self._pending[report["taskArn"]] = report
            self._changed()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def drained(self) -> None:
        await self._idle.wait()

    def hold(self) -> None:
        """Until the next ``take``, ``run`` sends nothing: the engine's next poll is about to carry
        the reports (released once they are taken, so they wake no Report of their own)."""
        self._held = True
        self._changed()

    def take(self) -> list[dict[str, Any]]:
        """Up to ``max_batch`` pending reports, to send; ``settle`` them with the answer. Ends a hold."""
        batch = list(itertools.islice(self._pending.values(), self.max_batch))
        for sent in batch:
            del self._pending[sent["taskArn"]]
        if batch:
            self._sending += 1
        if batch or self._held:
            self._held = False
            self._changed()
        return batch

    def settle(
        self, batch: list[dict[str, Any]], answer: dict[str, Any] | None, *, by_poll: bool = False
    ) -> None:
        """The outcome of sending ``batch``: the server's answer, or None when the call failed."""
        if not batch:
            return
        self._sending -= 1
        if answer is None:
            for sent in batch:  # back in the queue, unless a newer snapshot is pending
                current = self._pending.get(sent["taskArn"])
                if current is None or current["seq"] < sent["seq"]:
                    self._pending[sent["taskArn"]] = sent
            self._changed()
            return
        self.stats.task_reports += len(batch)
        if by_poll:
            self.stats.piggybacked += len(batch)
        self._changed()
        results = {r.get("taskArn"): bool(r.get("accepted")) for r in answer.get("results") or ()}
        if self.on_result is not None:
            for sent in batch:
                self.on_result(sent["taskArn"], sent["seq"], results.get(sent["taskArn"], True))

    def _changed(self) -> None:
        if self._pending and not self._held:
            self._wake.set()
        else:
            self._wake.clear()
        if self._pending or self._sending:
            self._idle.clear()
        else:
            self._idle.set()

    async def run(self) -> None:
        backoff = 0.2
        loop = asyncio.get_running_loop()
        last_sent = -math.inf
        while True:
            await self._wake.wait()
            # at once: gather only what is published within a window of the last Report; else what
            # is published within a window of the first pending report
            delay = last_sent + self.window - loop.time() if self.at_once else self.window
            if delay > 0:
                await asyncio.sleep(delay)
            if self._held or not self._pending:
                continue  # a poll carries them (or is about to)
            last_sent = loop.time()
            batch = self.take()
            try:
                answer = await self.client.report(
                    {"cluster": self.cluster_arn, "containerInstanceArn": self.instance_arn, "reports": batch}
                )
            except ClientError as e:
                self.stats.errors += 1
                self.settle(batch, None)
                log.warning("report of %d task(s) failed, retrying in %.1fs: %s", len(batch), backoff, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self.stats.report_calls += 1
            self.settle(batch, answer)
            revision = answer.get("revision")
            if self.on_revision is not None and isinstance(revision, int):
                self.on_revision(revision)
