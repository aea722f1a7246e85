#!/usr/bin/env python3
"""Load-balancer benchmark (issue 6, item 5).

(b) throughput and latency through the load balancer against hitting one task directly:

1. starts a ``dockyard server`` (fresh state directory, its own load-balancer network on loopback);
2. starts one target: a busybox httpd container (``dockyard/busybox:latest``, built by
   ``scripts/docker.sh``) published on 127.0.0.1, as a bridge-mode task is;
3. creates through the ELBv2 API an application load balancer, a target group with the fastest
   health checks the API allows, an HTTP listener on port 80, registers the container as an ``ip``
   target and waits until it is healthy;
4. drives ``wrk`` (keep-alive, closed loop; the same connections and threads for both) for
   ``--duration`` seconds at the task directly and at the load balancer's DNSName (it resolves
   through the hosts file to the LB's own address), each after an untimed warm-up, in
   ``--rounds`` alternating rounds against the same container;
5. prints every run (req/s, p99, errors, and the CPU, as a percentage of one core, of the whole
   machine, the task's container cgroup, HAProxy, wrk and everything else, with the load average),
   then the median run of each side, the ratio, whether the goal holds (>= 0.8x direct with one
   target), the load average at start and end, and a last line ``BENCH_JSON {...}``.

Both sides open one TCP connection to the container per request (busybox httpd closes after each
answer): wrk does it directly, HAProxy does it for wrk's keep-alive connections. Their kernel work
is charged to wrk in the direct runs and to HAProxy through the load balancer; the machine's two
cores are saturated either way, so the ratio is about the CPU each request costs on both paths.

(a) constant load during a rolling deployment, in the same server before (b):

1. starts one ``dockyard agent`` (this machine's Docker) and a service of ``--tasks`` (10) busybox
   httpd tasks (bridge mode, dynamic host ports) behind an application load balancer: a target
   group of type ``instance`` with the fastest health checks the API allows and a deregistration
   delay of ``--drain`` seconds;
2. holds ``wrk`` load on the listener while UpdateService rolls a new revision (100%/200%) until one
   COMPLETED deployment of it has every target healthy: failed requests (non-2xx and socket errors,
   goal 0);
3. under load again, ``docker kill``s one task's container behind Dockyard's back and samples the
   load balancer's HAProxy (``show stat`` on its admin socket every 50 ms) for that server: how long
   after Docker's ``die`` event it stayed in rotation (goal <= 3 s; it leaves when Dockyard
   deregisters it from the agent's report, not when health checks notice), when HAProxy last
   picked it (``lbtot``; HAProxy retries and redispatches those connections), and failed requests.

Run: ``.venv/bin/python bench/lb.py [--duration 10] [--connections 16]``. Needs Debian's ``wrk``
and HAProxy, Docker with the busybox image. Everything it starts binds loopback and is removed at
the end (the load balancer is deleted, the container removed, the server's process group stopped).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

from procs import free_port, stop
from procs import wait_for as _wait_for

REGION = "us-east-1"
IMAGE = "dockyard/busybox:latest"
RATIO_GOAL = 0.8
KILL_GOAL = 3.0  # seconds a killed task may stay in rotation after Docker's die event
KEY, SECRET = "AKIDBENCHLB000000001", "bench-lb-secret"
ROOT = Path(__file__).resolve().parents[1]

wait_for = functools.partial(_wait_for, interval=0.2)  # API polls every 0.2 s: light on a loaded machine


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
                return bool(r.status == 200)

        wait_for(up, 30, "dockyard server")
        yield endpoint
    finally:
        stop(proc, grace=20)
        log.close()


@contextlib.contextmanager
def busybox_task() -> Iterator[tuple[int, str]]:
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
        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).status == 200, 30, "task"
        )
        yield port, name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores, /proc/stat: everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of one process (all its threads); 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def container_cpu_s(name: str) -> float:
    """CPU seconds of a container's cgroup (cgroup v1 cpuacct or v2 cpu.stat), forks included."""
    pid = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", name], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):
            for mount in ("cpuacct", "cpu,cpuacct"):
                usage = Path(f"/sys/fs/cgroup/{mount}{path}/cpuacct.usage")
                if usage.exists():
                    return int(usage.read_text()) / 1e9
        if controllers == "":
            stat = Path(f"/sys/fs/cgroup{path}/cpu.stat")
            if stat.exists():
                return int(stat.read_text().split()[1]) / 1e6  # usage_usec
    return float("nan")


def children_cpu_s() -> float:
    """CPU seconds of this script's waited-for children (wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(url: str, duration: int, connections: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> dict[str, float]:
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


# ---- part (a): a rolling deployment and a killed task under constant load -----------------------------

HTTPD = (
    "mkdir -p /www && hostname > /www/index.html && echo ok > /www/health "
    "&& trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"
)


def _clients(endpoint: str) -> tuple[Any, Any]:
    kw = {
        "endpoint_url": endpoint,
        "region_name": REGION,
        "aws_access_key_id": KEY,
        "aws_secret_access_key": SECRET,
    }
    return boto3.client("ecs", **kw), boto3.client("elbv2", **kw)


@contextlib.contextmanager
def dockyard_agent(endpoint: str, cluster: str, workdir: Path) -> Iterator[None]:
    """One ``dockyard agent`` on this machine's Docker (``DOCKER_HOST`` if set)."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": REGION,
    }
    log = open(workdir / "agent.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dockyard.cli.agent_cmd",
            "agent",
            "--server",
            endpoint,
            "--cluster",
            cluster,
            "--state-dir",
            str(workdir / "agent"),
            "--image-pull-behavior",
            "prefer-cached",
            "--stop-timeout",
            "2",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=ROOT,
    )
    try:
        yield
    finally:
        stop(proc, grace=20)
        log.close()


class Wrk:
    """``wrk`` in the background until ``stop()`` (SIGINT: it prints its figures and exits)."""

    def __init__(self, url: str, connections: int, threads: int) -> None:
        self.proc = subprocess.Popen(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", "3600s", "--latency", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def stop(self) -> dict[str, float]:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        return parse_wrk(out)


def _service_state(ecs: Any, cluster: str) -> dict[str, Any]:
    return dict(ecs.describe_services(cluster=cluster, services=["web"])["services"][0])


def _tasks(ecs: Any, cluster: str) -> list[dict[str, Any]]:
    arns = ecs.list_tasks(cluster=cluster, serviceName="web", desiredStatus="RUNNING")["taskArns"]
    return list(ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]) if arns else []


def _settled(ecs: Any, elbv2: Any, cluster: str, tg_arn: str, td: str, count: int) -> bool:
    """One COMPLETED deployment of ``td`` and ``count`` healthy targets, nothing draining."""
    svc = _service_state(ecs, cluster)
    deployments = svc["deployments"]
    if len(deployments) != 1 or deployments[0]["rolloutState"] != "COMPLETED" or svc["taskDefinition"] != td:
        return False
    health = elbv2.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
    return len(health) == count and all(h["TargetHealth"]["State"] == "healthy" for h in health)


def _server_stats(socket_file: Path, server: str) -> tuple[str, int] | None:
    """(status, lbtot) of the HAProxy server ``server`` (None when it is gone)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(socket_file))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    for row in csv.DictReader(io.StringIO(data.decode().lstrip("# "))):
        if row.get("svname") == server:
            return (row.get("status") or ""), int(row.get("lbtot") or 0)
    return None


def _milestones(endpoint: str, cluster: str, task_arn: str, tg_arn: str, target: tuple[str, int]) -> Any:
    """A thread noting when the API first shows the killed task STOPPED and its target draining."""
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        ecs, elbv2 = _clients(endpoint)
        while not done.is_set() and len(seen) < 2:
            with contextlib.suppress(Exception):
                if "stopped" not in seen:
                    task = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
                    if task["lastStatus"] == "STOPPED":
                        seen["stopped"] = time.time()
                if "deregistered" not in seen:
                    health = elbv2.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
                    states = {
                        (h["Target"]["Id"], h["Target"]["Port"]): h["TargetHealth"]["State"] for h in health
                    }
                    if states.get(target, "draining") == "draining":
                        seen["deregistered"] = time.time()
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def stop() -> dict[str, float]:
        done.set()
        thread.join(10)
        return seen

    return stop


def _kill_and_watch(
    endpoint: str,
    cluster: str,
    lb_dir: Path,
    instance_id: str,
    tg_arn: str,
    args: argparse.Namespace,
    url: str,
) -> dict[str, Any]:
    """docker kill one task under load; from Docker's die event: when the API showed it STOPPED (the
    agent's report), when its target was draining (Dockyard deregistered it), how long HAProxy kept
    it in rotation (UP) and when it last picked it (lbtot last grew)."""
    from dockyard.lb.process import socket_path

    ecs, _ = _clients(endpoint)
    sock = socket_path(lb_dir)
    victim = _tasks(ecs, cluster)[0]
    host_port = int(victim["containers"][0]["networkBindings"][0]["hostPort"])
    container = victim["containers"][0]["runtimeId"]
    server = f"{instance_id}_{victim['containers'][0]['networkBindings'][0]['hostPort']}"
    events = subprocess.Popen(
        [
            "docker",
            "events",
            "--filter",
            f"container={container}",
            "--filter",
            "event=die",
            "--format",
            "{{.TimeNano}}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    samples: list[tuple[float, str, int]] = []
    wrk = Wrk(url, args.connections, args.threads)
    try:
        time.sleep(2)  # load flowing
        before = _server_stats(sock, server)
        if before is not None:  # a pick between this and the first sample after the kill counts as late
            samples.append((time.time(), *before))
        milestones = _milestones(endpoint, cluster, victim["taskArn"], tg_arn, (instance_id, host_port))
        # sampled while ``docker kill`` runs: the CLI can take seconds to return on a loaded machine,
        # long after the die event (sampling only after it returned misdated what HAProxy did)
        killer = subprocess.Popen(
            ["docker", "kill", container], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        kill_returned = float("nan")
        deadline = time.time() + 20
        while time.time() < deadline:
            if kill_returned != kill_returned and killer.poll() is not None:  # NaN: not yet
                kill_returned = time.time()
            stat = _server_stats(sock, server)
            samples.append((time.time(), *(stat or ("GONE", samples[-1][2] if samples else 0))))
            if stat is None or stat[0].startswith(("DRAIN", "MAINT")):
                break
            time.sleep(0.05)
        time.sleep(1)
        seen = milestones()
        _, err = killer.communicate(timeout=60)
        if kill_returned != kill_returned:
            kill_returned = time.time()
        if killer.returncode:
            raise RuntimeError(f"docker kill failed: {err.strip()}")
        assert events.stdout is not None
        died = int(events.stdout.readline().strip()) / 1e9
    finally:
        events.kill()
        events.wait()
        load = wrk.stop()
    out_at = samples[-1][0] if samples and not samples[-1][1].startswith("UP") else float("nan")
    grew = [t for (t, _, total), (_, _, prev) in zip(samples[1:], samples, strict=False) if total > prev]
    after = [t - died for t in grew if t >= died]
    return {
        "server": server,
        "lbtot_before_kill": before[1] if before else None,
        "stopped_in_api_after_die_s": round(seen["stopped"] - died, 3) if "stopped" in seen else None,
        "deregistered_after_die_s": round(seen["deregistered"] - died, 3) if "deregistered" in seen else None,
        "in_rotation_after_die_s": round(out_at - died, 3),
        "last_request_after_die_s": round(max(after), 3) if after else 0.0,
        "docker_kill_returned_after_die_s": round(kill_returned - died, 3),
        "final_status": samples[-1][1] if samples else None,
        "requests": load.get("requests", 0.0),
        "failed_requests": load.get("errors", 0.0),
    }


def rolling_deployment(endpoint: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Part (a): a 10-task busybox httpd service behind an application load balancer; constant wrk
    load on the listener while UpdateService rolls a new revision (failed requests, goal 0); then one
    task killed with ``docker kill`` behind Dockyard's back (goal: out of rotation <= 3 s after
    Docker's die event)."""
    ecs, elbv2 = _clients(endpoint)
    tag = uuid.uuid4().hex[:8]
    cluster = f"bench-lb-{tag}"
    cluster_arn = ecs.create_cluster(clusterName=cluster)["cluster"]["clusterArn"]
    lb = elbv2.create_load_balancer(Name=f"roll-{tag}")["LoadBalancers"][0]
    tg = elbv2.create_target_group(
        Name=f"roll-{tag}",
        Protocol="HTTP",
        Port=80,
        VpcId="vpc-bench",
        TargetType="instance",
        HealthCheckPath="/health",
        HealthCheckIntervalSeconds=5,
        HealthCheckTimeoutSeconds=2,
        HealthyThresholdCount=2,
        UnhealthyThresholdCount=2,
    )["TargetGroups"][0]
    tg_arn = tg["TargetGroupArn"]
    elbv2.modify_target_group_attributes(
        TargetGroupArn=tg_arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(args.drain)}],
    )
    url = f"http://{lb['DNSName']}/"
    out: dict[str, Any] = {"tasks": args.tasks, "deregistration_delay_s": args.drain}
    try:
        elbv2.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
        )
        with dockyard_agent(endpoint, cluster, workdir):
            instance = wait_for(
                lambda: ecs.list_container_instances(cluster=cluster)["containerInstanceArns"], 60, "agent"
            )[0]
            described = ecs.describe_container_instances(cluster=cluster, containerInstances=[instance])
            instance_id = described["containerInstances"][0]["ec2InstanceId"]

            def revision(version: str) -> str:
                return str(
                    ecs.register_task_definition(
                        family=f"bench-lb-{tag}",
                        containerDefinitions=[
                            {
                                "name": "web",
                                "image": IMAGE,
                                "memory": 24,
                                "essential": True,
                                "command": ["sh", "-c", HTTPD],
                                "portMappings": [{"containerPort": 80, "hostPort": 0}],
                                "environment": [{"name": "VERSION", "value": version}],
                            }
                        ],
                    )["taskDefinition"]["taskDefinitionArn"]
                )

            v1, v2 = revision("1"), revision("2")
            ecs.create_service(
                cluster=cluster,
                serviceName="web",
                taskDefinition=v1,
                desiredCount=args.tasks,
                loadBalancers=[{"targetGroupArn": tg_arn, "containerName": "web", "containerPort": 80}],
            )
            wait_for(lambda: _settled(ecs, elbv2, cluster, tg_arn, v1, args.tasks), 180, "v1 healthy")
            wrk = Wrk(url, args.connections, args.threads)
            try:
                time.sleep(2)
                t0 = time.monotonic()
                ecs.update_service(cluster=cluster, service="web", taskDefinition=v2)
                wait_for(lambda: _settled(ecs, elbv2, cluster, tg_arn, v2, args.tasks), 300, "v2 rolled out")
                out["rollout_s"] = round(time.monotonic() - t0, 2)
                time.sleep(1)
            finally:
                load = wrk.stop()
            out["requests"] = load.get("requests", 0.0)
            out["rps"] = load.get("rps", 0.0)
            out["failed_requests"] = load.get("errors", 0.0)
            out["p99_ms"] = load.get("p99", float("nan"))
            lb_dir = workdir / "state" / "lb" / lb["LoadBalancerArn"].rsplit("/", 1)[1]
            out["killed"] = _kill_and_watch(endpoint, cluster, lb_dir, instance_id, tg_arn, args, url)
            ecs.delete_service(cluster=cluster, service="web", force=True)
            wait_for(lambda: _service_state(ecs, cluster)["status"] == "INACTIVE", 120, "service deleted")
    finally:
        elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
        with contextlib.suppress(Exception):
            wait_for(lambda: elbv2.delete_target_group(TargetGroupArn=tg_arn) is not None, 15, "delete")
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.amazonaws.ecs.cluster={cluster_arn}"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=120)
    return out


def part_b(endpoint: str, workdir: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    elbv2 = boto3.client(
        "elbv2",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )
    tag = uuid.uuid4().hex[:8]
    lb = elbv2.create_load_balancer(Name=f"bench-{tag}")["LoadBalancers"][0]
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
        with busybox_task() as (port, container):
            elbv2.register_targets(
                TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": "127.0.0.1", "Port": port}]
            )

            def healthy() -> bool:
                out = elbv2.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])
                return bool(out["TargetHealthDescriptions"][0]["TargetHealth"]["State"] == "healthy")

            wait_for(healthy, 40, "target healthy")
            urls = {"direct": f"http://127.0.0.1:{port}/", "via LB": f"http://{lb['DNSName']}/"}
            lb_dir = workdir / "state" / "lb" / lb["LoadBalancerArn"].rsplit("/", 1)[1]
            runs: dict[str, list[dict[str, float]]] = {label: [] for label in urls}
            print(
                f"(b) {args.rounds} alternating rounds of {args.duration} s, {args.connections} connections"
            )
            for n in range(args.rounds):  # alternate, so that drift in the machine's load hits both
                for label, url in urls.items():
                    if args.warmup:
                        run_wrk(url, args.warmup, args.connections, args.threads)
                    haproxy = int((lb_dir / "haproxy.pid").read_text())
                    before = (machine_busy_s(), process_cpu_s(haproxy), container_cpu_s(container))
                    wrk0, t0 = children_cpu_s(), time.monotonic()
                    run = run_wrk(url, args.duration, args.connections, args.threads)
                    elapsed = time.monotonic() - t0
                    after = (machine_busy_s(), process_cpu_s(haproxy), container_cpu_s(container))
                    wrk_s = children_cpu_s() - wrk0
                    busy, lb_s, task_s = (b - a for a, b in zip(before, after, strict=True))
                    run |= {
                        "cpu_machine_pct": 100 * busy / elapsed,
                        "cpu_haproxy_pct": 100 * lb_s / elapsed,
                        "cpu_task_pct": 100 * task_s / elapsed,
                        "cpu_wrk_pct": 100 * wrk_s / elapsed,
                        "cpu_other_pct": 100 * (busy - lb_s - task_s - wrk_s) / elapsed,
                        "load1": os.getloadavg()[0],
                    }
                    runs[label].append(run)
                    print(
                        f"    round {n + 1} {label:<7} {run.get('rps', 0.0):>8.0f} req/s  p99 "
                        f"{run.get('p99', float('nan')):>7.2f} ms  errors {run['errors']:.0f}  CPU % of a "
                        f"core: machine {run['cpu_machine_pct']:.0f}, task {run['cpu_task_pct']:.0f}, "
                        f"haproxy {run['cpu_haproxy_pct']:.0f}, wrk {run['cpu_wrk_pct']:.0f}, other "
                        f"{run['cpu_other_pct']:.0f}; load {run['load1']:.2f}",
                        flush=True,
                    )
        return {label: _median(r) for label, r in runs.items()}
    finally:
        elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
        with contextlib.suppress(Exception):
            wait_for(
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
    parser.add_argument("--tasks", type=int, default=10, help="(a) tasks of the rolling deployment")
    parser.add_argument("--drain", type=int, default=5, help="(a) deregistration delay, seconds")
    parser.add_argument("--skip-a", action="store_true", help="run part (b) only")
    parser.add_argument("--skip-b", action="store_true", help="run part (a) only")
    args = parser.parse_args()
    for tool in ("wrk", "docker"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (scripts/setup.sh installs it)")

    workdir = Path(tempfile.mkdtemp(prefix="dockyard-bench-lb-"))
    load_start = os.getloadavg()
    try:
        with dockyard_server(workdir, args.network) as endpoint:
            deployment = None if args.skip_a else rolling_deployment(endpoint, workdir, args)
            results = None if args.skip_b else part_b(endpoint, workdir, args)
    finally:
        if args.keep_workdir:
            print(f"workdir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    ratio, verdict = float("nan"), "NOT RUN"
    if results is not None:
        direct, via = results["direct"], results["via LB"]
        ratio = via["rps"] / direct["rps"] if direct.get("rps") else float("nan")
        print(
            f"\n(b) one busybox httpd task, {args.connections} connections, median of {args.rounds} "
            f"alternating runs of {args.duration} s"
        )
        print(
            f"{'target':<8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}   "
            "CPU % of a core in that run (task/haproxy/wrk/other)"
        )
        for label, r in results.items():
            p50, p99 = r.get("p50", float("nan")), r.get("p99", float("nan"))
            cpu = "/".join(f"{r[f'cpu_{k}_pct']:.0f}" for k in ("task", "haproxy", "wrk", "other"))
            print(
                f"{label:<8} {r['rps']:>10.0f} {p50:>8.2f} {p99:>8.2f} {r['errors']:>7.0f}   {cpu:<16} "
                f"runs: {r['rounds_rps']}"
            )
        verdict = "HOLDS" if ratio >= RATIO_GOAL and via["errors"] == 0 else "MISSED"
        print(f"goal: via LB >= {RATIO_GOAL}x direct req/s, no errors: {ratio:.2f}x -> {verdict}")
    load_end = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs shared by wrk, HAProxy, the task, dockerd and the server; load "
        f"average (1/5/15 min) at start {'/'.join(f'{v:.2f}' for v in load_start)}, at end "
        f"{'/'.join(f'{v:.2f}' for v in load_end)}"
    )
    summary: dict[str, Any] = {
        "b": results,
        "ratio": ratio,
        "goal_b": verdict,
        "a": deployment,
        "machine": {"cpu_count": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": load_end},
    }
    if deployment is not None:
        print_a(deployment)
        killed = deployment["killed"]
        summary["goal_a"] = (
            "HOLDS"
            if deployment["failed_requests"] == 0
            and killed["failed_requests"] == 0
            and killed["in_rotation_after_die_s"] <= KILL_GOAL
            else "MISSED"
        )
    print("BENCH_JSON " + json.dumps(summary))


def print_a(a: dict[str, Any]) -> None:
    k = a["killed"]
    print(
        f"\n(a) rolling deployment of {a['tasks']} tasks behind the load balancer in {a['rollout_s']} s "
        f"under wrk load: {a['requests']:.0f} requests, {a['failed_requests']:.0f} failed (goal 0), "
        f"p99 {a['p99_ms']:.1f} ms"
    )
    print(
        f"    task killed with docker kill: out of rotation {k['in_rotation_after_die_s']} s after the die "
        f"event (goal <= {KILL_GOAL} s; then {k['final_status']}), last picked by HAProxy "
        f"{k['last_request_after_die_s']} s after it; {k['requests']:.0f} requests, "
        f"{k['failed_requests']:.0f} failed"
    )
    print(
        f"    after the die event: STOPPED in the API {k['stopped_in_api_after_die_s']} s, target draining "
        f"{k['deregistered_after_die_s']} s, out of HAProxy's rotation {k['in_rotation_after_die_s']} s "
        f"(the docker kill command returned after {k['docker_kill_returned_after_die_s']} s)"
    )


if __name__ == "__main__":
    main()
