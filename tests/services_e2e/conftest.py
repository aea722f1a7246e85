"""Fixtures for services end to end: a server with short service timings, real agent processes.

The server settles tasks without health checks after 2 s (ECS: 40 s), backs off failed launches
from 1 s up to 8 s, and replaces tasks of an agent disconnected for 6 s, so the tests run in
seconds; the semantics are the same.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.agent.agent_process import AgentProcess
from tests.conftest import ServerProcess, start_server, wait_until

IMAGE = "dockyard/busybox:latest"
SETTLE = 2.0
SERVICE_FLAGS = (
    "--service-settle-seconds",
    str(SETTLE),
    "--service-backoff-seconds",
    "1",
    "--service-backoff-max-seconds",
    "8",
    "--service-disconnect-grace",
    "6",
    "--agent-timeout",
    "10",
)
FAST = {"Delay": 1, "MaxAttempts": 90}
LIVE = ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING")
# a container that stops at once on SIGTERM (busybox sleep as PID 1 would ignore it)
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


def docker_ok() -> bool:
    try:
        done = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, timeout=20)
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_docker = pytest.mark.skipif(
    not docker_ok(), reason="needs Docker and dockyard/busybox (scripts/docker.sh)"
)


def start_service_server(tmp: Path, *extra: str) -> ServerProcess:
    return start_server(tmp, *SERVICE_FLAGS, *extra)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_service_server(tmp_path_factory.mktemp("services"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def ecs(server: ServerProcess) -> Any:
    return server.client("ecs")


def remove_labelled(label: str) -> None:
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True, timeout=60
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=120)


@pytest.fixture
def cluster(server: ServerProcess, unique: str) -> Iterator[str]:
    arn = server.client("ecs").create_cluster(clusterName=unique)["cluster"]["clusterArn"]  # type: ignore[attr-defined]
    try:
        yield unique
    finally:
        remove_labelled(f"com.amazonaws.ecs.cluster={arn}")


@dataclass
class Agents:
    """Agent processes of one test, all killed at its end."""

    tmp: Path
    started: list[AgentProcess] = field(default_factory=list)

    def spawn(self, server: ServerProcess, cluster: str, name: str = "a", *extra: str) -> AgentProcess:
        agent = AgentProcess(server, cluster, self.tmp / f"agent-{name}", self.tmp / f"agent-{name}.log")
        agent.extra = list(extra)
        agent.start()
        self.started.append(agent)
        return agent


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    made = Agents(tmp_path)
    try:
        yield made
    finally:
        for a in made.started:
            a.kill()


def register(ecs: Any, family: str, command: list[str] | None = None, **container: Any) -> str:
    definition = {
        "name": "main",
        "image": IMAGE,
        "memory": 32,
        "essential": True,
        "command": command or SLEEPER,
    }
    definition.update(container)
    out = ecs.register_task_definition(family=family, containerDefinitions=[definition])
    return str(out["taskDefinition"]["taskDefinitionArn"])


def describe_service(ecs: Any, cluster: str, name: str) -> dict[str, Any]:
    return dict(ecs.describe_services(cluster=cluster, services=[name])["services"][0])


def service_tasks(ecs: Any, cluster: str, name: str, desired: str = "RUNNING") -> list[dict[str, Any]]:
    arns: list[str] = []
    token = None
    while True:
        kw: dict[str, Any] = {"cluster": cluster, "serviceName": name, "desiredStatus": desired}
        if token:
            kw["nextToken"] = token
        page = ecs.list_tasks(**kw)
        arns += page["taskArns"]
        token = page.get("nextToken")
        if not token:
            break
    out: list[dict[str, Any]] = []
    for i in range(0, len(arns), 100):
        out += ecs.describe_tasks(cluster=cluster, tasks=arns[i : i + 100])["tasks"]
    return out


def wait_stable(ecs: Any, cluster: str, name: str) -> dict[str, Any]:
    ecs.get_waiter("services_stable").wait(cluster=cluster, services=[name], WaiterConfig=FAST)
    return describe_service(ecs, cluster, name)


def events_of(ecs: Any, cluster: str, name: str) -> list[str]:
    return [e["message"] for e in describe_service(ecs, cluster, name)["events"]]


@dataclass
class Sample:
    at: float
    live: int
    healthy: int


class Sampler:
    """Counts a service's tasks every ``interval`` seconds in a thread, as a client sees them.

    live = tasks in PROVISIONING..RUNNING (what maximumPercent bounds: "RUNNING or PENDING");
    healthy = RUNNING for at least the settle time (these tasks have no health check). A sample
    that fails (the server is being restarted) is skipped.
    """

    def __init__(
        self, make_client: Callable[[], Any], cluster: str, name: str, interval: float = 0.2
    ) -> None:
        self.make_client = make_client
        self.cluster = cluster
        self.name = name
        self.interval = interval
        self.samples: list[Sample] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        ecs = self.make_client()
        while not self._stop.is_set():
            try:
                tasks = service_tasks(ecs, self.cluster, self.name)
                now = time.time()
                live = [t for t in tasks if t["lastStatus"] in LIVE]
                healthy = [
                    t
                    for t in live
                    if t["lastStatus"] == "RUNNING"
                    and t.get("startedAt")
                    and now - t["startedAt"].timestamp() >= SETTLE
                ]
                self.samples.append(Sample(now, len(live), len(healthy)))
            except Exception:
                self.errors += 1
                ecs = self.make_client()
            self._stop.wait(self.interval)


def containers_of(cluster_arn: str) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.amazonaws.ecs.cluster={cluster_arn}"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()


__all__ = ["LIVE", "SETTLE", "Agents", "Sampler", "wait_until"]
