#!/usr/bin/env python3
"""ECS API throughput: Dockyard against moto's server, same load, one run.

For each operation (DescribeClusters and ListTaskDefinitions as reads, RegisterTaskDefinition as
writes) and each target, this script

1. starts the target server on a free loopback port (a fresh state directory for Dockyard, a fresh
   ``moto_server`` process for moto) and seeds it: one cluster and ten task definitions;
2. builds SigV4-signed requests (botocore's ``SigV4Auth``, service ``ecs``, region ``us-east-1``)
   *before* the timed phase and writes them raw to a file, so the load generator only replays
   bytes; RegisterTaskDefinition requests carry distinct bodies over a few families, so every
   request registers a new revision;
3. checks one of them answers 200 with the expected data, runs a short warm-up, then drives the
   server with ``wrk`` (C, epoll; ``bench/loadgen/replay.lua`` rotates through the requests and
   prints wrk's latency percentiles as JSON from its ``done()`` hook) for ``--duration`` seconds
   over ``--connections`` keep-alive connections;
4. reads the server's CPU time (whole process tree, from /proc) and wrk's own (rusage) around
   the timed phase.

It prints a table (req/s, p50, p99, errors, CPU, Dockyard/moto ratio), whether the goals hold
(reads >= 10x moto with p99 <= 20 ms; writes >= 5x moto), and a final JSON line prefixed with
``BENCH_JSON``. Every server it starts binds 127.0.0.1 and is stopped (process group) on exit.

Run: ``.venv/bin/python bench/api_throughput.py [--duration 10] [--connections 16]
[--only dockyard|moto]``. Needs Debian's ``wrk`` (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import functools
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from procs import free_port, spawn, stop

REGION = "us-east-1"
SERVICE = "ecs"
TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
CONTENT_TYPE = "application/x-amz-json-1.1"
CLUSTER = "bench"
READ_FAMILIES = 10
DEFAULT_WRITE_FAMILIES = 4
READ_POOL = 512  # read requests are identical; a small pool is plenty
LUA_SCRIPT = Path(__file__).resolve().parent / "loadgen" / "replay.lua"

READ_P99_GOAL_MS = 20.0
READ_RATIO_GOAL = 10.0
WRITE_RATIO_GOAL = 5.0

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# Operations


@dataclass(frozen=True)
class Operation:
    name: str
    kind: str  # "read" | "write"
    body: Callable[[int, int], dict[str, Any]]  # (sequence number, write families) -> request


def _task_definition(i: int, families: int = DEFAULT_WRITE_FAMILIES) -> dict[str, Any]:
    """A realistic RegisterTaskDefinition body; ``i`` makes it distinct, round-robin over families."""
    return {
        "family": f"bench-write-{i % families}",
        "networkMode": "bridge",
        "requiresCompatibilities": ["EC2"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [
            {
                "name": "app",
                "image": "busybox:latest",
                "essential": True,
                "cpu": 128,
                "memory": 256,
                "command": ["httpd", "-f", "-p", "8080"],
                "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
                "environment": [{"name": "BENCH_SEQ", "value": str(i)}],
            }
        ],
        "tags": [{"key": "bench", "value": "api_throughput"}],
    }


OPERATIONS: tuple[Operation, ...] = (
    Operation("DescribeClusters", "read", lambda _i, _f: {"clusters": [CLUSTER]}),
    Operation("ListTaskDefinitions", "read", lambda _i, _f: {}),
    Operation("RegisterTaskDefinition", "write", _task_definition),
)


# --------------------------------------------------------------------------------------------
# Servers


@dataclass
class Target:
    name: str
    host: str
    port: int
    access_key: str
    secret_key: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def venv_tool(name: str) -> str:
    """A console script next to this interpreter (the venv), else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def wait_ready(target: Target, path: str, deadline_s: float) -> None:
    """Poll ``path`` until it answers (any HTTP status below 500), the process dies, or time is up."""
    deadline = time.monotonic() + deadline_s
    last_error = ""
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            raise RuntimeError(
                f"{target.name} exited with {target.proc.returncode} before it was ready; "
                f"log:\n{tail(target.log_path)}"
            )
        try:
            with urllib.request.urlopen(f"{target.url}{path}", timeout=2) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last_error = str(exc)
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise RuntimeError(
        f"{target.name} not ready within {deadline_s:.0f}s ({last_error}); log:\n{tail(target.log_path)}"
    )


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_moto(workdir: Path) -> Target:
    port = free_port()
    log_path = workdir / "moto.log"
    proc = spawn([venv_tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)], log_path)
    target = Target("moto", "127.0.0.1", port, "AKIDBENCHMOTO", "moto-accepts-any-secret", proc, log_path)
    try:
        wait_ready(target, "/moto-api/", 60)
    except BaseException:
        stop(proc, grace=5)
        raise
    return target


def start_dockyard(workdir: Path, server_cmd: list[str]) -> Target:
    """``server_cmd`` (default ``dockyard server``) gets ``--host --port --state-dir`` appended."""
    port = free_port()
    state_dir = workdir / "dockyard-state"
    state_dir.mkdir()
    log_path = workdir / "dockyard.log"
    access_key = "AKIDBENCH" + secrets.token_hex(6).upper()
    secret_key = secrets.token_urlsafe(30)
    env = dict(os.environ, DOCKYARD_ACCESS_KEY_ID=access_key, DOCKYARD_SECRET_ACCESS_KEY=secret_key)
    cmd = [
        *server_cmd,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
    ]
    proc = spawn(cmd, log_path, env)
    target = Target("dockyard", "127.0.0.1", port, access_key, secret_key, proc, log_path)
    try:
        wait_ready(target, "/_dockyard/health", 60)
        # The server writes the key pair it accepts; prefer it if it differs from ours.
        creds_file = state_dir / "credentials"
        if creds_file.exists():
            parser = configparser.ConfigParser()
            parser.read(creds_file)
            if parser.has_section("dockyard"):
                target.access_key = parser.get("dockyard", "aws_access_key_id", fallback=access_key)
                target.secret_key = parser.get("dockyard", "aws_secret_access_key", fallback=secret_key)
    except BaseException:
        stop(proc, grace=5)
        raise
    return target


def process_tree_cpu_s(root_pid: int) -> float:
    """User+system CPU seconds of ``root_pid`` and its live descendants (threads included)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name; comm may contain spaces.
        rest = raw[raw.rindex(")") + 2 :].split()
        pid = int(entry)
        parents[pid] = int(rest[1])
        ticks[pid] = int(rest[11]) + int(rest[12])  # utime + stime
    total = 0
    for pid, tick in ticks.items():
        p = pid
        while p > 1:
            if p == root_pid:
                total += tick
                break
            p = parents.get(p, 0)
    return total / CLK_TCK


def machine_busy_s() -> float:
    """CPU seconds all processes have used since boot (busy = total - idle - iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already counted in user/nice
    return (sum(fields[:8]) - idle) / CLK_TCK


# --------------------------------------------------------------------------------------------
# Requests


class ECSClient:
    """Minimal signed AWS JSON 1.1 client over one keep-alive connection (setup and checks)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.conn = http.client.HTTPConnection(target.host, target.port, timeout=30)

    def close(self) -> None:
        self.conn.close()

    def call(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raw = sign(self.target, operation, body)
        head, _, payload = raw.partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.decode().partition(": ")
            headers[k] = v
        self.conn.request("POST", "/", body=payload, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {"_raw": data[:300].decode(errors="replace")}
        return resp.status, parsed

    def ok(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        status, parsed = self.call(operation, body)
        if status != 200:
            raise RuntimeError(f"{self.target.name} {operation} -> HTTP {status}: {parsed}")
        return parsed


def sign(target: Target, operation: str, body: dict[str, Any]) -> bytes:
    """One SigV4-signed AWS JSON 1.1 request, serialized as raw HTTP/1.1 bytes."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    request = AWSRequest(
        method="POST",
        url=f"{target.url}/",
        data=payload,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET_PREFIX + operation},
    )
    SigV4Auth(Credentials(target.access_key, target.secret_key), SERVICE, REGION).add_auth(request)
    prepared = request.prepare()
    lines = [
        "POST / HTTP/1.1",
        f"Host: {target.host}:{target.port}",  # what SigV4Auth signed (netloc of the URL)
    ]
    lines += [f"{k}: {v}" for k, v in prepared.headers.items() if k.lower() != "content-length"]
    lines += [f"Content-Length: {len(payload)}", "Accept-Encoding: identity", "", ""]
    return "\r\n".join(lines).encode() + payload


def write_request_file(path: Path, requests: list[bytes]) -> None:
    with path.open("wb") as f:
        for raw in requests:
            f.write(b"%d\n" % len(raw))
            f.write(raw)


def seed(target: Target) -> None:
    """One cluster and READ_FAMILIES task definitions, so reads return realistic data."""
    client = ECSClient(target)
    try:
        client.ok("CreateCluster", {"clusterName": CLUSTER, "tags": [{"key": "bench", "value": "yes"}]})
        for i in range(READ_FAMILIES):
            body = _task_definition(i)
            body["family"] = f"bench-read-{i:02d}"
            client.ok("RegisterTaskDefinition", body)
    finally:
        client.close()


def check_response(target: Target, op: Operation, raw: bytes) -> None:
    """Send one pre-signed request and check it succeeds with the data we expect."""
    with socket.create_connection((target.host, target.port), timeout=30) as sock:
        sock.sendall(raw)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{target.name} {op.name}: HTTP {resp.status}: {data[:500]!r}")
    body = json.loads(data)
    if op.name == "DescribeClusters":
        clusters = body.get("clusters", [])
        if len(clusters) != 1 or clusters[0].get("clusterName") != CLUSTER:
            raise RuntimeError(f"{target.name} DescribeClusters returned {body}")
    elif op.name == "ListTaskDefinitions":
        arns = body.get("taskDefinitionArns", [])
        if len(arns) < READ_FAMILIES:
            raise RuntimeError(f"{target.name} ListTaskDefinitions returned {len(arns)} ARNs: {body}")
    elif op.name == "RegisterTaskDefinition" and "taskDefinition" not in body:
        raise RuntimeError(f"{target.name} RegisterTaskDefinition returned {body}")


# --------------------------------------------------------------------------------------------
# Load generation


@dataclass
class WrkRun:
    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    loadgen_cpu_s: float
    server_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0  # every process on the machine, from /proc/stat

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def run_wrk(
    target: Target,
    request_file: Path,
    *,
    duration_s: float,
    connections: int,
    threads: int,
    offset: int,
    profile_to: Path | None = None,
) -> WrkRun:
    cmd = [
        "wrk",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        "--timeout=10s",
        f"--script={LUA_SCRIPT}",
        f"{target.url}/",
        "--",
        str(request_file),
        str(offset),
        str(threads),
    ]
    spy: subprocess.Popen[bytes] | None = None
    if profile_to is not None:
        # Sampling without pausing the server (--nonblocking); py-spy's own CPU shows as "other".
        spy = subprocess.Popen(
            [
                venv_tool("py-spy"),
                "record",
                "--pid",
                str(target.proc.pid),
                "--subprocesses",
                "--nonblocking",
                "--rate",
                "200",
                "--duration",
                str(max(1, round(duration_s))),
                "--output",
                str(profile_to),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    cpu_before = process_tree_cpu_s(target.proc.pid)
    machine_before = machine_busy_s()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        output = proc.stdout.read().decode(errors="replace")
        _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        server_cpu = process_tree_cpu_s(target.proc.pid) - cpu_before
        machine_cpu = machine_busy_s() - machine_before
        if spy is not None:
            spy.wait(timeout=30)
    finally:  # interrupted: leave no load generator or profiler behind
        for child in (proc, spy):
            if child is not None and child.returncode is None and child.poll() is None:
                child.kill()
                child.wait()
    match = re.search(r"^WRK_RESULT (\{.*\})$", output, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{output}")
    result = json.loads(match.group(1))
    return WrkRun(
        requests=result["requests"],
        duration_s=result["duration_us"] / 1e6,
        errors=result["errors"],
        latency_us=result["latency_us"],
        loadgen_cpu_s=rusage.ru_utime + rusage.ru_stime,
        server_cpu_s=server_cpu,
        machine_cpu_s=machine_cpu,
    )


@dataclass
class OpResult:
    operation: str
    kind: str
    target: str
    run: WrkRun
    pool: int
    wrapped: bool
    answered: int = 0  # writes answered in all (check + warm-up + timed)
    unanswered_max: int = 0  # requests wrk may leave in flight when its runs stop
    persisted: int | None = None  # writes: revisions the server holds after the run

    @property
    def persisted_ok(self) -> bool:
        """The server holds every answered write, plus at most what was in flight at the stop."""
        held = self.persisted
        return held is not None and self.answered <= held <= self.answered + self.unanswered_max

    def as_json(self) -> dict[str, Any]:
        r = self.run
        return {
            "rps": round(r.rps, 1),
            "p50_ms": round(r.latency_us["p50"] / 1000, 3),
            "p90_ms": round(r.latency_us["p90"] / 1000, 3),
            "p99_ms": round(r.latency_us["p99"] / 1000, 3),
            "max_ms": round(r.latency_us["max"] / 1000, 3),
            "requests": r.requests,
            "duration_s": round(r.duration_s, 3),
            "errors": r.error_count,
            "error_breakdown": r.errors,
            "server_cpu_pct": round(100 * r.server_cpu_s / r.duration_s, 1) if r.duration_s else None,
            "loadgen_cpu_pct": round(100 * r.loadgen_cpu_s / r.duration_s, 1) if r.duration_s else None,
            # CPU used by anything else on the machine meanwhile (other jobs disturb the figures)
            "other_cpu_pct": round(
                100 * max(0.0, r.machine_cpu_s - r.server_cpu_s - r.loadgen_cpu_s) / r.duration_s, 1
            )
            if r.duration_s
            else None,
            "distinct_bodies": self.pool if self.kind == "write" else None,
            "pool_wrapped": self.wrapped if self.kind == "write" else None,
            "persisted_revisions": self.persisted,
            "answered_writes": self.answered if self.kind == "write" else None,
            "persisted_ok": self.persisted_ok if self.kind == "write" else None,
        }


def count_write_revisions(target: Target, families: int) -> int:
    """Sum over the write families of the latest ACTIVE revision."""
    client = ECSClient(target)
    total = 0
    try:
        for f in range(families):
            status, body = client.call("DescribeTaskDefinition", {"taskDefinition": f"bench-write-{f}"})
            if status == 200:
                total += int(body["taskDefinition"]["revision"])
    finally:
        client.close()
    return total


def bench_target(
    target: Target, args: argparse.Namespace, workdir: Path, log: Callable[[str], None]
) -> list[OpResult]:
    seed(target)
    results: list[OpResult] = []
    for op in OPERATIONS:
        if op.name not in args.ops:
            continue
        pool = args.write_pool if op.kind == "write" else READ_POOL
        t0 = time.perf_counter()
        raws = [sign(target, op.name, op.body(i, args.write_families)) for i in range(pool)]
        sign_s = time.perf_counter() - t0
        request_file = workdir / f"{target.name}-{op.name}.req"
        write_request_file(request_file, raws)
        # The check sends the last request so the warm-up (from 0) does not repeat it.
        check_response(target, op, raws[-1])
        log(f"  {target.name} {op.name}: {pool} requests signed in {sign_s:.1f}s; warm-up {args.warmup}s")
        offset = 0
        if args.warmup > 0:
            warm = run_wrk(
                target,
                request_file,
                duration_s=args.warmup,
                connections=args.connections,
                threads=args.threads,
                offset=0,
            )
            # Skip what the warm-up left in flight too, so no body is registered twice.
            offset = warm.requests + args.connections
        run = run_wrk(
            target,
            request_file,
            duration_s=args.duration,
            connections=args.connections,
            threads=args.threads,
            offset=offset,
            profile_to=args.py_spy / f"{target.name}-{op.name}.svg"
            if args.py_spy and target.name == "dockyard"
            else None,
        )
        result = OpResult(
            op.name,
            op.kind,
            target.name,
            run,
            pool,
            wrapped=offset + run.requests + args.connections >= pool,
            answered=1 + (offset - args.connections if offset else 0) + run.requests,
            unanswered_max=args.connections * (2 if offset else 1),
        )
        if op.kind == "write":
            result.persisted = count_write_revisions(target, args.write_families)
        log(
            f"  {target.name} {op.name}: {run.rps:,.0f} req/s, p50 {run.latency_us['p50'] / 1000:.2f} ms, "
            f"p99 {run.latency_us['p99'] / 1000:.2f} ms, errors {run.error_count}"
        )
        results.append(result)
    return results


# --------------------------------------------------------------------------------------------
# Report


@dataclass
class Report:
    args: argparse.Namespace
    results: dict[str, dict[str, OpResult]] = field(default_factory=dict)  # op -> target -> result

    def add(self, r: OpResult) -> None:
        self.results.setdefault(r.operation, {})[r.target] = r

    def ratio(self, op: str) -> float | None:
        by_target = self.results.get(op, {})
        if "dockyard" not in by_target or "moto" not in by_target:
            return None
        moto = by_target["moto"].run.rps
        return by_target["dockyard"].run.rps / moto if moto else None

    def goals(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for op in OPERATIONS:
            if op.name not in self.results:
                continue
            ratio = self.ratio(op.name)
            dock = self.results.get(op.name, {}).get("dockyard")
            p99 = dock.run.latency_us["p99"] / 1000 if dock else None
            errors = dock.run.error_count if dock else None
            goal: dict[str, Any] = {"ratio": None if ratio is None else round(ratio, 2)}
            if op.kind == "read":
                goal["need"] = f">= {READ_RATIO_GOAL:g}x moto req/s and p99 <= {READ_P99_GOAL_MS:g} ms"
                goal["p99_ms"] = None if p99 is None else round(p99, 3)
                holds = (
                    None
                    if ratio is None or p99 is None
                    else ratio >= READ_RATIO_GOAL and p99 <= READ_P99_GOAL_MS and errors == 0
                )
            else:
                goal["need"] = f">= {WRITE_RATIO_GOAL:g}x moto req/s"
                holds = None if ratio is None else ratio >= WRITE_RATIO_GOAL and errors == 0
            goal["holds"] = holds
            out[op.name] = goal
        return out

    def print_table(self, machine: dict[str, Any]) -> None:
        header = (
            f"{'operation':<24}{'target':<10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'errors':>8}{'srv CPU':>9}{'wrk CPU':>9}{'other':>7}{'dock/moto':>11}"
        )
        print()
        print(
            f"ECS API throughput: {self.args.connections} connections, {self.args.duration:g}s per "
            f"operation per target, wrk {self.args.threads} thread(s), SigV4 pre-signed, writes over "
            f"{self.args.write_families} families"
        )
        print(
            f"machine: {machine['cpu_count']} CPUs ({machine['cpus_usable']} usable), shared by server "
            f"and load generator; CPU % is of one core; other = all other processes"
        )
        print(header)
        print("-" * len(header))
        for op in OPERATIONS:
            by_target = self.results.get(op.name, {})
            ratio = self.ratio(op.name)
            first = True
            for name in ("dockyard", "moto"):
                r = by_target.get(name)
                if r is None:
                    continue
                j = r.as_json()
                ratio_s = f"{ratio:.1f}x" if first and ratio is not None else ""
                print(
                    f"{op.name if first else '':<24}{name:<10}{j['rps']:>10,.0f}{j['p50_ms']:>9.2f}"
                    f"{j['p99_ms']:>9.2f}{j['errors']:>8}{j['server_cpu_pct']:>8.0f}%"
                    f"{j['loadgen_cpu_pct']:>8.0f}%{j['other_cpu_pct']:>6.0f}%{ratio_s:>11}"
                )
                first = False
        print()
        for op_name, goal in self.goals().items():
            holds = goal["holds"]
            verdict = "n/a (need both targets)" if holds is None else ("HOLDS" if holds else "MISSED")
            detail = "" if goal["ratio"] is None else f" (ratio {goal['ratio']:.1f}x"
            if detail and "p99_ms" in goal and goal["p99_ms"] is not None:
                detail += f", p99 {goal['p99_ms']:.2f} ms"
            detail += ")" if detail else ""
            print(f"goal {op_name}: {goal['need']}: {verdict}{detail}")
        for op in OPERATIONS:
            for r in self.results.get(op.name, {}).values():
                if r.kind == "write":
                    j = r.as_json()
                    note = " (pool wrapped: some bodies repeated)" if r.wrapped else ""
                    held, answered = j["persisted_revisions"], j["answered_writes"]
                    verdict = "all persisted" if r.persisted_ok else "MISMATCH"
                    print(
                        f"writes {r.target}: {held} revisions held after the run for {answered} answered "
                        f"(check + warm-up + timed; up to {r.unanswered_max} more were in flight when wrk "
                        f"stopped): {verdict}{note}"
                    )

    def as_json(self, machine: dict[str, Any]) -> dict[str, Any]:
        return {
            "benchmark": "api_throughput",
            "config": {
                "duration_s": self.args.duration,
                "warmup_s": self.args.warmup,
                "connections": self.args.connections,
                "wrk_threads": self.args.threads,
                "write_pool": self.args.write_pool,
                "write_families": self.args.write_families,
                "only": self.args.only,
                "operations": self.args.ops,
            },
            "machine": machine,
            "results": {
                op: {name: r.as_json() for name, r in by_target.items()}
                | {"ratio_rps": None if self.ratio(op) is None else round(self.ratio(op) or 0, 2)}
                for op, by_target in self.results.items()
            },
            "goals": self.goals(),
        }


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=int, default=10, help="timed seconds per operation per target")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up seconds before each run (0: none)")
    p.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (the server needs the cores)")
    p.add_argument(
        "--write-pool",
        type=int,
        default=40_000,
        help="distinct pre-signed RegisterTaskDefinition requests per target",
    )
    p.add_argument(
        "--write-families",
        type=int,
        default=DEFAULT_WRITE_FAMILIES,
        help="task definition families the writes rotate over (fewer = more contention per family)",
    )
    p.add_argument(
        "--ops",
        default=",".join(op.name for op in OPERATIONS),
        help="comma-separated operations to run (default: all three)",
    )
    p.add_argument("--only", choices=("dockyard", "moto"), help="benchmark one target only")
    p.add_argument(
        "--dockyard-cmd",
        help="command that starts Dockyard's server, before --host/--port/--state-dir "
        "(default: the venv's 'dockyard server')",
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="record a py-spy flame graph (SVG) of Dockyard's server per operation into DIR "
        "(needs py-spy in the venv; sampling costs the server some throughput)",
    )
    p.add_argument("--keep-workdir", action="store_true", help="keep request files, logs and state")
    args = p.parse_args(argv)
    if args.connections < args.threads:
        p.error("--connections must be >= --threads")
    if args.duration < 1 or args.warmup < 0:
        p.error("--duration must be >= 1 and --warmup >= 0 (whole seconds, as wrk takes them)")
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    if args.write_families < 1:
        p.error("--write-families must be >= 1")
    known = {op.name for op in OPERATIONS}
    args.ops = [name.strip() for name in args.ops.split(",") if name.strip()]
    if not args.ops or not set(args.ops) <= known:
        p.error(f"--ops: choose from {', '.join(sorted(known))}")
    return args


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split()
    return " ".join(out[:2]) if out else "wrk"


@contextlib.contextmanager
def running(start: Callable[[Path], Target], workdir: Path) -> Iterator[Target]:
    target = start(workdir)
    try:
        yield target
    finally:
        stop(target.proc, grace=5)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (and a SIGINT a background shell would ignore) unwind through the finally blocks, which
    # stop the servers: they run in their own process groups and would not get the signal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get update && apt-get install -y wrk", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    machine = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_generator": wrk_version(),
        "note": "server and load generator share these CPUs",
    }
    report = Report(args)
    workdir = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    starters: list[tuple[str, Callable[[Path], Target]]] = []
    if args.only in (None, "dockyard"):
        server_cmd = (
            shlex.split(args.dockyard_cmd) if args.dockyard_cmd else [venv_tool("dockyard"), "server"]
        )
        starters.append(("dockyard", functools.partial(start_dockyard, server_cmd=server_cmd)))
    if args.only in (None, "moto"):
        starters.append(("moto", start_moto))
    try:
        for name, start in starters:
            log(f"starting {name} ...")
            with running(start, workdir) as target:
                log(f"  {target.name} ready at {target.url}")
                for r in bench_target(target, args, workdir, log):
                    report.add(r)
    except RuntimeError as exc:  # a server that did not start or answer, or wrk that failed
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    finally:
        if args.keep_workdir:
            log(f"workdir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.print_table(machine)
    print("BENCH_JSON " + json.dumps(report.as_json(machine), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
