#!/usr/bin/env python3
"""awsvpc: task start against bridge, and teardown rate, in one run (issue 7, item 6).

Starts a fresh ``dockyard server`` and one agent on this machine's Docker (``task_start.Dockyard``),
registers two one-container families (``sleep 3600``): one ``bridge``, one ``awsvpc`` in the
region's default subnet and security group. Then:

1. **Start** (``--tasks``, default 15, after ``--warmup`` untimed rounds): per round one bridge task
   and one awsvpc task, interleaved, each client-observed from RunTask until DescribeTasks (polled
   every ``--poll-ms``) says RUNNING; each is stopped and waited STOPPED before the next round.
   Goal: awsvpc p50 <= bridge p50 + 150 ms.
2. **Teardown** (``--teardown``, default 16 awsvpc tasks, an instance's default ENI count): start
   them all, wait RUNNING, StopTask them all at once, and time until DescribeTasks shows every one
   STOPPED. Goal: >= 10 tasks/s.
3. **Rules** (``--rule-rounds``, default 10): one awsvpc busybox ``httpd`` task in a group of its own;
   per round AuthorizeSecurityGroupIngress of a rule for the host's address (the subnet's gateway) on
   port 80, timed from the call until a new TCP connection from the host gets through, then
   RevokeSecurityGroupIngress, timed until a new connection no longer does (probes every
   ``--probe-ms``, each connect waiting at most that long: a dropped SYN never answers); each change
   waits a random 0-300 ms first, so it lands anywhere in the agent's 0.25 s rules poll. Goal: both
   within a second (issue 7, item 3), judged on the maximum.

Traffic goes only to 127.0.0.1, the Docker socket and the subnet network the agent creates. Every
process it starts is stopped and every container it caused is removed in ``finally``.

Run: ``.venv/bin/python bench/awsvpc.py [--tasks 15] [--teardown 20]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import task_start  # the sibling benchmark's server/agent harness
from task_start import CLUSTER, CONTAINER_MEMORY_MIB, IMAGE, DockerApi, Dockyard

START_GOAL_MS = 150.0
# sleep as PID 1 ignores SIGTERM (each stop would wait out the stop timeout); this exits on it, so
# teardown measures stopping the task and releasing its interface, not a timeout
TRAP = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
TEARDOWN_GOAL = 10.0
RULE_GOAL_S = 1.0
JITTER_S = 0.3  # longer than the agent's rules poll (0.25 s, agent/networking/rules.py)
WEB = ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www"]


def register(ecs: Any, family: str, mode: str, command: list[str] = TRAP) -> str:
    td = ecs.register_task_definition(
        family=family,
        networkMode=mode,
        containerDefinitions=[
            {
                "name": "sleep",
                "image": IMAGE,
                "essential": True,
                "memory": CONTAINER_MEMORY_MIB,
                "command": command,
            }
        ],
    )
    return str(td["taskDefinition"]["taskDefinitionArn"])


def wait_status(ecs: Any, arns: list[str], status: str, poll_s: float, timeout_s: float = 120.0) -> float:
    deadline = time.monotonic() + timeout_s
    pending = list(arns)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} task(s) not {status} after {timeout_s}s")
        found = []
        for i in range(0, len(pending), 100):
            found += ecs.describe_tasks(cluster=CLUSTER, tasks=pending[i : i + 100])["tasks"]
        for t in found:
            if t["lastStatus"] == "STOPPED" and status != "STOPPED":
                raise RuntimeError(f"task stopped: {t.get('stoppedReason')}")
        pending = [t["taskArn"] for t in found if t["lastStatus"] != status]
        if pending:
            time.sleep(poll_s)
    return time.monotonic()


def run(ecs: Any, td: str, count: int, network: dict[str, Any] | None) -> list[str]:
    kw: dict[str, Any] = {"networkConfiguration": network} if network else {}
    resp = ecs.run_task(cluster=CLUSTER, taskDefinition=td, count=count, **kw)
    if resp.get("failures"):
        raise RuntimeError(f"RunTask failures: {resp['failures']}")
    return [t["taskArn"] for t in resp["tasks"]]


def timed_start(
    ecs: Any, td: str, network: dict[str, Any] | None, poll_s: float
) -> tuple[float, dict[str, float]]:
    """Milliseconds from RunTask until DescribeTasks shows RUNNING, and where they went
    (``task_start.task_phases``: from the task's own timestamps, all on this machine's clock)."""
    t0_wall, t0 = time.time(), time.perf_counter()
    arns = run(ecs, td, 1, network)
    ret = time.perf_counter()
    seen, tasks = task_start.wait_running(ecs, arns, poll_s)
    elapsed = seen[arns[0]] - t0
    phases = task_start.task_phases(t0_wall, t0_wall + (ret - t0), t0_wall + elapsed, tasks[arns[0]])
    ecs.stop_task(cluster=CLUSTER, task=arns[0])
    wait_status(ecs, arns, "STOPPED", poll_s)
    return elapsed * 1000, phases


def connects(address: str, port: int, timeout_s: float) -> bool:
    """Does a new TCP connection from the host to ``address:port`` get through?"""
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def until(condition: Any, deadline_s: float, probe_s: float) -> float:
    """Seconds (perf_counter) at which ``condition()`` first held; raises after ``deadline_s``."""
    end = time.perf_counter() + deadline_s
    while time.perf_counter() < end:
        if condition():
            return time.perf_counter()
        time.sleep(probe_s / 4)
    raise TimeoutError(f"not enforced within {deadline_s} s")


def rule_latency(
    ecs: Any, ec2: Any, td: str, subnet: dict[str, Any], rounds: int, poll_s: float, probe_s: float, tag: str
) -> dict[str, list[float]]:
    """Seconds from AuthorizeSecurityGroupIngress (RevokeSecurityGroupIngress) until a new connection
    from the host to a running task gets through (no longer does), ``rounds`` times each."""
    group = ec2.create_security_group(GroupName=f"bench-rules-{tag}", Description="bench")["GroupId"]
    net = {"awsvpcConfiguration": {"subnets": [subnet["SubnetId"]], "securityGroups": [group]}}
    (arn,) = run(ecs, td, 1, net)
    _, tasks = task_start.wait_running(ecs, [arn], poll_s)
    details = {d["name"]: d["value"] for d in tasks[arn]["attachments"][0]["details"]}
    address = details["privateIPv4Address"]
    gateway = str(ipaddress.IPv4Network(subnet["CidrBlock"]).network_address + 1)
    rule = {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": f"{gateway}/32"}]}
    out: dict[str, list[float]] = {"authorize": [], "revoke": []}
    rng = random.Random(tag)
    try:
        if connects(address, 80, 1.0):
            raise RuntimeError(f"{address}:80 answers before any rule admits the host")
        for _ in range(rounds):
            # at a random moment of the agent's rules poll: right after the last change reached
            # the task, the next one would always wait out one whole poll interval
            time.sleep(rng.uniform(0.0, JITTER_S))
            t0 = time.perf_counter()
            ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[rule])
            out["authorize"].append(until(lambda: connects(address, 80, probe_s), 30.0, probe_s) - t0)
            time.sleep(rng.uniform(0.0, JITTER_S))
            t0 = time.perf_counter()
            ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=[rule])
            out["revoke"].append(until(lambda: not connects(address, 80, probe_s), 30.0, probe_s) - t0)
    finally:
        ecs.stop_task(cluster=CLUSTER, task=arn)
        wait_status(ecs, [arn], "STOPPED", poll_s)
    return out


def median_of(phases: list[dict[str, float]], key: str) -> float:
    values = [p[key] for p in phases if key in p]
    return statistics.median(values) * 1000 if values else float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--teardown", type=int, default=16)  # an instance takes 16 awsvpc tasks by default
    ap.add_argument("--poll-ms", type=float, default=20.0)
    ap.add_argument("--rule-rounds", type=int, default=10)
    ap.add_argument("--probe-ms", type=float, default=50.0)
    ap.add_argument("--agent-log-level", default="warning")
    args = ap.parse_args()
    poll_s = args.poll_ms / 1000
    run_id = f"{int(time.time())}"
    workdir = Path(tempfile.mkdtemp(prefix="dockyard-bench-awsvpc-"))
    dy = Dockyard(workdir, args.agent_log_level, run_id)
    docker = DockerApi()
    families: list[str] = []
    load_before = task_start.load_average()
    try:
        dy.start_server()
        ecs = dy.client()
        ec2 = task_start.boto3.session.Session().client(
            "ec2",
            endpoint_url=dy.endpoint,
            region_name=task_start.REGION,
            aws_access_key_id=dy.access_key,
            aws_secret_access_key=dy.secret_key,
        )
        dy.setup(ecs)  # cluster, the bridge family of task_start, the agent
        families.append(dy.family)
        bridge = dy.task_definition_arn
        awsvpc_family = f"awsvpc-{run_id}"
        awsvpc = register(ecs, awsvpc_family, "awsvpc")
        families.append(awsvpc_family)
        subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]
        network = {"awsvpcConfiguration": {"subnets": [subnet["SubnetId"]], "assignPublicIp": "DISABLED"}}

        for _ in range(args.warmup):  # (the warm pause-container pool filled when the agent started)
            timed_start(ecs, bridge, None, poll_s)
            timed_start(ecs, awsvpc, network, poll_s)
        times: dict[str, list[float]] = {"bridge": [], "awsvpc": []}
        phases: dict[str, list[dict[str, float]]] = {"bridge": [], "awsvpc": []}
        for _ in range(args.tasks):
            for mode, td, net in (("bridge", bridge, None), ("awsvpc", awsvpc, network)):
                elapsed, where = timed_start(ecs, td, net, poll_s)
                times[mode].append(elapsed)
                phases[mode].append(where)

        p50 = {k: statistics.median(v) for k, v in times.items()}
        p95 = {k: pct(v, 0.95) for k, v in times.items()}
        extra = p50["awsvpc"] - p50["bridge"]
        print(f"{'':10} {'p50 ms':>8} {'p95 ms':>8}")
        for k in ("bridge", "awsvpc"):
            print(f"{k:10} {p50[k]:8.0f} {p95[k]:8.0f}")
        verdict = "met" if extra <= START_GOAL_MS else "MISSED"
        goal = f"goal <= +{START_GOAL_MS:.0f} ms: {verdict}"
        print(f"awsvpc start: {extra:+.0f} ms at p50 ({goal})", flush=True)
        breakdown = {
            mode: {k: median_of(phases[mode], k) for k, _ in task_start.PHASES}
            for mode in ("bridge", "awsvpc")
        }
        print("where the time goes (p50 ms per phase; awsvpc's interface is set up in to_agent):")
        print(f"  {'':66} {'bridge':>6} {'awsvpc':>6}")
        for k, text in task_start.PHASES:
            print(f"  {text:66} {breakdown['bridge'][k]:6.0f} {breakdown['awsvpc'][k]:6.0f}")
        arns: list[str] = []
        for i in range(0, args.teardown, 10):
            arns += run(ecs, awsvpc, min(10, args.teardown - i), network)
        wait_status(ecs, arns, "RUNNING", poll_s)
        t0 = time.monotonic()
        for a in arns:
            ecs.stop_task(cluster=CLUSTER, task=a)
        t1 = wait_status(ecs, arns, "STOPPED", poll_s)
        teardown_rate = len(arns) / (t1 - t0)

        verdict = "met" if teardown_rate >= TEARDOWN_GOAL else "MISSED"
        print(
            f"teardown: {len(arns)} awsvpc tasks in {t1 - t0:.2f} s = {teardown_rate:.1f} tasks/s "
            f"(goal >= {TEARDOWN_GOAL:.0f}/s: {verdict})"
        )
        rules: dict[str, dict[str, float]] = {}
        if args.rule_rounds > 0:
            web_family = f"awsvpc-web-{run_id}"
            web = register(ecs, web_family, "awsvpc", WEB)
            families.append(web_family)
            seconds = rule_latency(
                ecs, ec2, web, subnet, args.rule_rounds, poll_s, args.probe_ms / 1000, run_id
            )
            for kind, values in seconds.items():
                rules[kind] = {"p50_ms": statistics.median(values) * 1000, "max_ms": max(values) * 1000}
                verdict = "met" if max(values) <= RULE_GOAL_S else "MISSED"
                print(
                    f"{kind} -> enforced on a running task: p50 {rules[kind]['p50_ms']:.0f} ms, "
                    f"max {rules[kind]['max_ms']:.0f} ms over {len(values)} rounds "
                    f"(goal <= {RULE_GOAL_S * 1000:.0f} ms: {verdict})"
                )
        load_after = task_start.load_average()
        print(f"load average (1/5/15 min): before {load_before}, after {load_after}")
        print(
            "BENCH_JSON "
            + json.dumps(
                {
                    "load_before": load_before,
                    "load_after": load_after,
                    "p50_ms": p50,
                    "p95_ms": p95,
                    "awsvpc_extra_p50_ms": extra,
                    "phases_p50_ms": breakdown,
                    "teardown_tasks_per_s": teardown_rate,
                    "rule_enforced_ms": rules,
                    "tasks": args.tasks,
                }
            )
        )
        return 0
    finally:
        for note in dy.cleanup(docker):
            print(note, file=sys.stderr)
        for family in families:
            docker.remove_labelled(f"{task_start.FAMILY_LABEL}={family}")
        pause = subprocess.run(  # this run's agent's pause containers only
            ["docker", "ps", "-aq", "--filter", f"label=com.dockyard.pause-pool={dy.instance_arn}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if pause and dy.instance_arn:
            subprocess.run(["docker", "rm", "-f", *pause], capture_output=True)
        docker.close()


if __name__ == "__main__":
    sys.exit(main())
