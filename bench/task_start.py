#!/usr/bin/env python3
"""Task start: Dockyard's RunTask -> RUNNING against ``docker run -d`` of the same image, one run.

Issue 3, item 11. The script starts a fresh ``dockyard server`` (temporary state directory, a fixed
admin key pair) and one ``dockyard agent`` on this machine's Docker, creates cluster ``bench``,
registers a busybox task definition (``sleep 3600``, container memory 32 MiB) and waits for the
container instance. Then, in one run:

1. **Sequential** (``--tasks``, default 20, after ``--warmup`` untimed rounds): per round one
   Dockyard task, one ``docker run -d`` and one Docker Engine API create+start of the same image and
   command, interleaved so that the three see the same machine. Dockyard is client-observed: from
   the RunTask call until DescribeTasks (polled every ``--poll-ms``) says RUNNING; each task is then
   stopped and waited STOPPED, each docker container removed. ``docker run -d`` is the CLI's wall
   time (the goal's reference); the Engine API figure (keep-alive unix socket, no CLI) is the
   floor any agent on this engine could reach, shown for the diagnosis.
2. **Burst** (``--burst``, default 50 = five RunTask calls of count 10, issued concurrently unless
   ``--burst-mode back-to-back``): from the first call until DescribeTasks (every
   ``--burst-poll-ms``) shows every task RUNNING, against 50 parallel ``docker run -d`` (from the
   first launch until the last exits); ``--burst-rounds`` pairs, alternating which side goes first,
   the median round judged.
3. **Agent memory**: PSS (``/proc/PID/smaps_rollup``) of the agent process idle (registered, no
   task yet), with the burst's 50 tasks running, and idle again at the end.

It prints a table (p50/p95, Dockyard/docker ratios, goals: p50 <= 1.1x ``docker run -d``; burst <=
1.2x the parallel docker runs; agent <= 50 MiB PSS idle), a breakdown of where Dockyard's time goes
per task (from the task's createdAt, pullStartedAt, pullStoppedAt and startedAt, all taken on this
machine's clock), the load average, the commit measured (and how many files under src/ differ from
it), and a final line ``BENCH_JSON {...}``.

The agent runs with ``--image-pull-behavior prefer-cached`` (the image is local; no registry is
reachable and nothing may leave the machine) and ``--stop-timeout 1``. Every process this script
starts runs in its own process group and is stopped in ``finally`` (also on Ctrl-C / SIGTERM); every
container it caused is removed by label (the task family, unique per run, and ``--label
dockyard-bench=<run id>`` on the docker runs). Traffic goes only to 127.0.0.1 and the Docker socket.

Run: ``.venv/bin/python bench/task_start.py [--tasks 20] [--burst 50] [--burst-rounds 3]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import http.client
import json
import math
import os
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from procs import free_port, spawn, stop

REGION = "us-east-1"
CLUSTER = "bench"
IMAGE = "dockyard/busybox:latest"
COMMAND = ["sleep", "3600"]
CONTAINER_MEMORY_MIB = 32
BENCH_LABEL = "dockyard-bench"  # on the containers this script runs itself (docker run, Engine API)
FAMILY_LABEL = "com.amazonaws.ecs.task-definition-family"
DOCKER_API = "/v1.41"
DOCKER_TIMEOUT_S = 120.0  # a docker run -d or API call that takes longer fails the run
MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
# the image is local: nothing may be pulled from outside the machine
AGENT_FLAGS = ("--stop-timeout", "1", "--image-pull-behavior", "prefer-cached")

P50_GOAL = 1.1  # Dockyard p50 <= 1.1x docker run -d
BURST_GOAL = 1.2  # the burst <= 1.2x the parallel docker runs
PSS_GOAL_MIB = 50.0  # agent PSS idle

# --------------------------------------------------------------------------------------------------
# Processes


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except RuntimeError:
            raise
        except Exception as exc:  # keep trying until the deadline; report the last failure
            last = repr(exc)
        time.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what} {last}".rstrip())


MEMORY_FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Private_Dirty", "Shared_Clean")


def memory_kib(pid: int) -> dict[str, int]:
    """Fields of ``/proc/PID/smaps_rollup`` (``MEMORY_FIELDS``), KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB" and parts[0].rstrip(":") in MEMORY_FIELDS:
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def code_version() -> dict[str, Any]:
    """The commit measured and how many files under src/ differ from it (a shared tree moves)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": head, "src_files_changed": len(dirty)}


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


# --------------------------------------------------------------------------------------------------
# Docker: the CLI (the goal's reference) and the Engine API (the floor, and cleanup)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = DOCKER_TIMEOUT_S) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        raise SystemExit(f"DOCKER_HOST={host}: this benchmark talks to a local unix socket only")
    return host[len("unix://") :]


class DockerApi:
    """A keep-alive Engine API connection over the unix socket (stdlib only)."""

    def __init__(self) -> None:
        self.path = docker_socket()
        self.conn = _UnixConnection(self.path)

    def close(self) -> None:
        self.conn.close()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            try:
                self.conn.request(method, DOCKER_API + path, body=payload, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError) as exc:  # a dropped keep-alive: retry once
                self.conn.close()
                self.conn = _UnixConnection(self.path)
                if attempt == 2:
                    raise RuntimeError(f"Docker Engine at {self.path}: {method} {path}: {exc!r}") from exc
        return resp.status, (json.loads(data) if data.strip() else None)

    def create_start(self, labels: dict[str, str]) -> str:
        status, body = self.call(
            "POST", "/containers/create", {"Image": IMAGE, "Cmd": COMMAND, "Labels": labels}
        )
        if status != 201:
            raise RuntimeError(f"docker create: {status} {body}")
        cid = str(body["Id"])
        status, body = self.call("POST", f"/containers/{cid}/start")
        if status not in (204, 304):
            raise RuntimeError(f"docker start: {status} {body}")
        return cid

    def remove(self, cid: str) -> None:
        self.call("DELETE", f"/containers/{cid}?force=1&v=1")

    def ids_with_label(self, label: str) -> list[str]:
        filters = json.dumps({"label": [label]})
        status, body = self.call("GET", "/containers/json?all=1&filters=" + urllib.parse.quote(filters))
        return [str(c["Id"]) for c in body or ()] if status == 200 else []

    def remove_labelled(self, label: str) -> int:
        ids = self.ids_with_label(label)
        for cid in ids:
            with contextlib.suppress(Exception):
                self.remove(cid)
        return len(ids)


def docker_run_cmd(run_id: str) -> list[str]:
    return ["docker", "run", "-d", "--label", f"{BENCH_LABEL}={run_id}", IMAGE, *COMMAND]


def docker_run(run_id: str) -> tuple[float, str]:
    """One ``docker run -d`` (CLI wall time, seconds) and its container id."""
    t0 = time.perf_counter()
    try:
        out = subprocess.run(
            docker_run_cmd(run_id), capture_output=True, text=True, check=False, timeout=DOCKER_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"docker run -d did not return within {DOCKER_TIMEOUT_S:.0f}s") from exc
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"docker run -d failed ({out.returncode}): {out.stderr.strip()}")
    return elapsed, out.stdout.strip()


def docker_run_parallel(run_id: str, n: int) -> tuple[float, list[float], list[str]]:
    """``n`` ``docker run -d`` launched at once: (until the last exits, each one's time, ids)."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(docker_run_cmd(run_id), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(n)
    ]

    def finished(proc: subprocess.Popen[str]) -> float:
        # each in its own thread, so each one's finish time is known (no busy polling)
        try:
            proc.wait(timeout=DOCKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return math.inf
        return time.perf_counter() - t0

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        ends = list(pool.map(finished, procs))
    if math.inf in ends:
        for p in procs:
            p.communicate()
        raise RuntimeError(
            f"{ends.count(math.inf)} docker run -d did not return within {DOCKER_TIMEOUT_S:.0f}s"
        )
    total = max(ends)
    ids = []
    errors = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode == 0:
            ids.append(out.strip())
        else:
            errors.append(err.strip())
    if errors:
        raise RuntimeError(f"{len(errors)} parallel docker run -d failed: {errors[0]}")
    return total, ends, ids


# --------------------------------------------------------------------------------------------------
# Dockyard


@dataclass
class Dockyard:
    workdir: Path
    agent_log_level: str
    run_id: str
    agent_cmd: list[str] = field(default_factory=list)
    access_key: str = ""
    secret_key: str = ""
    endpoint: str = ""
    server: subprocess.Popen[bytes] | None = None
    agent: subprocess.Popen[bytes] | None = None
    family: str = ""
    task_definition_arn: str = ""
    instance_arn: str = ""
    task_ids: set[str] = field(default_factory=set)

    def start_server(self) -> None:
        port = free_port()
        state = self.workdir / "server"
        state.mkdir()
        self.access_key = "AKIDBENCH" + secrets.token_hex(6).upper()
        self.secret_key = secrets.token_urlsafe(30)
        env = dict(
            os.environ, DOCKYARD_ACCESS_KEY_ID=self.access_key, DOCKYARD_SECRET_ACCESS_KEY=self.secret_key
        )
        self.endpoint = f"http://127.0.0.1:{port}"
        log = self.workdir / "server.log"
        self.server = spawn(
            [
                sys.executable,
                "-m",
                "dockyard.cli.main",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--state-dir",
                str(state),
            ],
            log,
            env,
        )

        def healthy() -> bool:
            assert self.server is not None
            if self.server.poll() is not None:
                raise RuntimeError(f"server exited with {self.server.returncode}:\n{tail(log)}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/_dockyard/health", timeout=2) as r:
                    return bool(r.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_for("the server's health endpoint", healthy, 60)

    def client(self) -> Any:
        return boto3.session.Session().client(
            "ecs",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=16),
        )

    def start_agent(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE")
        }
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key, AWS_REGION=REGION
        )
        self.agent = spawn(
            [
                *(self.agent_cmd or [sys.executable, "-m", "dockyard.cli.agent_cmd", "agent"]),
                "--server",
                self.endpoint,
                "--cluster",
                CLUSTER,
                "--state-dir",
                str(self.workdir / "agent"),
                *AGENT_FLAGS,
                "--log-level",
                self.agent_log_level,
            ],
            self.workdir / "agent.log",
            env,
        )

    def setup(self, ecs: Any) -> None:
        ecs.create_cluster(clusterName=CLUSTER)
        self.family = f"task-start-{self.run_id}"
        td = ecs.register_task_definition(
            family=self.family,
            containerDefinitions=[
                {
                    "name": "sleep",
                    "image": IMAGE,
                    "essential": True,
                    "memory": CONTAINER_MEMORY_MIB,
                    "command": COMMAND,
                }
            ],
        )
        self.task_definition_arn = td["taskDefinition"]["taskDefinitionArn"]
        self.start_agent()

        def registered() -> str | None:
            assert self.agent is not None
            if self.agent.poll() is not None:
                raise RuntimeError(
                    f"agent exited with {self.agent.returncode}:\n{tail(self.workdir / 'agent.log')}"
                )
            arns = ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"]
            return arns[0] if arns else None

        self.instance_arn = wait_for("the agent to register", registered, 60, 0.2)

    @staticmethod
    def cpu_s(proc: subprocess.Popen[bytes] | None) -> float:
        """User + system CPU seconds of a process (all its threads)."""
        if proc is None:
            return 0.0
        try:
            raw = Path(f"/proc/{proc.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = raw[raw.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def run_tasks(self, ecs: Any, count: int) -> list[str]:
        resp = ecs.run_task(cluster=CLUSTER, taskDefinition=self.task_definition_arn, count=count)
        if resp.get("failures"):
            raise RuntimeError(f"RunTask failures: {resp['failures']}")
        arns = [t["taskArn"] for t in resp["tasks"]]
        self.task_ids.update(a.rsplit("/", 1)[-1] for a in arns)
        return arns

    def cleanup(self, docker: DockerApi | None) -> list[str]:
        """Stop everything this run started; every step runs even when an earlier one fails."""
        notes: list[str] = []

        def step(what: str, action: Callable[[], str | None]) -> None:
            try:
                note = action()
            except Exception as exc:  # keep cleaning up; say what could not be done
                notes.append(f"{what} failed: {exc!r}")
            else:
                if note:
                    notes.append(note)

        step("stopping the agent", lambda: stop(self.agent))  # first: it must not race the rest
        if docker is not None and self.family:
            step(
                "removing task containers",
                lambda: (
                    f"removed {n} task container(s)"
                    if (n := docker.remove_labelled(f"{FAMILY_LABEL}={self.family}"))
                    else None
                ),
            )
        step("stopping the server", lambda: stop(self.server))
        step("removing task cgroups", self._remove_cgroups)
        return notes

    def _remove_cgroups(self) -> None:
        """Task cgroups a stopped agent left behind (normally already gone)."""
        for controller in Path("/sys/fs/cgroup").glob("*"):
            for task_id in self.task_ids:
                d = controller / "dockyard" / task_id
                if d.is_dir():
                    for child in d.iterdir():
                        if child.is_dir():
                            with contextlib.suppress(OSError):
                                child.rmdir()
                    with contextlib.suppress(OSError):
                        d.rmdir()


def ts(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def describe(ecs: Any, arns: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(0, len(arns), 100):
        resp = ecs.describe_tasks(cluster=CLUSTER, tasks=arns[i : i + 100])
        if resp.get("failures"):
            raise RuntimeError(f"DescribeTasks failures: {resp['failures']}")
        out.extend(resp["tasks"])
    return out


def wait_running(
    ecs: Any, arns: list[str], poll_s: float, timeout_s: float = 120.0
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Poll DescribeTasks every ``poll_s`` until all are RUNNING: (perf_counter when first seen, task)."""
    seen: dict[str, float] = {}
    tasks: dict[str, dict[str, Any]] = {}
    deadline = time.perf_counter() + timeout_s
    while True:
        start = time.perf_counter()
        for t in describe(ecs, [a for a in arns if a not in seen]):
            if t["lastStatus"] == "RUNNING":
                seen[t["taskArn"]] = time.perf_counter()
                tasks[t["taskArn"]] = t
            elif t["lastStatus"] == "STOPPED":
                reason = t.get("stoppedReason") or [c.get("reason") for c in t.get("containers", [])]
                raise RuntimeError(f"task {t['taskArn']} stopped before RUNNING: {reason}")
        if len(seen) == len(arns):
            return seen, tasks
        if start > deadline:
            raise RuntimeError(f"{len(arns) - len(seen)} task(s) not RUNNING within {timeout_s:.0f}s")
        time.sleep(max(0.0, start + poll_s - time.perf_counter()))


def stop_and_wait(ecs: Any, clients: list[Any], arns: list[str], timeout_s: float = 60.0) -> None:
    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        list(
            pool.map(
                lambda ia: clients[ia[0] % len(clients)].stop_task(
                    cluster=CLUSTER, task=ia[1], reason="bench"
                ),
                enumerate(arns),
            )
        )
    wait_for(
        f"{len(arns)} task(s) to stop",
        lambda: all(t["lastStatus"] == "STOPPED" for t in describe(ecs, arns)),
        timeout_s,
        0.1,
    )


# --------------------------------------------------------------------------------------------------
# Phases


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": statistics.median(values),
        "p95": pct(values, 95),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


@dataclass
class Sequential:
    dockyard: list[float] = field(default_factory=list)
    docker_cli: list[float] = field(default_factory=list)
    docker_api: list[float] = field(default_factory=list)
    # per Dockyard task, seconds: (phase name -> duration)
    phases: list[dict[str, float]] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)


PHASES = (
    ("runtask_call", "RunTask call (client: request -> answer)"),
    ("to_agent", "createdAt -> pullStartedAt (store, Poll wake-up, agent prepare)"),
    ("image", "pullStartedAt -> pullStoppedAt (image check, prefer-cached)"),
    ("create_start", "pullStoppedAt -> startedAt (docker create + start)"),
    ("to_client", "startedAt -> DescribeTasks RUNNING (report, store, poll)"),
)


def task_phases(t0_wall: float, ret_wall: float, seen_wall: float, task: dict[str, Any]) -> dict[str, float]:
    created = ts(task.get("createdAt"))
    pull0 = ts(task.get("pullStartedAt"))
    pull1 = ts(task.get("pullStoppedAt"))
    started = ts(task.get("startedAt"))
    out = {"runtask_call": ret_wall - t0_wall}
    if created is not None and pull0 is not None:
        out["to_agent"] = pull0 - created
    if pull0 is not None and pull1 is not None:
        out["image"] = pull1 - pull0
    if pull1 is not None and started is not None:
        out["create_start"] = started - pull1
    if started is not None:
        out["to_client"] = seen_wall - started
    return out


def run_sequential(
    dy: Dockyard, ecs: Any, docker: DockerApi, args: argparse.Namespace, log: Callable[[str], None]
) -> Sequential:
    res = Sequential(load_before=load_average())
    total = args.warmup + args.tasks
    for i in range(total):
        timed = i >= args.warmup
        # Dockyard: RunTask -> DescribeTasks RUNNING (client-observed)
        t0_wall, t0 = time.time(), time.perf_counter()
        arns = dy.run_tasks(ecs, 1)
        ret = time.perf_counter()
        seen, tasks = wait_running(ecs, arns, args.poll_ms / 1000)
        elapsed = seen[arns[0]] - t0
        if timed:
            res.dockyard.append(elapsed)
            res.phases.append(task_phases(t0_wall, t0_wall + (ret - t0), t0_wall + elapsed, tasks[arns[0]]))
        stop_and_wait(ecs, [ecs], arns)
        time.sleep(args.settle_ms / 1000)
        # docker run -d (CLI wall time)
        cli_s, cid = docker_run(dy.run_id)
        docker.remove(cid)
        time.sleep(args.settle_ms / 1000)
        # Engine API create + start (the floor)
        t0 = time.perf_counter()
        cid = docker.create_start({BENCH_LABEL: dy.run_id})
        api_s = time.perf_counter() - t0
        docker.remove(cid)
        if timed:
            res.docker_cli.append(cli_s)
            res.docker_api.append(api_s)
        log(
            f"  {'round' if timed else 'warm-up'} {i + 1 - (args.warmup if timed else 0)}: dockyard "
            f"{elapsed * 1000:.0f} ms, docker run -d {cli_s * 1000:.0f} ms, API {api_s * 1000:.0f} ms; "
            f"load {os.getloadavg()[0]:.2f}"
        )
        time.sleep(args.settle_ms / 1000)
    res.load_after = load_average()
    return res


@dataclass
class Burst:
    dockyard_s: float = 0.0  # from the first RunTask call until DescribeTasks shows all RUNNING
    dockyard_each: list[float] = field(default_factory=list)
    runtask_calls_s: float = 0.0  # until the last RunTask call answered
    docker_s: float = 0.0  # from the first docker run -d launch until the last exited
    docker_each: list[float] = field(default_factory=list)
    agent_kib: dict[str, int] = field(default_factory=dict)  # with every task RUNNING
    agent_cpu_s: float = 0.0  # CPU the agent and the server used until all were RUNNING
    server_cpu_s: float = 0.0
    first: str = "dockyard"
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    phases: list[dict[str, float]] = field(default_factory=list)


def run_burst(
    dy: Dockyard,
    ecs: Any,
    clients: list[Any],
    docker: DockerApi,
    args: argparse.Namespace,
    first: str,
    log: Callable[[str], None],
) -> Burst:
    res = Burst(first=first, load_before=load_average())
    counts = [min(10, args.burst - i) for i in range(0, args.burst, 10)]

    def dockyard_side() -> None:
        cpu0 = (dy.cpu_s(dy.agent), dy.cpu_s(dy.server))
        t0_wall, t0 = time.time(), time.perf_counter()
        if args.burst_mode == "concurrent":
            with concurrent.futures.ThreadPoolExecutor(len(counts)) as pool:
                batches = list(
                    pool.map(lambda ic: dy.run_tasks(clients[ic[0] % len(clients)], ic[1]), enumerate(counts))
                )
        else:
            batches = [dy.run_tasks(ecs, n) for n in counts]
        res.runtask_calls_s = time.perf_counter() - t0
        arns = [a for batch in batches for a in batch]
        seen, tasks = wait_running(ecs, arns, args.burst_poll_ms / 1000)
        res.agent_cpu_s = dy.cpu_s(dy.agent) - cpu0[0]
        res.server_cpu_s = dy.cpu_s(dy.server) - cpu0[1]
        res.dockyard_s = max(seen.values()) - t0
        res.dockyard_each = [x - t0 for x in seen.values()]
        res.agent_kib = memory_kib(dy.agent.pid) if dy.agent is not None else {}
        res.phases = [
            task_phases(t0_wall, t0_wall + res.runtask_calls_s, t0_wall + (seen[a] - t0), tasks[a])
            for a in arns
        ]
        log(
            f"  dockyard: {len(arns)} tasks RUNNING after {res.dockyard_s * 1000:.0f} ms (RunTask calls "
            f"answered after {res.runtask_calls_s * 1000:.0f} ms; CPU agent {res.agent_cpu_s:.2f} s, "
            f"server {res.server_cpu_s:.2f} s); agent PSS {res.agent_kib.get('Pss', 0) / 1024:.1f} MiB; "
            f"load {os.getloadavg()[0]:.2f}"
        )
        stop_and_wait(ecs, clients, arns)

    def docker_side() -> None:
        res.docker_s, res.docker_each, ids = docker_run_parallel(dy.run_id, args.burst)
        log(
            f"  docker: {args.burst} parallel docker run -d done after {res.docker_s * 1000:.0f} ms; "
            f"load {os.getloadavg()[0]:.2f}"
        )
        for cid in ids:
            docker.remove(cid)

    sides = [dockyard_side, docker_side] if first == "dockyard" else [docker_side, dockyard_side]
    for side in sides:
        side()
        time.sleep(args.settle_ms / 1000 * 5)  # let dockerd finish the removals before the next side
    res.load_after = load_average()
    return res


# --------------------------------------------------------------------------------------------------
# Report


def ms(x: float) -> str:
    return f"{x * 1000:,.0f}"


def verdict(holds: bool) -> str:
    return "HOLDS" if holds else "MISSED"


def build_report(
    args: argparse.Namespace,
    seq: Sequential,
    bursts: list[Burst],
    idle_kib: dict[str, int],
    idle_end_kib: dict[str, int],
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
) -> dict[str, Any]:
    dy, cli, api = summary(seq.dockyard), summary(seq.docker_cli), summary(seq.docker_api)
    burst_ratios = [b.dockyard_s / b.docker_s for b in bursts]
    mid = sorted(range(len(bursts)), key=lambda i: burst_ratios[i])[len(bursts) // 2]
    burst = bursts[mid]  # the median round
    pss_idle = idle_kib.get("Pss", 0) / 1024
    p50_ratio = dy["p50"] / cli["p50"]
    burst_ratio = burst_ratios[mid]
    phases = {
        key: summary([p[key] for p in seq.phases if key in p])
        for key, _ in PHASES
        if any(key in p for p in seq.phases)
    }
    burst_phases = {
        key: summary([p[key] for p in burst.phases if key in p])
        for key, _ in PHASES
        if any(key in p for p in burst.phases)
    }
    return {
        "benchmark": "task_start",
        "config": {
            "image": IMAGE,
            "command": COMMAND,
            "tasks": args.tasks,
            "warmup": args.warmup,
            "burst": args.burst,
            "burst_mode": args.burst_mode,
            "burst_rounds": args.burst_rounds,
            "poll_ms": args.poll_ms,
            "burst_poll_ms": args.burst_poll_ms,
            "agent": " ".join([args.agent_cmd or "python -m dockyard.cli.agent_cmd agent", *AGENT_FLAGS]),
        },
        "code": code_version(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "loadavg_sequential": [seq.load_before, seq.load_after],
            "loadavg_bursts": [[b.load_before, b.load_after] for b in bursts],
        },
        "sequential_s": {
            "dockyard": {k: round(v, 4) for k, v in dy.items()},
            "docker_run_cli": {k: round(v, 4) for k, v in cli.items()},
            "docker_api_create_start": {k: round(v, 4) for k, v in api.items()},
            "dockyard_phases": {k: {q: round(v, 4) for q, v in s.items()} for k, s in phases.items()},
            "samples": {
                "dockyard": [round(x, 4) for x in seq.dockyard],
                "docker_run_cli": [round(x, 4) for x in seq.docker_cli],
                "docker_api_create_start": [round(x, 4) for x in seq.docker_api],
            },
        },
        "burst_s": {
            "rounds": [
                {
                    "dockyard_all_running": round(b.dockyard_s, 4),
                    "dockyard_runtask_calls": round(b.runtask_calls_s, 4),
                    "dockyard_each": {k: round(v, 4) for k, v in summary(b.dockyard_each).items()},
                    "docker_parallel_all": round(b.docker_s, 4),
                    "docker_each": {k: round(v, 4) for k, v in summary(b.docker_each).items()},
                    "ratio": round(b.dockyard_s / b.docker_s, 3),
                    "agent_cpu_s": round(b.agent_cpu_s, 3),
                    "server_cpu_s": round(b.server_cpu_s, 3),
                    "first": b.first,
                    "agent_pss_kib": b.agent_kib.get("Pss"),
                }
                for b in bursts
            ],
            "median_round": mid,
            "dockyard_phases_median_round": {
                k: {q: round(v, 4) for q, v in s.items()} for k, s in burst_phases.items()
            },
        },
        "agent_memory_kib": {
            "idle": idle_kib,
            "with_burst_running": burst.agent_kib,
            "idle_end": idle_end_kib,
        },
        "ratios": {
            "p50": round(p50_ratio, 3),
            "p95": round(dy["p95"] / cli["p95"], 3),
            "burst": round(burst_ratio, 3),
        },
        "goals": {
            "p50": {"need": f"<= {P50_GOAL}x docker run -d", "holds": p50_ratio <= P50_GOAL},
            "burst": {"need": f"<= {BURST_GOAL}x parallel docker run -d", "holds": burst_ratio <= BURST_GOAL},
            "agent_pss_idle": {
                "need": f"<= {PSS_GOAL_MIB:g} MiB",
                "mib": round(pss_idle, 1),
                "holds": pss_idle <= PSS_GOAL_MIB,
            },
        },
    }


def _row(
    name: str, dockyard: str = "", docker: str = "", ratio: str = "", goal: str = "", verdict_: str = ""
) -> str:
    return f"{name:<38}{dockyard:>15}{docker:>15}{ratio:>8}  {goal:<25}{verdict_}".rstrip()


def print_report(rep: dict[str, Any], bursts: list[Burst]) -> None:
    cfg, seq, mem = rep["config"], rep["sequential_s"], rep["agent_memory_kib"]
    dy, cli, api = seq["dockyard"], seq["docker_run_cli"], seq["docker_api_create_start"]
    b = bursts[rep["burst_s"]["median_round"]]
    goals, ratios, machine = rep["goals"], rep["ratios"], rep["machine"]
    la, le = machine["loadavg_start"], machine["loadavg_end"]
    calls = -(-cfg["burst"] // 10)
    print()
    print(
        "Task start: Dockyard RunTask -> RUNNING (client-observed, DescribeTasks every "
        f"{cfg['poll_ms']:g} ms, {cfg['burst_poll_ms']:g} ms in the burst) against docker run -d; "
        f"{IMAGE} {' '.join(COMMAND)}"
    )
    print(
        f"{cfg['tasks']} sequential tasks after {cfg['warmup']} warm-up round(s); burst {cfg['burst']} "
        f"tasks = {calls} RunTask calls of count <= 10 ({cfg['burst_mode']}), {cfg['burst_rounds']} round(s)"
    )
    print(
        f"machine: {machine['cpu_count']} CPUs shared by server, agent, dockerd and this client; "
        f"load average (1/5/15 min) at start {la[0]}/{la[1]}/{la[2]}, at end {le[0]}/{le[1]}/{le[2]}"
    )
    code = rep.get("code") or {}
    if code:
        print(
            f"code: commit {code['commit']}, {code['src_files_changed']} file(s) under src/ changed since; "
            f"agent: {cfg['agent']}"
        )
    header = _row("measurement", "dockyard", "docker", "ratio", "goal", "verdict")
    print(header)
    print("-" * (len(header) + 2))
    print(
        _row(
            "RunTask -> RUNNING p50 (ms)",
            ms(dy["p50"]),
            ms(cli["p50"]),
            f"{ratios['p50']:.2f}x",
            f"<= {P50_GOAL}x docker run -d",
            verdict(goals["p50"]["holds"]),
        )
    )
    print(_row("RunTask -> RUNNING p95 (ms)", ms(dy["p95"]), ms(cli["p95"]), f"{ratios['p95']:.2f}x"))
    print(
        _row(
            "  min / max (ms)",
            f"{ms(dy['min'])} / {ms(dy['max'])}",
            f"{ms(cli['min'])} / {ms(cli['max'])}",
        )
    )
    print(
        _row(
            "  Engine API create+start p50/p95 (ms)",
            "",
            f"{ms(api['p50'])} / {ms(api['p95'])}",
            f"{dy['p50'] / api['p50']:.2f}x",
            "info: the engine's floor",
        )
    )
    print(
        _row(
            f"burst {cfg['burst']}: until all RUNNING (ms)",
            ms(b.dockyard_s),
            ms(b.docker_s),
            f"{ratios['burst']:.2f}x",
            f"<= {BURST_GOAL}x parallel docker",
            verdict(goals["burst"]["holds"]),
        )
    )
    print(
        _row(
            "  per task p50 / p95 (ms)",
            f"{ms(statistics.median(b.dockyard_each))} / {ms(pct(b.dockyard_each, 95))}",
            f"{ms(statistics.median(b.docker_each))} / {ms(pct(b.docker_each, 95))}",
        )
    )
    print(_row("  RunTask calls all answered (ms)", ms(b.runtask_calls_s)))
    print(_row("  CPU until all RUNNING: agent / server", f"{b.agent_cpu_s:.2f} / {b.server_cpu_s:.2f} s"))
    if len(bursts) > 1:
        rounds = ", ".join(f"{x.dockyard_s / x.docker_s:.2f}x" for x in bursts)
        print(f"  burst rounds' ratios: {rounds} (the median round is shown)")
    mib = {k: v.get("Pss", 0) / 1024 for k, v in mem.items()}
    print(
        _row(
            "agent PSS idle (MiB)",
            f"{mib['idle']:.1f}",
            "",
            "",
            f"<= {PSS_GOAL_MIB:g} MiB",
            verdict(goals["agent_pss_idle"]["holds"]),
        )
    )
    print(_row(f"agent PSS with {cfg['burst']} tasks (MiB)", f"{mib['with_burst_running']:.1f}"))
    print(_row("agent PSS idle at the end (MiB)", f"{mib['idle_end']:.1f}"))
    rss_idle, rss_busy = mem["idle"].get("Rss", 0) / 1024, mem["with_burst_running"].get("Rss", 0) / 1024
    print(_row("agent RSS idle / with tasks (MiB)", f"{rss_idle:.1f} / {rss_busy:.1f}"))
    print()
    print("Where Dockyard's time goes per task (the task's timestamps, one clock), ms p50 / p95:")
    print(f"  {'phase':<64}{'sequential':>14}{'burst':>16}")
    for key, label in PHASES:
        s = seq["dockyard_phases"].get(key)
        bs = rep["burst_s"]["dockyard_phases_median_round"].get(key)
        if s is None:
            continue
        burst_part = f"{ms(bs['p50'])} / {ms(bs['p95'])}" if bs else ""
        print(f"  {label:<64}{ms(s['p50']) + ' / ' + ms(s['p95']):>14}{burst_part:>16}")
    print()
    for name, g in goals.items():
        print(f"goal {name}: {g['need']}: {verdict(g['holds'])}")


# --------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--tasks", type=int, default=20, help="timed sequential tasks (and docker runs)")
    p.add_argument("--warmup", type=int, default=2, help="untimed sequential rounds first")
    p.add_argument("--burst", type=int, default=50, help="tasks in the burst (RunTask calls of count 10)")
    p.add_argument(
        "--burst-mode",
        choices=("concurrent", "back-to-back"),
        default="concurrent",
        help="issue the burst's RunTask calls at once or one after another",
    )
    p.add_argument(
        "--burst-rounds",
        type=int,
        default=3,
        help="burst pairs, alternating who goes first (the median is judged)",
    )
    p.add_argument("--poll-ms", type=float, default=15.0, help="DescribeTasks polling period, sequential")
    p.add_argument(
        "--burst-poll-ms",
        type=float,
        default=50.0,
        help="DescribeTasks polling period in the burst (50 tasks a call: faster costs the server CPU)",
    )
    p.add_argument("--settle-ms", type=float, default=200.0, help="pause between sequential samples")
    p.add_argument("--agent-log-level", default="info", help="the agent's --log-level")
    p.add_argument(
        "--agent-cmd",
        help="command that starts the agent, before its arguments (default: this interpreter with "
        "'-m dockyard.cli.agent_cmd agent'), e.g. a wrapper for a profiler or an experiment",
    )
    p.add_argument("--keep-workdir", action="store_true", help="keep server/agent logs and state")
    args = p.parse_args(argv)
    if args.tasks < 1 or args.burst < 1 or args.burst_rounds < 1 or args.warmup < 0:
        p.error("--tasks, --burst and --burst-rounds must be >= 1, --warmup >= 0")
    return args


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def workdir_for(keep: bool, log: Callable[[str], None]) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dockyard-task-start-"))
    try:
        yield path
    finally:
        if keep:
            log(f"workdir kept: {path}")
        else:
            subprocess.run(["rm", "-rf", str(path)], check=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    run_id = secrets.token_hex(4)
    load_start = load_average()
    log(
        f"run {run_id}: load average {load_start[0]}/{load_start[1]}/{load_start[2]} on {os.cpu_count()} CPUs"
    )
    docker: DockerApi | None = None
    with workdir_for(args.keep_workdir, log) as workdir:
        dy = Dockyard(workdir, args.agent_log_level, run_id, shlex.split(args.agent_cmd or ""))
        try:
            docker = DockerApi()
            status, _ = docker.call("GET", f"/images/{IMAGE}/json")
            if status != 200:
                log(f"image {IMAGE} not found locally (build it with the project's test image script)")
                return 2
            log("starting server and agent ...")
            dy.start_server()
            ecs = dy.client()
            clients = [dy.client() for _ in range(5)]
            dy.setup(ecs)
            log(f"  server {dy.endpoint}, agent pid {dy.agent.pid if dy.agent else '?'}, {dy.instance_arn}")
            time.sleep(2.0)  # let the agent settle after registration
            assert dy.agent is not None
            idle_kib = memory_kib(dy.agent.pid)
            log(
                f"  agent idle: PSS {idle_kib.get('Pss', 0) / 1024:.1f} MiB, "
                f"RSS {idle_kib.get('Rss', 0) / 1024:.1f} MiB"
            )
            log(f"sequential: {args.warmup} warm-up + {args.tasks} rounds ...")
            seq = run_sequential(dy, ecs, docker, args, log)
            bursts = []
            for r in range(args.burst_rounds):
                first = "dockyard" if r % 2 == 0 else "docker"
                log(f"burst round {r + 1}/{args.burst_rounds} ({first} first) ...")
                bursts.append(run_burst(dy, ecs, clients, docker, args, first, log))
            time.sleep(2.0)
            idle_end_kib = memory_kib(dy.agent.pid)
            load_end = load_average()
        except RuntimeError as exc:
            log(f"error: {exc}")
            log(f"agent log:\n{tail(workdir / 'agent.log')}")
            return 1
        except KeyboardInterrupt:
            log("interrupted; cleaning up")
            return 130
        finally:
            for note in dy.cleanup(docker):
                log(f"cleanup: {note}")
            if docker is not None:
                try:
                    n = docker.remove_labelled(f"{BENCH_LABEL}={run_id}")
                    if n:
                        log(f"cleanup: removed {n} docker-run container(s)")
                except Exception as exc:
                    log(f"cleanup: removing containers labelled {BENCH_LABEL}={run_id} failed: {exc!r}")
                docker.close()
    rep = build_report(args, seq, bursts, idle_kib, idle_end_kib, load_start, load_end)
    print_report(rep, bursts)
    print("BENCH_JSON " + json.dumps(rep, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
