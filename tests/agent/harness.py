"""Run an in-process Engine against the fake control plane (fake_server.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dockyard.agent.engine import AgentSettings, Engine
from dockyard.agent.runtime.base import ContainerRuntime, PullBehavior
from dockyard.client.sigv4 import Credentials

from .fake_server import FakeControlPlane


async def until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def settings(server: str, state_dir: Path, **kw: Any) -> AgentSettings:
    base: dict[str, Any] = {
        "server": server,
        "cluster": "test",
        "state_dir": state_dir,
        "region": "us-east-1",
        "credentials": Credentials("AKIDTEST", "secret"),
        "cpu_units": 2048,
        "memory_mib": 4096,
        "pull_behavior": PullBehavior.PREFER_CACHED,
        "default_stop_timeout": 2,
        "task_cleanup_wait": 3600.0,
        "poll_wait": 2.0,
        "cgroup_root": None,
        "port_range": (62000, 62999),
    }
    base.update(kw)
    return AgentSettings(**base)


class RunningAgent:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.job: asyncio.Task[None] = asyncio.create_task(engine.run())

    @property
    def arn(self) -> str:
        return self.engine.instance_arn

    async def started(self) -> RunningAgent:
        await asyncio.wait_for(self.engine.registered.wait(), 10)
        return self

    async def crash(self) -> None:
        """Stop abruptly, as close to kill -9 as one process allows: no goodbye, containers stay."""
        self.job.cancel()
        await asyncio.gather(self.job, return_exceptions=True)
        await self.engine.client.close()


async def start_agent(
    fake: FakeControlPlane, runtime: ContainerRuntime, state_dir: Path, **kw: Any
) -> RunningAgent:
    return await RunningAgent(Engine(settings(fake.endpoint, state_dir, **kw), runtime)).started()


def busybox(*containers: dict[str, Any], **task: Any) -> dict[str, Any]:
    defs = []
    for c in containers:
        d = {"image": "dockyard/busybox:latest", "memory": 64, "essential": True, **c}
        defs.append(d)
    return {"containerDefinitions": defs, **task}
