#!/usr/bin/env python3
"""Service scale: how fast the service controller converges, in one run (issue 5, item 9).

1. **Scale-out, real containers**: a fresh ``dockyard server`` and one ``dockyard agent`` on this
   machine's Docker; a service of busybox ``httpd`` tasks goes from desiredCount 0 to ``--tasks``
   (default 50). Timed from the UpdateService call until DescribeServices (polled every
   ``--poll-ms``) shows runningCount == desiredCount, and until the steady state (one COMPLETED
   deployment and the "has reached a steady state." event). Against ``--tasks`` parallel
   ``docker run -d`` of the same image and command (from the first launch until the last exits).
   Goal: <= 1.2x. The server runs with ``--service-settle-seconds 0``, so a RUNNING task counts as
   healthy at once (ECS waits 40 s; that wait is a constant, not work) and the steady state is
   reached as soon as the tasks run.
2. **Rolling deployment of ``--rolling`` tasks** (default 20, after scaling down to it): a new
   revision with the defaults (minimumHealthyPercent 100, maximumPercent 200); timed from the
   UpdateService call until the new deployment is COMPLETED and alone, with the number of live
   tasks (PROVISIONING..RUNNING) sampled every 200 ms against the bound.
3. **Hollow agents**: a second fresh server, ``--hollow-instances`` (default 50) simulated container
   instances that run no containers (``bench/hollow_agents.py``: many instances in one process; or,
   without it, that many ``dockyard agent --runtime simulated`` processes), and a service from 0 to
   ``--hollow-tasks`` (default 5,000) tasks until steady state. Goal: <= 10 s.

Every process runs in its own process group and is stopped in ``finally``; every container this
script caused is removed by label. Traffic goes only to 127.0.0.1 and the Docker socket. The last
line is ``BENCH_JSON {...}``.

Run: ``.venv/bin/python bench/service_scale.py [--tasks 50] [--rolling 20] [--hollow-tasks 5000]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from procs import free_port, spawn, stop, wait_for

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
IMAGE = "dockyard/busybox:latest"
HTTPD = ["httpd", "-f", "-p", "8080"]
BENCH_LABEL = "dockyard-bench"
SCALE_GOAL = 1.2
HOLLOW_GOAL_S = 10.0
LIVE = ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING")
ACCESS, SECRET = "AKIDBENCHSERVICES001", "bench-secret-" + secrets.token_hex(8)


# ---- processes ---------------------------------------------------------------------------------------


def env_with_keys() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DOCKYARD_ACCESS_KEY_ID=ACCESS,
        DOCKYARD_SECRET_ACCESS_KEY=SECRET,
        AWS_ACCESS_KEY_ID=ACCESS,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION=REGION,
    )
    return env


@contextlib.contextmanager
def server(work: Path, name: str, *extra: str) -> Iterator[str]:
    port = free_port()
    state = work / name
    state.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "dockyard.cli.main",
        "server",
        "--port",
        str(port),
        "--state-dir",
        str(state),
    ]
    proc = spawn(
        [*cmd, "--service-settle-seconds", "0", "--log-level", "warning", *extra],
        work / f"{name}.log",
        env_with_keys(),
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError((work / f"{name}.log").read_text()[-3000:])
            with urllib.request.urlopen(f"{endpoint}/_dockyard/health", timeout=1) as r:
                return bool(r.status == 200)

        wait_for(healthy, 30, "the server")
        yield endpoint
    finally:
        stop(proc)


def client(endpoint: str) -> Any:
    return boto3.client(
        "ecs",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=20),
    )


def docker(*args: str, timeout: float = 120) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=True
    ).stdout


def remove_labelled(label: str) -> None:
    ids = docker("ps", "-aq", "--filter", f"label={label}").split()
    for i in range(0, len(ids), 50):
        subprocess.run(["docker", "rm", "-f", *ids[i : i + 50]], capture_output=True, timeout=300)


# ---- measurements ----------------------------------------------------------------------------------


def service_state(ecs: Any, cluster: str, name: str) -> dict[str, Any]:
    return dict(ecs.describe_services(cluster=cluster, services=[name])["services"][0])


def steady(svc: dict[str, Any]) -> bool:
    deps = svc["deployments"]
    return (
        len(deps) == 1
        and deps[0]["rolloutState"] == "COMPLETED"
        and svc["runningCount"] == svc["desiredCount"]
        and bool(svc["events"])
        and svc["events"][0]["message"].endswith("has reached a steady state.")
    )


def converge(ecs: Any, cluster: str, name: str, timeout: float, poll: float) -> tuple[float, float]:
    """Seconds until runningCount == desiredCount, and until the steady state (from now)."""
    t0 = time.monotonic()
    running_at = None
    while True:
        svc = service_state(ecs, cluster, name)
        now = time.monotonic() - t0
        if running_at is None and svc["runningCount"] == svc["desiredCount"]:
            running_at = now
        if running_at is not None and steady(svc):
            return running_at, now
        if now > timeout:
            raise TimeoutError(
                f"{name} did not converge in {timeout}s: {svc['runningCount']}/{svc['desiredCount']}"
            )
        time.sleep(poll)


def live_count(ecs: Any, cluster: str, name: str) -> int:
    arns: list[str] = []
    token = None
    while True:
        page = ecs.list_tasks(cluster=cluster, serviceName=name, **({"nextToken": token} if token else {}))
        arns += page["taskArns"]
        token = page.get("nextToken")
        if not token:
            break
    n = 0
    for i in range(0, len(arns), 100):
        n += sum(
            t["lastStatus"] in LIVE
            for t in ecs.describe_tasks(cluster=cluster, tasks=arns[i : i + 100])["tasks"]
        )
    return n


def breakdown(ecs: Any, cluster: str, name: str, called: float) -> dict[str, float]:
    """When the tasks were created (placed by the controller), pulled and started, after ``called``."""
    arns: list[str] = []
    token = None
    while True:
        page = ecs.list_tasks(cluster=cluster, serviceName=name, **({"nextToken": token} if token else {}))
        arns += page["taskArns"]
        token = page.get("nextToken")
        if not token:
            break
    tasks = []
    for i in range(0, len(arns), 100):
        tasks += ecs.describe_tasks(cluster=cluster, tasks=arns[i : i + 100])["tasks"]

    def at(key: str, pick: Callable[[list[float]], float]) -> float:
        values = [t[key].timestamp() - called for t in tasks if t.get(key)]
        return round(pick(values), 3) if values else -1.0

    return {
        "first_created": at("createdAt", min),
        "last_created": at("createdAt", max),
        "first_started": at("startedAt", min),
        "last_started": at("startedAt", max),
    }


def docker_burst(n: int, run_id: str) -> float:
    """Seconds for ``n`` parallel ``docker run -d`` (first launch until the last exits)."""

    def one(i: int) -> None:
        docker("run", "-d", "--label", f"{BENCH_LABEL}={run_id}", "--memory", "32m", IMAGE, *HTTPD)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(one, range(n)))
    took = time.monotonic() - t0
    remove_labelled(f"{BENCH_LABEL}={run_id}")
    return took


def register(ecs: Any, family: str, version: str, memory: int = 32, command: list[str] | None = None) -> str:
    td = ecs.register_task_definition(
        family=family,
        containerDefinitions=[
            {
                "name": "web",
                "image": IMAGE,
                "memory": memory,
                "essential": True,
                "command": command or HTTPD,
                "environment": [{"name": "VERSION", "value": version}],
            }
        ],
    )
    return str(td["taskDefinition"]["taskDefinitionArn"])


# ---- phases -------------------------------------------------------------------------------------------


def phase_docker(args: argparse.Namespace, work: Path, out: dict[str, Any]) -> None:
    run_id = secrets.token_hex(4)
    family = f"bench-svc-{run_id}"
    with server(work, "docker-server") as endpoint:
        ecs = client(endpoint)
        ecs.create_cluster(clusterName="bench")
        agent = spawn(
            [
                sys.executable,
                "-m",
                "dockyard.cli.agent_cmd",
                "agent",
                "--server",
                endpoint,
                "--cluster",
                "bench",
                "--state-dir",
                str(work / "agent"),
                "--image-pull-behavior",
                "prefer-cached",
                "--stop-timeout",
                "1",
                "--log-level",
                "warning",
            ],
            work / "agent.log",
            env_with_keys(),
        )
        try:
            wait_for(
                lambda: ecs.list_container_instances(cluster="bench")["containerInstanceArns"],
                60,
                "the agent",
            )
            v1 = register(ecs, family, "1")
            ecs.create_service(cluster="bench", serviceName="web", taskDefinition=v1, desiredCount=0)
            converge(ecs, "bench", "web", 30, args.poll_ms / 1000)
            baseline = docker_burst(args.tasks, run_id)
            called = time.time()
            ecs.update_service(cluster="bench", service="web", desiredCount=args.tasks)
            running, settled = converge(ecs, "bench", "web", 300, args.poll_ms / 1000)
            out["breakdown"] = breakdown(ecs, "bench", "web", called)
            out["scale"] = {
                "tasks": args.tasks,
                "dockyard_running_s": round(running, 3),
                "dockyard_steady_s": round(settled, 3),
                "docker_parallel_s": round(baseline, 3),
                "ratio": round(running / baseline, 3),
                "goal": SCALE_GOAL,
            }
            print(f"  where the time goes (s after the call): {out['breakdown']}", flush=True)
            print(
                f"scale 0 -> {args.tasks}: all RUNNING {running:.2f} s, steady state {settled:.2f} s; "
                f"{args.tasks} parallel docker run -d {baseline:.2f} s; ratio {running / baseline:.2f}x "
                f"(goal <= {SCALE_GOAL}x)",
                flush=True,
            )

            ecs.update_service(cluster="bench", service="web", desiredCount=args.rolling)
            converge(ecs, "bench", "web", 120, args.poll_ms / 1000)
            v2 = register(ecs, family, "2")
            peak = [0]
            done = threading.Event()

            def sample() -> None:
                sampler = client(endpoint)
                while not done.is_set():
                    with contextlib.suppress(Exception):
                        peak[0] = max(peak[0], live_count(sampler, "bench", "web"))
                    done.wait(0.2)

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            t0 = time.monotonic()
            ecs.update_service(cluster="bench", service="web", taskDefinition=v2)
            wait_for(
                lambda: steady(s := service_state(ecs, "bench", "web")) and s["taskDefinition"] == v2,
                300,
                "the rolling deployment",
                args.poll_ms / 1000,
            )
            rolled = time.monotonic() - t0
            done.set()
            thread.join(10)
            out["rolling"] = {
                "tasks": args.rolling,
                "seconds": round(rolled, 3),
                "peak_live": peak[0],
                "max_allowed": args.rolling * 2,
            }
            print(
                f"rolling deployment of {args.rolling} tasks (100%/200%): {rolled:.2f} s; peak live tasks "
                f"{peak[0]} (bound {args.rolling * 2})",
                flush=True,
            )
            ecs.delete_service(cluster="bench", service="web", force=True)
            wait_for(lambda: service_state(ecs, "bench", "web")["status"] == "INACTIVE", 120, "INACTIVE")
        finally:
            stop(agent)
            remove_labelled(f"com.amazonaws.ecs.task-definition-family={family}")
            remove_labelled(f"{BENCH_LABEL}={run_id}")


def hollow_agents(endpoint: str, n: int, work: Path) -> list[subprocess.Popen[bytes]]:
    """``n`` simulated instances: bench/hollow_agents.py (one process), else ``n`` agent processes."""
    script = ROOT / "bench" / "hollow_agents.py"
    common = ["--cpu-units", "1000000", "--memory-mib", "10000000"]
    if script.exists():
        cmd = [
            sys.executable,
            str(script),
            "--server",
            endpoint,
            "--cluster",
            "hollow",
            "--instances",
            str(n),
        ]
        return [spawn([*cmd, *common], work / "hollow.log", env_with_keys())]
    procs = []
    for i in range(n):
        cmd = [
            sys.executable,
            "-m",
            "dockyard.cli.agent_cmd",
            "agent",
            "--server",
            endpoint,
            "--cluster",
            "hollow",
        ]
        cmd += ["--state-dir", str(work / f"hollow-{i}"), "--runtime", "simulated", "--log-level", "warning"]
        procs.append(spawn([*cmd, *common], work / f"hollow-{i}.log", env_with_keys()))
    return procs


def phase_hollow(args: argparse.Namespace, work: Path, out: dict[str, Any]) -> None:
    with server(work, "hollow-server") as endpoint:
        ecs = client(endpoint)
        ecs.create_cluster(clusterName="hollow")
        procs = hollow_agents(endpoint, args.hollow_instances, work)
        try:
            wait_for(
                lambda: (
                    len(
                        ecs.list_container_instances(cluster="hollow", maxResults=100)[
                            "containerInstanceArns"
                        ]
                    )
                    >= min(args.hollow_instances, 100)
                ),
                120,
                "the hollow instances",
            )
            td = register(ecs, "bench-hollow", "1", memory=8, command=["sleep", "3600"])
            ecs.create_service(cluster="hollow", serviceName="many", taskDefinition=td, desiredCount=0)
            converge(ecs, "hollow", "many", 30, 0.1)
            called = time.time()
            ecs.update_service(cluster="hollow", service="many", desiredCount=args.hollow_tasks)
            running, settled = converge(ecs, "hollow", "many", 600, 0.1)
            out["hollow_breakdown"] = breakdown(ecs, "hollow", "many", called)
            print(f"  where the time goes (s after the call): {out['hollow_breakdown']}", flush=True)
            out["hollow"] = {
                "tasks": args.hollow_tasks,
                "instances": args.hollow_instances,
                "agents": "bench/hollow_agents.py"
                if len(procs) == 1
                else "dockyard agent --runtime simulated",
                "running_s": round(running, 3),
                "steady_s": round(settled, 3),
                "goal_s": HOLLOW_GOAL_S,
            }
            print(
                f"hollow: 0 -> {args.hollow_tasks} tasks on {args.hollow_instances} instances: all RUNNING "
                f"{running:.2f} s, steady state {settled:.2f} s (goal <= {HOLLOW_GOAL_S:.0f} s)",
                flush=True,
            )
        finally:
            for p in procs:
                stop(p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=50, help="real tasks to scale out to (phase 1)")
    parser.add_argument("--rolling", type=int, default=20, help="tasks in the rolling deployment (phase 2)")
    parser.add_argument(
        "--hollow-tasks", type=int, default=5000, help="hollow tasks to scale out to (phase 3)"
    )
    parser.add_argument("--hollow-instances", type=int, default=50, help="simulated container instances")
    parser.add_argument("--poll-ms", type=float, default=50, help="DescribeServices polling interval")
    parser.add_argument("--skip-docker", action="store_true", help="skip phases 1 and 2 (real containers)")
    parser.add_argument("--skip-hollow", action="store_true", help="skip phase 3 (hollow agents)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep servers' state and logs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dockyard-service-bench-"))
    out: dict[str, Any] = {}
    try:
        if not args.skip_docker:
            phase_docker(args, work, out)
        if not args.skip_hollow:
            phase_hollow(args, work, out)
    finally:
        load = os.getloadavg()
        out["loadavg"] = [round(x, 2) for x in load]
        print("BENCH_JSON " + json.dumps(out), flush=True)
        if not args.keep_workdir:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        else:
            print(f"work directory kept: {work}")


if __name__ == "__main__":
    main()
