"""A real ``dockyard agent`` subprocess for end-to-end tests against the real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ServerProcess, wait_until


@dataclass
class AgentProcess:
    server: ServerProcess
    cluster: str
    state_dir: Path
    log_path: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=self.server.access_key,
            AWS_SECRET_ACCESS_KEY=self.server.secret_key,
            AWS_DEFAULT_REGION=self.server.region,
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dockyard.cli.agent_cmd",
                "agent",
                "--server",
                self.server.endpoint,
                "--cluster",
                self.cluster,
                "--state-dir",
                str(self.state_dir),
                "--stop-timeout",
                "2",
                "--image-pull-behavior",
                "prefer-cached",
                "--log-level",
                "debug",
                *self.extra,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def checkpoint(self) -> dict:  # type: ignore[type-arg]
        path = self.state_dir / "checkpoint.json"
        return json.loads(path.read_text()) if path.exists() else {}  # type: ignore[no-any-return]

    def wait_registered(self, previous: str | None = None) -> str:
        def registered() -> str | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}: {self.log()}")
            return self.checkpoint().get("instance", {}).get("containerInstanceArn")

        arn = wait_until(registered, timeout=30, what="agent registration")
        return str(arn)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""
