#!/usr/bin/env python3
"""Hollow container instances for scale benchmarks: N simulated agents in one process.

A thin wrapper around ``dockyard agent --runtime simulated --instances N`` (``dockyard.agent.hollow``):
every hollow instance is the real agent engine over the simulated runtime (registration with its
own ``i-...`` id and the CPU and memory given, an availability zone out of ``--zones``, the
desired-set long-poll, one runner per task walking the real lifecycle after the ``--sim-*-ms``
delays, batched reports that ride the next poll when one is due), and they all share one aiohttp
session. Their traffic is part of the benchmark's load. This wrapper adds what the benchmark reads:
it prints ``READY n`` once every instance registered, and a ``HOLLOW_JSON {...}`` line with the
counters when it gets SIGTERM or SIGINT. Run::

    python bench/hollow_agents.py --server http://127.0.0.1:8080 --cluster bench --instances 1000 \\
        --cpu-units 4096 --memory-mib 8192 [--zones 3] [--sim-start-ms 0] [--report-window-ms 100]

with the admin key pair in ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (the instances register
with it, then sign with the credentials issued to each of them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dockyard.agent.engine import AgentSettings
from dockyard.agent.hollow import HollowAgents
from dockyard.agent.runtime.base import PullBehavior
from dockyard.agent.runtime.simulated import Delays
from dockyard.client.sigv4 import Credentials


async def main(args: argparse.Namespace) -> None:
    admin = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="dockyard-hollow-"))
    template = AgentSettings(
        server=args.server,
        cluster=args.cluster,
        state_dir=state_dir,
        region=args.region,
        credentials=admin,
        cpu_units=args.cpu_units,
        memory_mib=args.memory_mib,
        attributes={"ecs.instance-type": "hollow.large"},
        pull_behavior=PullBehavior.PREFER_CACHED,
        poll_wait=args.poll_wait,
        cgroup_root=None,
        report_window=args.report_window_ms / 1000,
        poll_interval=args.poll_interval_ms / 1000,
        session=not args.no_session,
    )
    delays = Delays(
        pull=args.sim_pull_ms / 1000,
        create=args.sim_create_ms / 1000,
        start=args.sim_start_ms / 1000 + args.run_delay,
        stop=args.sim_stop_ms / 1000,
    )
    zones = [f"{args.region}{'abcdefghij'[i]}" for i in range(args.zones)]
    hollow = HollowAgents(
        template,
        args.instances,
        zones=zones,
        delays=delays,
        register_concurrency=args.register_concurrency,
    )
    job = asyncio.create_task(
        hollow.run(lambda n: print(f"READY {n}", flush=True), register_only=args.register_only)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.wait([job, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    running = hollow.running_tasks()
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await job
    counters = {"registered": hollow.registered, **hollow.stats.as_json(), "tasks_running": running}
    print("HOLLOW_JSON " + json.dumps(counters), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True)
    p.add_argument("--cluster", default="default")
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--cpu-units", type=int, default=4096)
    p.add_argument("--memory-mib", type=int, default=8192)
    p.add_argument("--zones", type=int, default=3)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--state-dir", help="where each instance keeps its identity (default: a new temp dir)")
    p.add_argument("--run-delay", type=float, default=0.0, help="seconds added to each container start")
    p.add_argument("--sim-pull-ms", type=float, default=0.0)
    p.add_argument("--sim-create-ms", type=float, default=0.0)
    p.add_argument("--sim-start-ms", type=float, default=0.0)
    p.add_argument("--sim-stop-ms", type=float, default=0.0)
    p.add_argument("--report-window-ms", type=float, default=100.0)
    p.add_argument("--poll-interval-ms", type=float, default=0.0, help="at least this between desired sets")
    p.add_argument("--poll-wait", type=float, default=20.0)
    p.add_argument("--no-session", action="store_true", help="Poll and Report as HTTP requests")
    p.add_argument("--register-concurrency", type=int, default=32)
    p.add_argument("--log-level", default="warning")
    p.add_argument(
        "--register-only",
        action="store_true",
        help="register, then neither poll nor report (isolates RunTask)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(
        level=arguments.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(arguments))
    else:
        uvloop.run(main(arguments))
