#!/usr/bin/env python3
"""Hollow container instances for scale benchmarks: N simulated agents in one process.

Each hollow instance registers with RegisterContainerInstance (its own ``i-...`` id, the CPU and
memory given, an availability zone out of ``--zones``), then speaks docs/agent-protocol.md with the
credentials issued to it, exactly as ``dockyard agent`` does, but runs no containers: it long-polls
its desired set and reports each new task RUNNING (after ``--run-delay`` seconds) and each task it
is told to stop STOPPED, batching every report of one poll answer into one ``Report`` call. All
instances share one aiohttp session (``dockyard.client.ecs``); their traffic is part of the load.

This stands in for ``dockyard agent --runtime simulated --instances N`` until the agent command
has that flag (bench/README.md). Run::

    python bench/hollow_agents.py --server http://127.0.0.1:8080 --cluster bench --instances 1000 \\
        --cpu-units 4096 --memory-mib 8192 [--zones 3] [--run-delay 0]

with the admin key pair in ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``. It prints ``READY n``
once every instance registered, and a ``HOLLOW_JSON {...}`` line with its counters when it gets
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dockyard.client.ecs import ApiError, ClientError, EcsClient
from dockyard.client.sigv4 import Credentials

CAPABILITIES = [
    *(f"com.amazonaws.ecs.capability.docker-remote-api.1.{n}" for n in range(17, 45)),
    "com.amazonaws.ecs.capability.logging-driver.json-file",
    "ecs.capability.container-health-check",
    "ecs.capability.container-ordering",
]


@dataclass
class Counters:
    registered: int = 0
    polls: int = 0
    reports: int = 0  # Report calls
    reported: int = 0  # task reports inside them
    errors: int = 0
    started: set[str] = field(default_factory=set)

    def as_json(self) -> dict[str, Any]:
        return {
            "registered": self.registered,
            "polls": self.polls,
            "report_calls": self.reports,
            "task_reports": self.reported,
            "errors": self.errors,
            "tasks_running": len(self.started),
        }


class HollowInstance:
    def __init__(self, n: int, args: argparse.Namespace, session: aiohttp.ClientSession, counters: Counters):
        self.n = n
        self.args = args
        self.session = session
        self.counters = counters
        self.arn = ""
        self.client: EcsClient | None = None
        self.revision = 0
        self.seq: dict[str, int] = {}
        self.reported: dict[str, str] = {}  # task ARN -> last status reported

    def registration(self) -> dict[str, Any]:
        zone = f"{self.args.region}{'abcdefghij'[self.n % self.args.zones]}"
        attributes = [{"name": c} for c in CAPABILITIES]
        attributes += [
            {"name": "ecs.os-type", "value": "linux"},
            {"name": "ecs.instance-type", "value": "hollow.large"},
            {"name": "hollow.index", "value": str(self.n)},
        ]
        return {
            "cluster": self.args.cluster,
            "totalResources": [
                {"name": "CPU", "type": "INTEGER", "integerValue": self.args.cpu_units},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": self.args.memory_mib},
                {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22", "2375", "2376", "51678"]},
                {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
            ],
            "versionInfo": {"agentVersion": "1.80.0", "agentHash": "hollow", "dockerVersion": "none"},
            "attributes": attributes,
            "instanceIdentityDocument": json.dumps(
                {"instanceId": f"i-0hollow{self.n:09d}", "privateIp": "127.0.0.1", "availabilityZone": zone}
            ),
        }

    async def register(self, admin: Credentials) -> None:
        client = EcsClient(self.args.server, admin, self.args.region, session=self.session)
        for attempt in range(60):
            try:
                out = await client.register_container_instance(self.registration())
                break
            except ClientError:
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
        else:
            raise RuntimeError(f"instance {self.n} could not register")
        self.arn = out["containerInstance"]["containerInstanceArn"]
        issued = out["agentCredentials"]
        self.client = EcsClient(
            self.args.server,
            Credentials(issued["accessKeyId"], issued["secretAccessKey"]),
            self.args.region,
            session=self.session,
        )
        self.counters.registered += 1

    async def run(self) -> None:
        assert self.client is not None
        while True:
            try:
                answer = await self.client.poll(
                    {
                        "cluster": self.args.cluster,
                        "containerInstanceArn": self.arn,
                        "knownRevision": self.revision,
                        "waitSeconds": self.args.poll_wait,
                    },
                    self.args.poll_wait,
                )
            except ClientError:
                self.counters.errors += 1
                await asyncio.sleep(0.5)
                continue
            self.counters.polls += 1
            self.revision = int(answer.get("revision", self.revision))
            reports = self.reports_for(answer.get("tasks") or [])
            if reports:
                if self.args.run_delay:
                    await asyncio.sleep(self.args.run_delay)
                await self.report(reports)

    def reports_for(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for t in tasks:
            arn = t["taskArn"]
            want = "RUNNING" if t["desiredStatus"] == "RUNNING" else "STOPPED"
            if self.reported.get(arn) == want:
                continue
            self.seq[arn] = max(self.seq.get(arn, 0), int(t.get("reportedSeq") or 0)) + 1
            now = time.time()
            containers = [{"name": c["name"], "status": want} for c in t.get("containers") or ()]
            report: dict[str, Any] = {
                "taskArn": arn,
                "seq": self.seq[arn],
                "status": want,
                "containers": containers,
            }
            if want == "RUNNING":
                report.update(pullStartedAt=now, pullStoppedAt=now, startedAt=now)
            else:
                report.update(executionStoppedAt=now, stopCode="EssentialContainerExited")
                for c in containers:
                    c["exitCode"] = 0
            out.append(report)
        return out

    async def report(self, reports: list[dict[str, Any]]) -> None:
        assert self.client is not None
        for start in range(0, len(reports), 256):
            batch = reports[start : start + 256]
            try:
                out = await self.client.report(
                    {"cluster": self.args.cluster, "containerInstanceArn": self.arn, "reports": batch}
                )
            except ApiError:
                self.counters.errors += 1
                continue
            except ClientError:
                self.counters.errors += 1
                continue
            self.counters.reports += 1
            for r, result in zip(batch, out.get("results", ()), strict=False):
                if result.get("accepted") or result.get("reason") in ("STALE", "MISSING"):
                    self.reported[r["taskArn"]] = r["status"]
                    self.counters.reported += 1
                    if r["status"] == "RUNNING":
                        self.counters.started.add(r["taskArn"])
                    else:
                        self.counters.started.discard(r["taskArn"])


async def main(args: argparse.Namespace) -> None:
    admin = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    counters = Counters()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=False), json_serialize=json.dumps
    )
    instances = [HollowInstance(n, args, session, counters) for n in range(args.instances)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gate = asyncio.Semaphore(args.register_concurrency)

    async def register(instance: HollowInstance) -> None:
        async with gate:
            await instance.register(admin)

    await asyncio.gather(*(register(i) for i in instances))
    print(f"READY {counters.registered}", flush=True)
    runners = [asyncio.create_task(i.run()) for i in instances] if not args.register_only else []
    await stop.wait()
    for r in runners:
        r.cancel()
    with contextlib.suppress(Exception):
        await asyncio.gather(*runners, return_exceptions=True)
    await session.close()
    print("HOLLOW_JSON " + json.dumps(counters.as_json()), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True)
    p.add_argument("--cluster", default="default")
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--cpu-units", type=int, default=4096)
    p.add_argument("--memory-mib", type=int, default=8192)
    p.add_argument("--zones", type=int, default=3)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--run-delay", type=float, default=0.0, help="seconds before reporting new tasks RUNNING")
    p.add_argument("--poll-wait", type=float, default=20.0)
    p.add_argument("--register-concurrency", type=int, default=32)
    p.add_argument(
        "--register-only",
        action="store_true",
        help="register, then neither poll nor report (isolates RunTask)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(parse_args()))
    except ImportError:
        asyncio.run(main(parse_args()))
