#!/usr/bin/env python3
"""Placement at scale: decisions per second, committed placements per second, conflicts.

Three phases (``--phases``, default all), each printing its figures:

1. ``decisions``: in-process ``place()`` over ``--instances`` instance views, no store: binpack,
   spread (instanceId, attribute:ecs.availability-zone) and random, RunTask-sized requests
   (``--count`` tasks each), every decision applied to the index before the next, as the cache
   would after a commit. Goal >= 10,000 decisions (task placements) per second.
2. ``e2e``: a real ``dockyard server`` (SQLite, group commit: every acknowledged write is synced)
   and ``--instances`` hollow instances in a separate process (bench/hollow_agents.py: register,
   long-poll, report RUNNING, batched; their traffic is part of the load); ``--clients`` concurrent
   signed clients send RunTask (``--count`` each, a clientToken each) until ``--tasks`` are placed.
   Prints committed placements/s, RunTask p50/p99, the conflict rate the server logged, then an
   invariant scan through the API: reserved <= registered on every instance (remaining >= 0 and
   registered - remaining equals the sum of its tasks), every task placed once and known to the
   server exactly as RunTask answered. Goal >= 2,000 placements/s.
3. ``two-servers``: two server processes on one SQLite file (the second learns of the first's
   writes by following the store's change log), hollow instances, half the clients on each server,
   ``spread`` on ``attribute:ecs.availability-zone`` until the cluster is ``--utilisation`` full
   (default 80%). Prints the conflict rate (allocation conflicts / commit attempts, both servers)
   and the load average before and after. Goal <= 5%.

Figures only, never asserted as tests. Every process binds 127.0.0.1 and is stopped (its process
group) when the run ends or fails. Run: ``.venv/bin/python bench/placement.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dockyard.client.ecs import ECS_PREFIX, ClientError, EcsClient  # noqa: E402
from dockyard.client.sigv4 import Credentials  # noqa: E402
from dockyard.domain.resources import Resources, remaining  # noqa: E402
from dockyard.scheduler import (  # noqa: E402
    InstanceIndex,
    InstanceView,
    PlacementRequest,
    PlacementStrategy,
    Snapshot,
    TaskAsk,
    place,
)

REGION = "us-east-1"
CLUSTER = "bench"
FAMILY = "bench-web"
STATS = re.compile(
    r"placement stats: attempts=(\d+) commits=(\d+) conflicts=(\d+) guard_conflicts=\d+ placed=(\d+)"
)
LOG_EVERY = 2.0  # placement.inflight.LOG_EVERY: how often servers log their placement stats

STRATEGIES: dict[str, tuple[PlacementStrategy, ...]] = {
    "binpack(memory)": (PlacementStrategy("binpack", "memory"),),
    "spread(instanceId)": (PlacementStrategy("spread", "instanceId"),),
    "spread(attribute:ecs.availability-zone)": (
        PlacementStrategy("spread", "attribute:ecs.availability-zone"),
    ),
    "random": (PlacementStrategy("random"),),
}


# ---- phase 1: in-process decisions -----------------------------------------------------------


def decisions(instances: int, count: int, tasks: int, seed: int) -> dict[str, float]:
    out: dict[str, float] = {}
    ask = TaskAsk(Resources(128, 256))
    for name, strategy in STRATEGIES.items():
        index = InstanceIndex(
            InstanceView(
                arn=f"arn:aws:ecs:{REGION}:000000000000:container-instance/{CLUSTER}/{i:06d}",
                id=f"{i:06d}",
                status="ACTIVE",
                agent_connected=True,
                registered=Resources(4096, 8192, frozenset({22})),
                remaining=Resources(4096, 8192, frozenset({22})),
                attributes={"ecs.availability-zone": f"{REGION}{'abc'[i % 3]}", "ecs.os-type": "linux"},
            )
            for i in range(instances)
        )
        rng = random.Random(seed)
        request = PlacementRequest((ask,) * count, group=f"family:{FAMILY}", strategy=strategy)
        placed = 0
        spent = 0.0
        while placed < tasks:
            t0 = time.perf_counter()
            result = place(request, Snapshot(index=index), rng)
            spent += time.perf_counter() - t0
            if not result.placements:
                break
            for p in result.placements:  # what the cache does once the commit is applied
                view = index.views[p.instance_arn]
                groups = dict(view.groups)
                groups[request.group or ""] = groups.get(request.group or "", 0) + 1
                index.put(replace(view, remaining=remaining(view.remaining, ask.needs), groups=groups))
            placed += len(result.placements)
        out[name] = placed / spent if spent else 0.0
        print(f"  {name:42s} {out[name]:>10,.0f} decisions/s ({placed} tasks over {instances} instances)")
    return out


# ---- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def spawn(name: str, cmd: list[str], log: Path, env: dict[str, str]) -> Proc:
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Proc(name, proc, log)


@dataclass
class Server:
    proc: Proc
    endpoint: str


PROFILE: list[str] = []  # --profile DIR: record the servers with py-spy (collapsed stacks)
SERVER_PYTHON_ARGS: list[str] = []  # --server-python-args: e.g. "-m cProfile -o FILE" (an experiment)


def start_server(workdir: Path, name: str, store: str, env: dict[str, str]) -> Server:
    port = free_port()
    state = workdir / name
    state.mkdir(exist_ok=True)
    cmd = [sys.executable, *SERVER_PYTHON_ARGS, "-m", "dockyard.cli.main", "server"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]

    cmd += ["--state-dir", str(state), "--store", store, "--log-level", "info", "--agent-timeout", "120"]
    proc = spawn(name, cmd, workdir / f"{name}.log", env)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {proc.text()[-3000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{endpoint}/_dockyard/health", timeout=1) as r,
        ):
            if r.status == 200:
                return Server(proc, endpoint)
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"{name} did not become healthy")


def start_hollow(
    workdir: Path, server: Server, args: argparse.Namespace, env: dict[str, str], cpu: int, mem: int
) -> Proc:
    cmd = [sys.executable, str(ROOT / "bench" / "hollow_agents.py"), "--server", server.endpoint]
    cmd += ["--cluster", CLUSTER, "--instances", str(args.instances), "--cpu-units", str(cpu)]
    cmd += ["--memory-mib", str(mem), "--zones", "3", "--run-delay", str(args.run_delay)]
    cmd += ["--report-window-ms", str(args.report_window_ms)]
    cmd += ["--poll-interval-ms", str(args.poll_interval_ms)]
    cmd += ["--state-dir", str(workdir / f"hollow-{server.proc.name}")]  # fresh instances per phase
    if args.register_only:
        cmd.append("--register-only")
    if args.no_session:
        cmd.append("--no-session")
    log = workdir / f"hollow-{server.proc.name}.log"  # one per phase: READY must be this run's
    proc = spawn("hollow", cmd, log, env)
    deadline = time.monotonic() + max(120, args.instances / 10)
    while time.monotonic() < deadline:
        if "READY" in proc.text():
            return proc
        if proc.proc.poll() is not None:
            raise RuntimeError(f"hollow agents exited: {proc.text()[-3000:]}")
        time.sleep(0.2)
    proc.stop()
    raise RuntimeError("hollow agents did not register in time")


@contextlib.contextmanager
def stopping(procs: list[Proc]) -> Iterator[None]:
    try:
        yield
    finally:
        for p in reversed(procs):
            p.stop()


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def placement_stats(*servers: Server) -> tuple[int, int, int, int]:
    total = [0, 0, 0, 0]
    for s in servers:
        found = STATS.findall(s.proc.text())
        if found:
            for i, v in enumerate(found[-1]):
                total[i] += int(v)
    return total[0], total[1], total[2], total[3]


# ---- load ------------------------------------------------------------------------------------


@dataclass
class Load:
    latencies: list[float]
    placed: list[str]
    failures: int
    errors: int
    seconds: float


async def call(client: EcsClient, op: str, body: dict[str, Any]) -> dict[str, Any]:
    return await client.call(ECS_PREFIX + op, body, timeout=120)


async def setup_cluster(endpoint: str, creds: Credentials, cpu: int, mem: int) -> None:
    async with aiohttp.ClientSession() as session:
        client = EcsClient(endpoint, creds, REGION, session=session)
        await call(client, "CreateCluster", {"clusterName": CLUSTER})
        container = {"name": "web", "image": "busybox", "cpu": cpu, "memory": mem, "essential": True}
        await call(client, "RegisterTaskDefinition", {"family": FAMILY, "containerDefinitions": [container]})


async def drive(
    endpoints: list[str],
    creds: Credentials,
    *,
    clients: int,
    count: int,
    tasks: int,
    strategy: list[dict[str, str]],
) -> Load:
    latencies: list[float] = []
    placed: list[str] = []
    failures = errors = 0
    issued = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client_loop(n: int) -> None:
            nonlocal issued, failures, errors
            client = EcsClient(endpoints[n % len(endpoints)], creds, REGION, session=session)
            while issued < tasks:
                want = min(count, tasks - issued)
                issued += want
                body: dict[str, Any] = {
                    "cluster": CLUSTER,
                    "taskDefinition": FAMILY,
                    "count": want,
                    "clientToken": uuid.uuid4().hex,
                }
                if strategy:
                    body["placementStrategy"] = strategy
                t0 = time.perf_counter()
                try:
                    out = await call(client, "RunTask", body)
                except ClientError as e:
                    errors += 1
                    issued -= want
                    print(f"    RunTask error: {e}", file=sys.stderr)
                    await asyncio.sleep(0.05)
                    continue
                latencies.append(time.perf_counter() - t0)
                placed.extend(t["taskArn"] for t in out.get("tasks", ()))
                missing = want - len(out.get("tasks", ()))
                if missing:
                    failures += missing
                    issued -= missing
                    if not out.get("tasks"):
                        return  # the cluster is full

        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(n) for n in range(clients)))
        seconds = time.perf_counter() - t0
    return Load(latencies, placed, failures, errors, seconds)


async def flush_stats(endpoint: str, creds: Credentials) -> None:
    """Servers log their placement stats at most every LOG_EVERY seconds, after a commit."""
    await asyncio.sleep(LOG_EVERY + 0.2)
    async with aiohttp.ClientSession() as session:
        client = EcsClient(endpoint, creds, REGION, session=session)
        with contextlib.suppress(ClientError):
            await call(client, "RunTask", {"cluster": CLUSTER, "taskDefinition": FAMILY, "count": 1})


async def scan(endpoint: str, creds: Credentials, placed: list[str]) -> list[str]:
    """The invariants, through the API; a list of violations (empty: all hold)."""
    problems: list[str] = []
    async with aiohttp.ClientSession() as session:
        client = EcsClient(endpoint, creds, REGION, session=session)
        arns: list[str] = []
        token: str | None = None
        while True:
            body: dict[str, Any] = {"cluster": CLUSTER, "maxResults": 100}
            if token:
                body["nextToken"] = token
            page = await call(client, "ListContainerInstances", body)
            arns += page["containerInstanceArns"]
            token = page.get("nextToken")
            if not token:
                break
        reserved_by_instance: dict[str, tuple[int, int]] = {}
        for start in range(0, len(arns), 100):
            out = await call(
                client,
                "DescribeContainerInstances",
                {"cluster": CLUSTER, "containerInstances": arns[start : start + 100]},
            )
            for ci in out["containerInstances"]:
                reg = {r["name"]: r.get("integerValue", 0) for r in ci["registeredResources"]}
                rem = {r["name"]: r.get("integerValue", 0) for r in ci["remainingResources"]}
                if rem["CPU"] < 0 or rem["MEMORY"] < 0:
                    problems.append(f"{ci['containerInstanceArn']} over-committed: {rem}")
                reserved_by_instance[ci["containerInstanceArn"]] = (
                    reg["CPU"] - rem["CPU"],
                    reg["MEMORY"] - rem["MEMORY"],
                )
        if len(set(placed)) != len(placed):
            problems.append(f"{len(placed) - len(set(placed))} task ARNs answered twice")
        summed: dict[str, list[int]] = {}
        seen = 0
        wanted = sorted(set(placed))
        for start in range(0, len(wanted), 100):
            out = await call(
                client, "DescribeTasks", {"cluster": CLUSTER, "tasks": wanted[start : start + 100]}
            )
            if out.get("failures"):
                problems.append(f"{len(out['failures'])} placed tasks are unknown to the server")
            for t in out["tasks"]:
                seen += 1
                s = summed.setdefault(t["containerInstanceArn"], [0, 0])
                s[0] += sum(int(c.get("cpu", 0)) for c in t["containers"])
                s[1] += sum(int(c.get("memory", 0)) for c in t["containers"])
        for arn, (cpu, mem) in summed.items():
            if reserved_by_instance.get(arn, (0, 0)) < (cpu, mem):
                problems.append(
                    f"{arn}: tasks need {(cpu, mem)}, the instance reserved {reserved_by_instance.get(arn)}"
                )
        if seen != len(wanted):
            problems.append(f"{len(wanted) - seen} placed tasks not described")
    return problems


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- phases 2 and 3 --------------------------------------------------------------------------


def e2e(args: argparse.Namespace, workdir: Path, env: dict[str, str], creds: Credentials) -> dict[str, Any]:
    server = start_server(workdir, "server", f"sqlite:///{workdir}/e2e.db", env)
    procs = [server.proc]
    with stopping(procs):
        asyncio.run(setup_cluster(server.endpoint, creds, 128, 256))
        hollow = start_hollow(workdir, server, args, env, cpu=4096, mem=8192)
        procs.append(hollow)
        if PROFILE:
            for name, pid in (("server", server.proc.proc.pid), ("hollow", hollow.proc.pid)):
                spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "-d", "8"]
                spy += ["-r", "250", "--gil", "-f", "raw", "-o", str(Path(PROFILE[0]) / f"{name}.collapsed")]
                procs.append(spawn("py-spy", spy, workdir / f"py-spy-{name}.log", env))
        pids = {"server": server.proc.proc.pid, "hollow agents": hollow.proc.pid}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        own = time.process_time()
        load = asyncio.run(
            drive(
                [server.endpoint],
                creds,
                clients=args.clients,
                count=args.count,
                tasks=args.tasks,
                strategy=[],
            )
        )
        spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        cpu = {name: round(seconds / load.seconds, 2) for name, seconds in spent.items()}
        cpu["clients"] = round((time.process_time() - own) / load.seconds, 2)
        asyncio.run(flush_stats(server.endpoint, creds))
        attempts, _commits, conflicts, _placed = placement_stats(server)
        problems = asyncio.run(scan(server.endpoint, creds, load.placed))
        hollow.stop()
        hollow_stats = next(
            (json.loads(line[12:]) for line in hollow.text().splitlines() if line.startswith("HOLLOW_JSON ")),
            {},
        )
    rate = len(load.placed) / load.seconds if load.seconds else 0.0
    out = {
        "placements": len(load.placed),
        "seconds": round(load.seconds, 2),
        "placements_per_s": round(rate, 1),
        "runtask_p50_ms": round(percentile(load.latencies, 0.5) * 1000, 1),
        "runtask_p99_ms": round(percentile(load.latencies, 0.99) * 1000, 1),
        "runtask_calls": len(load.latencies),
        "failed_tasks": load.failures,
        "errors": load.errors,
        "commit_attempts": attempts,
        "conflicts": conflicts,
        "conflict_rate": round(conflicts / attempts, 4) if attempts else None,
        "invariant_problems": problems,
        "hollow": hollow_stats,
        "cpu_cores": cpu,
        # what the server spent per placement, agent traffic included: steadier than placements/s
        # when other work shares the machine
        "server_cpu_ms_per_placement": round(spent["server"] * 1000 / len(load.placed), 3)
        if load.placed
        else None,
    }
    print(
        f"  committed placements/s    {rate:,.0f}  ({len(load.placed)} tasks in {load.seconds:.1f} s,"
        " goal >= 2,000)"
    )
    print(
        f"  RunTask p50 / p99         {out['runtask_p50_ms']} ms / {out['runtask_p99_ms']} ms"
        f" ({len(load.latencies)} calls of {args.count})"
    )
    print(f"  conflicts                 {conflicts} of {attempts} commit attempts ({out['conflict_rate']})")
    print(f"  hollow agents             {hollow_stats}")
    print(f"  CPU (cores) during load   {cpu}; server {out['server_cpu_ms_per_placement']} ms per placement")
    print(f"  invariant scan            {'all hold' if not problems else problems[:5]}")
    return out


def two_servers(
    args: argparse.Namespace, workdir: Path, env: dict[str, str], creds: Credentials
) -> dict[str, Any]:
    store = f"sqlite:///{workdir}/shared.db"
    load_before = [round(x, 2) for x in os.getloadavg()]
    first = start_server(workdir, "server-a", store, env)
    procs = [first.proc]
    with stopping(procs):
        second = start_server(workdir, "server-b", store, env)
        procs.append(second.proc)
        per_instance = 10
        asyncio.run(setup_cluster(first.endpoint, creds, 256, 512))
        hollow = start_hollow(workdir, first, args, env, cpu=256 * per_instance, mem=512 * per_instance)
        procs.append(hollow)
        target = int(args.instances * per_instance * args.utilisation)
        spread = [{"type": "spread", "field": "attribute:ecs.availability-zone"}]
        load = asyncio.run(
            drive(
                [first.endpoint, second.endpoint],
                creds,
                clients=args.clients,
                count=args.count,
                tasks=target,
                strategy=spread,
            )
        )
        asyncio.run(flush_stats(first.endpoint, creds))
        asyncio.run(flush_stats(second.endpoint, creds))
        attempts, _commits, conflicts, _placed = placement_stats(first, second)
        problems = asyncio.run(scan(first.endpoint, creds, load.placed))
    rate = conflicts / attempts if attempts else 0.0
    load_after = [round(x, 2) for x in os.getloadavg()]
    print(
        f"  placed {len(load.placed)} tasks ({args.utilisation:.0%} of capacity) in {load.seconds:.1f} s"
        " over two servers"
    )
    print(f"  load average (1/5/15 min) before {load_before}, after {load_after}")
    print(f"  conflict rate             {rate:.2%} ({conflicts} of {attempts} commit attempts, goal <= 5%)")
    print(f"  invariant scan            {'all hold' if not problems else problems[:5]}")
    return {
        "placements": len(load.placed),
        "seconds": round(load.seconds, 2),
        "commit_attempts": attempts,
        "conflicts": conflicts,
        "conflict_rate": round(rate, 4),
        "invariant_problems": problems,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phases", default="decisions,e2e,two-servers")
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--utilisation", type=float, default=0.8)
    p.add_argument("--run-delay", type=float, default=0.0)
    p.add_argument("--report-window-ms", type=float, default=100.0, help="the hollow agents' report window")
    p.add_argument("--poll-interval-ms", type=float, default=0.0, help="the hollow agents' poll interval")
    p.add_argument(
        "--register-only",
        action="store_true",
        help="hollow instances register but neither poll nor report (RunTask alone; not the goal's load)",
    )
    p.add_argument(
        "--no-session",
        action="store_true",
        help="hollow agents send Poll and Report as HTTP requests instead of over agent sessions",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="100 instances, 1,000 tasks")
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument("--profile", metavar="DIR", help="record each server with py-spy into DIR")
    p.add_argument(
        "--server-python-args",
        default="",
        metavar="ARGS",
        help='interpreter arguments for the servers (before -m dockyard.cli.main), e.g. "-X dev"',
    )
    args = p.parse_args()
    SERVER_PYTHON_ARGS.extend(args.server_python_args.split())
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        PROFILE.append(args.profile)
    if args.quick:
        args.instances, args.tasks = 100, 1000
    phases = set(args.phases.split(","))
    results: dict[str, Any] = {}
    if "decisions" in phases:
        print(f"in-process decisions ({args.instances} instances, requests of {args.count}):")
        results["decisions_per_s"] = decisions(args.instances, args.count, args.tasks, args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="dockyard-bench-placement-"))
    access, secret = "AKIDBENCH" + secrets.token_hex(6).upper(), secrets.token_urlsafe(30)
    env = dict(os.environ, DOCKYARD_ACCESS_KEY_ID=access, DOCKYARD_SECRET_ACCESS_KEY=secret)
    env.update(AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret, PYTHONPATH=str(ROOT / "src"))
    creds = Credentials(access, secret)
    try:
        if "e2e" in phases:
            print(
                f"one server, {args.instances} hollow instances, {args.clients} clients,"
                f" RunTask count {args.count}:"
            )
            results["e2e"] = e2e(args, workdir, env, creds)
        if "two-servers" in phases:
            print(f"two servers on one SQLite file, spread, {args.utilisation:.0%} utilisation:")
            results["two_servers"] = two_servers(args, workdir, env, creds)
    finally:
        if args.keep_workdir:
            print(f"workdir kept: {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    print("BENCH_JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
