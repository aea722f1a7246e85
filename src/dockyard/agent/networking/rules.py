"""Keeps each awsvpc task's ingress rules current.

Four times a second, while the agent runs awsvpc tasks, it asks the server for the resolved rules of
its tasks' groups (``DockyardAgentV1.NetworkRules``) and re-applies a task's nft script only when it
changed, so an authorize or revoke reaches running tasks within a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dockyard.agent.networking.firewall import ruleset, task_rules
from dockyard.agent.networking.pause import Attached, NetworkSetupError, PausePool, nft_apply

log = logging.getLogger("dockyard.agent.networking")

Fetch = Callable[[list[str]], Awaitable[Mapping[str, Any]]]


@dataclass
class _Guarded:
    attached: Attached
    groups: tuple[str, ...]
    applied: str


@dataclass
class TaskNetworking:
    """What the runners use: ``setup`` before the first container, ``teardown`` after the last."""

    pool: PausePool
    fetch: Fetch
    interval: float = 0.25
    _tasks: dict[str, _Guarded] = field(default_factory=dict)
    _resolved: dict[str, Any] = field(default_factory=dict)

    async def setup(self, task_arn: str, eni: Mapping[str, Any], *, adopt: bool = False) -> Attached:
        """The task's namespace with its rules: a new one, or (``adopt``, after a restart) the one
        a previous run attached, its rules applied again."""
        groups = tuple(eni.get("securityGroups") or ())
        missing = [g for g in groups if g not in self._resolved]
        if missing:
            self._resolved.update((await self.fetch(sorted({*self._groups(), *groups})))["groups"])
        script = ruleset(task_rules(groups, self._resolved))
        attached = await self.pool.adopt(eni) if adopt else None
        if attached is not None:
            await nft_apply(attached.pid, script)
        else:
            attached = await self.pool.attach(task_arn, eni, script)
        self._tasks[task_arn] = _Guarded(attached, groups, script)
        return attached

    def keep_only(self, tasks: Iterable[Mapping[str, Any]]) -> None:
        """After a restart, the first desired set: what a previous run left for other tasks goes."""
        self.pool.keep_only(t["networkInterface"] for t in tasks if t.get("networkInterface"))

    def teardown(self, task_arn: str, eni: Mapping[str, Any] | None = None) -> None:
        guarded = self._tasks.pop(task_arn, None)
        if guarded is not None:
            self.pool.release(guarded.attached.pause_id)
        elif eni:
            self.pool.release_left(eni)

    def _groups(self) -> set[str]:
        return {g for t in self._tasks.values() for g in t.groups}

    async def run(self) -> None:
        """Until cancelled; then the warm pool goes, while the namespaces of running tasks stay
        (their containers outlive the agent, which adopts them again when it restarts)."""
        try:
            await self._loop()
        finally:
            self._tasks.clear()
            await self.pool.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self._tasks:
                continue
            try:
                answer = await self.fetch(sorted(self._groups()))
            except Exception as e:  # the server may be away for a while; rules stay as they are
                log.debug("network rules: %s", e)
                continue
            self._resolved.update(answer.get("groups") or {})
            await self.refresh()

    async def refresh(self) -> None:
        for arn, t in list(self._tasks.items()):
            script = ruleset(task_rules(t.groups, self._resolved))
            if script == t.applied:
                continue
            try:
                await nft_apply(t.attached.pid, script)
                t.applied = script
            except NetworkSetupError as e:
                log.warning("task %s: %s", arn, e)


async def start_networking(
    runtime: object,
    client: Any,  # the agent's EcsClient (its call())
    cluster_arn: str,
    instance_arn: str,
    *,
    pool_size: int = 4,
    warm: bool = True,
) -> TaskNetworking | None:
    """awsvpc support for a Docker runtime (None for the simulated one, or when it cannot start);
    ``warm``: fill the pause-container pool now (an instance that takes awsvpc tasks)."""
    from dockyard.agent.runtime.docker import DockerRuntime

    if not isinstance(runtime, DockerRuntime):
        return None

    async def fetch(groups: list[str]) -> Mapping[str, Any]:
        body = {"cluster": cluster_arn, "containerInstanceArn": instance_arn, "securityGroups": groups}
        answer: Mapping[str, Any] = await client.call("DockyardAgentV1.NetworkRules", body)
        return answer

    pool = PausePool(runtime.client, instance_arn, size=pool_size)
    try:
        await pool.start(warm=warm)
    except Exception as e:
        log.warning("awsvpc networking is unavailable on this instance: %s", e)
        return None
    return TaskNetworking(pool, fetch)
