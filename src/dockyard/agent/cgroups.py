"""The task cgroup parent (cgroup v1, cgroupfs driver): the task's hard CPU and memory limits.

    /sys/fs/cgroup/memory/dockyard/<task-id>/memory.limit_in_bytes   = task memory (MiB)
    /sys/fs/cgroup/cpu/dockyard/<task-id>/cpu.cfs_quota_us           = cpu/1024 * cfs_period_us
    containers: HostConfig.CgroupParent = /dockyard/<task-id>  (Docker makes <task-id>/<container>)

Created before the first container starts, removed (every controller's directory) after the task
stopped. OOM: on cgroup v1 the kill is counted in the victim's own memory cgroup, which runc
removes when the container dies, so the agent reads the task cgroup's counters (``failcnt``,
``oom_control``: ``under_oom``, ``oom_kill``) and Docker's ``OOMKilled`` flag and ``oom`` event;
``oom_verdict`` (pure) decides from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("dockyard.agent.cgroups")

OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
OOM_EXIT_CODE = 137
MIB = 1024 * 1024
MIN_QUOTA_US = 1000


@dataclass(frozen=True)
class OomCounters:
    failcnt: int = 0
    oom_kill: int = 0
    under_oom: int = 0


def oom_verdict(
    exit_code: int | None,
    *,
    docker_oom_flag: bool,
    oom_event_seen: bool,
    before: OomCounters | None,
    after: OomCounters | None,
    stop_requested: bool,
) -> bool:
    """Was this container killed for memory? PURE.

    Only a SIGKILL exit (137) that the agent did not cause: a container the agent was stopping
    gets SIGKILL after its stopTimeout too, and on cgroup v1 a task-level OOM notifies every
    container cgroup under the task (so Docker flags them all ``OOMKilled``). Then any of Docker's
    flag, its ``oom`` event, or the task cgroup's counters rising since the container started.
    """
    if exit_code != OOM_EXIT_CODE or stop_requested:
        return False
    if docker_oom_flag or oom_event_seen:
        return True
    if after is None:
        return False
    base = before or OomCounters()
    return after.oom_kill > base.oom_kill or after.under_oom > 0 or after.failcnt > base.failcnt


def cpu_quota_us(cpu_units: int, period_us: int = 100_000) -> int:
    return max(MIN_QUOTA_US, cpu_units * period_us // 1024)


class TaskCgroups:
    """The cgroup parents of tasks under ``root`` (``/sys/fs/cgroup``), in the ``dockyard`` subtree."""

    def __init__(self, root: Path = Path("/sys/fs/cgroup"), prefix: str = "dockyard") -> None:
        self.root = root
        self.prefix = prefix

    @property
    def available(self) -> bool:
        """cgroup v1 with a writable memory controller."""
        mem = self.root / "memory"
        return (mem / "memory.limit_in_bytes").exists() and (mem / "tasks").exists()

    def parent(self, task_id: str) -> str:
        """The ``CgroupParent`` Docker is given."""
        return f"/{self.prefix}/{task_id}"

    def path(self, controller: str, task_id: str) -> Path:
        return self.root / controller / self.prefix / task_id

    def create(self, task_id: str, *, memory_mib: int | None, cpu_units: int | None) -> None:
        """Create the task's cgroups and write its limits (idempotent)."""
        mem = self.path("memory", task_id)
        cpu = self.path("cpu", task_id)
        mem.mkdir(parents=True, exist_ok=True)
        cpu.mkdir(parents=True, exist_ok=True)
        if memory_mib is not None:
            (mem / "memory.limit_in_bytes").write_text(str(memory_mib * MIB))
        if cpu_units is not None:
            period = int((cpu / "cpu.cfs_period_us").read_text().strip() or 100_000)
            (cpu / "cpu.cfs_quota_us").write_text(str(cpu_quota_us(cpu_units, period)))

    def counters(self, task_id: str) -> OomCounters | None:
        mem = self.path("memory", task_id)
        try:
            failcnt = int((mem / "memory.failcnt").read_text().strip() or 0)
            fields = dict(
                line.split(None, 1) for line in (mem / "memory.oom_control").read_text().splitlines() if line
            )
        except (OSError, ValueError):
            return None
        return OomCounters(
            failcnt=failcnt,
            oom_kill=int(fields.get("oom_kill", "0")),
            under_oom=int(fields.get("under_oom", "0")),
        )

    def remove_now(self, task_id: str) -> bool:
        """rmdir the task's directory under every controller; False if one is still busy."""
        done = True
        if not self.root.is_dir():
            return True
        for controller in self.root.iterdir():
            task_dir = controller / self.prefix / task_id
            if not task_dir.is_dir():
                continue
            # leftover container cgroups (normally runc removes them when the container exits)
            for child in sorted(task_dir.iterdir(), reverse=True):
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            try:
                task_dir.rmdir()
            except OSError as e:
                if e.errno not in (errno.ENOENT,):
                    done = False
        return done

    async def remove(self, task_id: str, attempts: int = 50, interval: float = 0.1) -> None:
        for _ in range(attempts):
            if self.remove_now(task_id):
                return
            await asyncio.sleep(interval)
        log.warning("could not remove the cgroups of task %s (still busy)", task_id)
