"""Shared fixtures: a real ``dockyard server`` process and clients for it (boto3, the AWS CLI)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as e:  # keep polling; report the last failure at the deadline
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last error: {last_exc!r}")


@dataclass
class ServerProcess:
    endpoint: str
    port: int
    state_dir: Path
    access_key: str
    secret_key: str
    region: str = REGION
    proc: subprocess.Popen[bytes] | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None

    def start(self) -> None:
        assert self.log_path is not None
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dockyard.cli.main", "server", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self.healthy, timeout=30, what="dockyard server health")

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
        try:
            with urllib.request.urlopen(f"{self.endpoint}/_dockyard/health", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path and self.log_path.exists() else ""

    def client(self, service: str = "ecs", **kwargs: object) -> object:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(retries={"max_attempts": 2, "mode": "standard"}),
            **kwargs,  # type: ignore[arg-type]
        )

    def cli_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            AWS_SHARED_CREDENTIALS_FILE=str(self.state_dir / "credentials"),
            AWS_CONFIG_FILE=str(self.state_dir / "config"),
            AWS_PROFILE="dockyard",
        )
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
            env.pop(k, None)
        return env


def start_server(tmp: Path, *extra: str, access_key: str = "AKIDTESTADMIN0000001") -> ServerProcess:
    port = free_port()
    state = tmp / "state"
    env = dict(os.environ)
    env.update(DOCKYARD_ACCESS_KEY_ID=access_key, DOCKYARD_SECRET_ACCESS_KEY="test-secret-" + access_key)
    srv = ServerProcess(
        endpoint=f"http://127.0.0.1:{port}",
        port=port,
        state_dir=state,
        access_key=access_key,
        secret_key="test-secret-" + access_key,
        args=["--host", "127.0.0.1", "--port", str(port), "--state-dir", str(state), *extra],
        env=env,
        log_path=tmp / "server.log",
    )
    srv.start()
    return srv


@pytest.fixture(scope="session")
def dockyard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the session; tests must use unique names (e.g. from ``unique``)."""
    srv = start_server(tmp_path_factory.mktemp("dockyard"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for tests that restart or kill it."""
    srv = start_server(tmp_path)
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def ecs(dockyard_server: ServerProcess):  # type: ignore[no-untyped-def]
    return dockyard_server.client("ecs")


_counter = iter(range(1, 1_000_000))


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A name no other test uses."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60].strip("-")
    return f"{base}-{next(_counter)}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the warm pause containers of agents the tests killed with -9 (an agent removes only its
    own pool on a clean stop, and a dead agent's pool only when a later agent starts on the engine)."""
    from dockyard.agent.networking.pause import LABEL_OWNER, owner_gone, process_id

    try:
        listed = subprocess.run(
            [
                "docker",
                "ps",
                "-a",
                "--filter",
                f"label={LABEL_OWNER}",
                "--format",
                '{{.ID}} {{.Label "' + LABEL_OWNER + '"}}',
            ],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return  # no Docker here: nothing was started
    me = process_id()
    dead = [line.split(" ", 1)[0] for line in listed if " " in line and owner_gone(line.split(" ", 1)[1], me)]
    if dead:
        subprocess.run(["docker", "rm", "-f", *dead], capture_output=True, timeout=60)
