"""What every use case receives: the environment (store, clock, settings) and the request context."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from dockyard.clock import Clock
from dockyard.store.base import StateStore


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``kind`` is "admin" today; "agent" (scoped to ``instance_arn``) next."""

    kind: str
    access_key_id: str
    instance_arn: str | None = None


@dataclass(frozen=True)
class RequestContext:
    account_id: str
    region: str
    principal: Principal
    request_id: str


@dataclass(frozen=True)
class Settings:
    # INACTIVE clusters, INACTIVE/deleted task definitions and STOPPED tasks expire after these.
    inactive_retention_seconds: float = 3600.0
    # The retention loop runs this often and compacts store history older than this many seconds.
    retention_interval_seconds: float = 60.0
    compaction_keep_seconds: float = 600.0
    # An agent that has not polled for this long shows agentConnected: false (its liveness lease).
    agent_timeout_seconds: float = 30.0
    # STOPPED tasks stay describable this long, then the retention sweep removes them.
    stopped_task_retention_seconds: float = 3600.0
    # This server's own URL, answered by DiscoverPollEndpoint ("" when unknown).
    endpoint: str = ""


class IssuedCredentials(Protocol):
    access_key_id: str
    secret_access_key: str


class CredentialIssuer(Protocol):
    """Issues access keys (the api layer's KeyRing); found in ``Env.extras[CREDENTIALS]``."""

    async def issue(self, principal_kind: str, instance_arn: str | None = None) -> IssuedCredentials: ...


CREDENTIALS = "credentials"


@dataclass
class Env:
    store: StateStore
    clock: Clock
    settings: Settings = field(default_factory=Settings)
    extras: dict[str, Any] = field(default_factory=dict)
    # set when the server shuts down: long-polls answer at once instead of holding the shutdown
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


Request = dict[str, Any]
Response = dict[str, Any]
