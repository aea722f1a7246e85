#!/usr/bin/env python3
"""Load-balancer benchmark (issue 6, item 5).

(b) throughput and latency through the load balancer against hitting one task directly:

1. starts a ``dockyard server`` (fresh state directory, its own load-balancer network on loopback);
2. starts one target: a busybox httpd container (``dockyard/busybox:latest``, built by
   ``scripts/docker.sh``) published on 127.0.0.1, as a bridge-mode task is;
3. creates through the ELBv2 API an application load balancer, a target group with the fastest
   health checks the API allows, an HTTP listener on port 80, registers the container as an ``ip``
   target and waits until it is healthy;
4. drives ``wrk`` (keep-alive, closed loop) for ``--duration`` seconds at the task directly and at
   the load balancer's DNSName (it resolves through the hosts file to the LB's own address), after
   an untimed warm-up of each;
5. prints req/s, p50, p99 and errors for both, the ratio, whether the goal holds (>= 0.8x direct
   with one target), and a last line ``BENCH_JSON {...}``.

(a) constant load during a rolling deployment of 10 tasks (failed requests, time a killed task keeps
receiving requests) needs the services controller (issue 5) to run deployments; ``rolling_deployment``
is the hook it will fill. Until then the run prints that part (a) was not run.

Run: ``.venv/bin/python bench/lb.py [--duration 10] [--connections 16]``. Needs Debian's ``wrk``
and HAProxy, Docker with the busybox image. Everything it starts binds loopback and is removed at
the end (the load balancer is deleted, the container removed, the server's process group stopped).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3

REGION = "us-east-1"
IMAGE = "dockyard/busybox:latest"
RATIO_GOAL = 0.8
KEY, SECRET = "AKIDBENCHLB000000001", "bench-lb-secret"
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as e:
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}: {last!r}")


@contextlib.contextmanager
def dockyard_server(workdir: Path, network: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DOCKYARD_ACCESS_KEY_ID": KEY, "DOCKYARD_SECRET_ACCESS_KEY": SECRET}
    log = open(workdir / "server.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dockyard.cli.main",
            "server",
            "--port",
            str(port),
            "--state-dir",
            str(workdir / "state"),
            "--lb-network",
            network,
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=ROOT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {(workdir / 'server.log').read_text()[-2000:]}")
            with urllib.request.urlopen(endpoint + "/_dockyard/health", timeout=1) as r:
                return r.status == 200

        wait_until(up, 30, "dockyard server")
        yield endpoint
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextlib.contextmanager
def busybox_task() -> Iterator[int]:
    """A busybox httpd container published on 127.0.0.1: what a bridge-mode task looks like."""
    port = free_port()
    name = f"dockyard-bench-lb-{uuid.uuid4().hex[:10]}"
    script = "mkdir -p /srv && echo task > /srv/index.html && exec httpd -f -p 80 -h /srv"
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--rm",
            "--name",
            name,
            "-p",
            f"127.0.0.1:{port}:80",
            IMAGE,
            "sh",
            "-c",
            script,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).status == 200, 30, "task"
        )
        yield port
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def run_wrk(url: str, duration: int, connections: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    figures: dict[str, float] = {"requests": 0.0, "errors": 0.0}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            figures["rps"] = float(line.split()[1])
        elif re.match(r"^(50|99)(\.0+)?%", line):
            figures["p" + line.split("%")[0].split(".")[0]] = _ms(line.split()[1])
        elif "requests in" in line:
            figures["requests"] = float(line.split()[0])
        elif line.startswith("Non-2xx or 3xx responses:"):
            figures["errors"] += float(line.split(":")[1])
        elif line.startswith("Socket errors:"):
            figures["errors"] += sum(int(n) for n in re.findall(r"\d+", line))
    return figures


def _median(runs: list[dict[str, float]]) -> dict[str, Any]:
    """The run with the median req/s (its own p50/p99), with the errors of every run added up."""
    ordered = sorted(runs, key=lambda r: r.get("rps", 0.0))
    middle: dict[str, Any] = dict(ordered[len(ordered) // 2])
    middle["errors"] = sum(r["errors"] for r in runs)
    middle["rounds_rps"] = [round(r.get("rps", 0.0)) for r in runs]
    return middle


def rolling_deployment(elbv2: Any, endpoint: str) -> dict[str, float] | None:
    """Part (a). TODO(issue 5): once services run deployments, create a 10-task service behind the
    load balancer, hold constant wrk load on the listener while UpdateService rolls a new task
    definition, and report failed requests (goal 0); then kill one task's container with
    ``docker kill`` and report how long it kept receiving requests after Docker's die event (goal
    <= 3 s). Returns None until then."""
    return None


def part_b(endpoint: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    elbv2 = boto3.client(
        "elbv2",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )
    tag = uuid.uuid4().hex[:8]
    lb = elbv2.create_load_balancer(Name=f"bench-{tag}", Subnets=["subnet-bench"])["LoadBalancers"][0]
    tg = elbv2.create_target_group(
        Name=f"bench-{tag}",
        Protocol="HTTP",
        Port=80,
        VpcId="vpc-bench",
        TargetType="ip",
        HealthCheckIntervalSeconds=5,
        HealthCheckTimeoutSeconds=2,
        HealthyThresholdCount=2,
        UnhealthyThresholdCount=2,
    )["TargetGroups"][0]
    try:
        elbv2.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
        )
        with busybox_task() as port:
            elbv2.register_targets(
                TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": "127.0.0.1", "Port": port}]
            )

            def healthy() -> bool:
                out = elbv2.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])
                return out["TargetHealthDescriptions"][0]["TargetHealth"]["State"] == "healthy"

            wait_until(healthy, 40, "target healthy")
            urls = {"direct": f"http://127.0.0.1:{port}/", "via LB": f"http://{lb['DNSName']}/"}
            runs: dict[str, list[dict[str, float]]] = {label: [] for label in urls}
            for _ in range(args.rounds):  # alternate, so that drift in the machine's load hits both
                for label, url in urls.items():
                    if args.warmup:
                        run_wrk(url, args.warmup, args.connections, args.threads)
                    runs[label].append(run_wrk(url, args.duration, args.connections, args.threads))
        return {label: _median(r) for label, r in runs.items()}
    finally:
        elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
        with contextlib.suppress(Exception):
            wait_until(
                lambda: elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"]) is not None,
                10,
                "delete",
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="timed seconds per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed seconds before each run (0: none)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per target (median shown)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--network", default="127.150.0.0/24", help="the server's load-balancer network")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the server's state and logs")
    args = parser.parse_args()
    for tool in ("wrk", "docker"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (scripts/setup.sh installs it)")

    workdir = Path(tempfile.mkdtemp(prefix="dockyard-bench-lb-"))
    try:
        with dockyard_server(workdir, args.network) as endpoint:
            deployment = rolling_deployment(None, endpoint)
            results = part_b(endpoint, args)
    finally:
        if args.keep_workdir:
            print(f"workdir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    direct, via = results["direct"], results["via LB"]
    ratio = via["rps"] / direct["rps"] if direct.get("rps") else float("nan")
    print(
        f"\n(b) one busybox httpd task, {args.connections} connections, median of {args.rounds} "
        f"alternating runs of {args.duration} s"
    )
    print(f"{'target':<8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for label, r in results.items():
        p50, p99 = r.get("p50", float("nan")), r.get("p99", float("nan"))
        rounds = r["rounds_rps"]
        print(f"{label:<8} {r['rps']:>10.0f} {p50:>8.2f} {p99:>8.2f} {r['errors']:>7.0f}   runs: {rounds}")
    verdict = "HOLDS" if ratio >= RATIO_GOAL and via["errors"] == 0 else "MISSED"
    print(f"goal: via LB >= {RATIO_GOAL}x direct req/s, no errors: {ratio:.2f}x -> {verdict}")
    if deployment is None:
        print("(a) rolling deployment: not run, it needs the services controller (issue 5)")
    print("BENCH_JSON " + json.dumps({"b": results, "ratio": ratio, "goal_b": verdict, "a": deployment}))


if __name__ == "__main__":
    main()
