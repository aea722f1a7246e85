"""The agent's local checkpoint: ``<state dir>/checkpoint.json``, written atomically.

Format version 1 (a fixture of every version lives in ``tests/agent/fixtures/``)::

    {"version": 1,
     "instance": {"instanceId": "i-...", "containerInstanceArn": "...", "clusterArn": "...",
                  "cluster": "name"},
     "pulledImages": ["image:tag", ...],                       (for --image-pull-behavior once)
     "tasks": {"<task arn>": {"task": {AgentTask, its taskDefinition embedded},
                              "desiredStatus": "RUNNING", "knownStatus": "RUNNING", "seq": 5,
                              "stopCode": null, "stoppedReason": null, "pullStartedAt": 1.0, ...,
                              "cleanupAt": null,
                              "containers": {"web": {"runtimeId": "...", "known": "RUNNING",
                                                     "started": true, "exitCode": null, ...}}}}}

Container runtime names are derived from the task id, so nothing must be checkpointed before a
create; after a crash the container is found by its labels and name. Writes are coalesced: a
runner marks its task dirty, ``CheckpointWriter.run`` writes at most every ``interval`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.agent.task_spec import task_from_wire
from dockyard.agent.task_state import ContainerPhase, TaskState
from dockyard.domain.task_status import HealthStatus, TaskStatus

log = logging.getLogger("dockyard.agent.checkpoint")

VERSION = 1
FILE_NAME = "checkpoint.json"


class CheckpointError(Exception):
    pass


def new_instance_id() -> str:
    return "i-" + secrets.token_hex(9)[:17]


def dump_task(task: TaskState, cleanup_at: float | None = None) -> dict[str, Any]:
    return {
        "task": task.wire,
        "desiredStatus": task.desired.name,
        "knownStatus": task.known.name,
        "seq": task.seq,
        "stopCode": task.stop_code,
        "stoppedReason": task.stopped_reason,
        "pullStartedAt": task.pull_started_at,
        "pullStoppedAt": task.pull_stopped_at,
        "startedAt": task.started_at,
        "executionStoppedAt": task.execution_stopped_at,
        "cleanupAt": cleanup_at,
        "containers": {
            c.name: {
                "runtimeId": c.runtime_id,
                "known": c.known.name,
                "started": c.started,
                "exitCode": c.exit_code,
                "reason": c.reason,
                "health": c.health.name,
                "networkBindings": c.network_bindings,
                "startedAt": c.started_at,
                "finishedAt": c.finished_at,
            }
            for c in task.containers.values()
        },
    }


def load_task(doc: dict[str, Any]) -> TaskState:
    task = task_from_wire(doc["task"])
    task.desired = TaskStatus[doc.get("desiredStatus") or "RUNNING"]
    task.known = TaskStatus[doc.get("knownStatus") or "PENDING"]
    task.seq = int(doc.get("seq") or 0)
    task.stop_code = doc.get("stopCode")
    task.stopped_reason = doc.get("stoppedReason")
    task.pull_started_at = doc.get("pullStartedAt")
    task.pull_stopped_at = doc.get("pullStoppedAt")
    task.started_at = doc.get("startedAt")
    task.execution_stopped_at = doc.get("executionStoppedAt")
    for name, c_doc in (doc.get("containers") or {}).items():
        c = task.containers.get(name)
        if c is None:
            continue
        c.runtime_id = c_doc.get("runtimeId")
        c.known = ContainerPhase[c_doc.get("known") or "NONE"]
        c.started = bool(c_doc.get("started"))
        c.exit_code = c_doc.get("exitCode")
        c.reason = c_doc.get("reason")
        c.health = HealthStatus[c_doc.get("health") or "UNKNOWN"]
        c.network_bindings = list(c_doc.get("networkBindings") or [])
        c.started_at = c_doc.get("startedAt")
        c.finished_at = c_doc.get("finishedAt")
    return task


@dataclass
class Checkpoint:
    path: Path
    instance: dict[str, Any] = field(default_factory=dict)
    pulled_images: set[str] = field(default_factory=set)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    sync: bool = True  # fsync every write (hollow agents skip it: their containers die with them)

    @classmethod
    def load(cls, state_dir: Path, *, sync: bool = True) -> Checkpoint:
        path = state_dir / FILE_NAME
        if not path.exists():
            return cls(path=path, instance={"instanceId": new_instance_id()}, sync=sync)
        try:
            doc = json.loads(path.read_text())
        except ValueError as e:
            raise CheckpointError(f"{path}: not JSON: {e}") from e
        version = doc.get("version")
        if version != VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {version!r} is not {VERSION}")
        instance = dict(doc.get("instance") or {})
        instance.setdefault("instanceId", new_instance_id())
        return cls(
            path=path,
            instance=instance,
            pulled_images=set(doc.get("pulledImages") or ()),
            tasks=dict(doc.get("tasks") or {}),
            sync=sync,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "instance": self.instance,
            "pulledImages": sorted(self.pulled_images),
            "tasks": self.tasks,
        }

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        data = json.dumps(self.to_json(), separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


class CheckpointWriter:
    """Coalesces writes: at most one every ``interval`` seconds, and one at close.

    With ``tasks=False`` (hollow agents, whose simulated containers do not outlive the process)
    tasks are not checkpointed at all: only the instance's identity is, at registration."""

    def __init__(self, checkpoint: Checkpoint, interval: float = 0.2, *, tasks: bool = True) -> None:
        self.checkpoint = checkpoint
        self.interval = interval
        self.tasks = tasks
        self._dirty = asyncio.Event()

    def put_task(self, task: TaskState, cleanup_at: float | None = None) -> None:
        if self.tasks:
            self.checkpoint.tasks[task.arn] = dump_task(task, cleanup_at)
            self._dirty.set()

    def forget(self, task_arn: str) -> None:
        if self.checkpoint.tasks.pop(task_arn, None) is not None:
            self._dirty.set()

    def touch(self) -> None:
        self._dirty.set()

    def flush(self) -> None:
        self._dirty.clear()
        try:
            self.checkpoint.save()
        except OSError as e:
            log.error("could not write the checkpoint %s: %s", self.checkpoint.path, e)

    async def run(self) -> None:
        try:
            while True:
                await self._dirty.wait()
                self.flush()
                await asyncio.sleep(self.interval)
        finally:
            if self._dirty.is_set():
                self.flush()
