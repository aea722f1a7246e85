"""Reports to the server: ``DockyardAgentV1.Report``, batched, one sequenced snapshot per task.

Each runner hands over a full snapshot of its task (``task_report``) with a new per-task ``seq``;
a newer snapshot replaces an unsent older one, so a burst of changes costs one report per task.
``Reporter.run`` sends what is pending in batches (after a short gathering delay), keeps it on
failure and retries with backoff, and tells ``on_result(task_arn, seq, accepted)`` what the server
did. The server drops a report whose seq is not above the one it holds (``accepted: false``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from dockyard.agent.task_state import TaskState
from dockyard.client.ecs import ClientError, EcsClient

log = logging.getLogger("dockyard.agent.reporter")


def task_report(task: TaskState) -> dict[str, Any]:
    """The TaskReport of docs/agent-protocol.md for the task as it is now (seq included)."""
    report: dict[str, Any] = {"taskArn": task.arn, "seq": task.seq, "status": task.known.name}
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


def content(report: dict[str, Any]) -> dict[str, Any]:
    """A report without its seq: two reports with equal content need not both be sent."""
    return {k: v for k, v in report.items() if k != "seq"}


class Reporter:
    def __init__(
        self,
        client: EcsClient,
        *,
        cluster_arn: str,
        instance_arn: str,
        on_result: Callable[[str, int, bool], None] | None = None,
        max_batch: int = 100,
        gather_seconds: float = 0.005,
    ) -> None:
        self.client = client
        self.cluster_arn = cluster_arn
        self.instance_arn = instance_arn
        self.on_result = on_result
        self.max_batch = max_batch
        self.gather_seconds = gather_seconds
        self._pending: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, report: dict[str, Any]) -> None:
        current = self._pending.get(report["taskArn"])
        if current is None or current["seq"] < report["seq"]:
            self._pending[report["taskArn"]] = report
            self._idle.clear()
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def drained(self) -> None:
        await self._idle.wait()

    async def run(self) -> None:
        backoff = 0.2
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                await asyncio.sleep(self.gather_seconds)
            batch = list(self._pending.values())[: self.max_batch]
            try:
                answer = await self.client.report(
                    {"cluster": self.cluster_arn, "containerInstanceArn": self.instance_arn, "reports": batch}
                )
            except ClientError as e:
                log.warning("report of %d task(s) failed, retrying in %.1fs: %s", len(batch), backoff, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            results = {r.get("taskArn"): bool(r.get("accepted")) for r in answer.get("results") or ()}
            for sent in batch:
                arn = sent["taskArn"]
                if self._pending.get(arn) is sent:
                    del self._pending[arn]
                if self.on_result is not None:
                    self.on_result(arn, sent["seq"], results.get(arn, True))
