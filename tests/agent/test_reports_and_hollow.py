"""Report batching (reports ride the next Poll; a Report of their own while a long-poll is out),
the poll interval, and hollow agents (N instances in one process), against the fake control plane."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dockyard.agent import task_spec
from dockyard.agent.hollow import HollowAgents
from dockyard.agent.images import ImagePuller
from dockyard.agent.ports import PortAllocator
from dockyard.agent.reporter import Reporter
from dockyard.agent.runner import Desired, ReportResult, RunnerContext, TaskRunner
from dockyard.agent.runtime.base import PullBehavior
from dockyard.agent.runtime.simulated import Delays, SimulatedRuntime
from dockyard.cli.agent_cmd import app
from dockyard.client.ecs import TransportError
from dockyard.domain.task_status import TaskStatus
from tests.agent.agent_process import AgentProcess
from tests.conftest import wait_until

from .harness import busybox, settings, start_agent, until


async def test_reports_ride_the_next_poll(fake, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, SimulatedRuntime(), tmp_path / "a")
    try:
        for _ in range(3):
            arn = await fake.run_task(busybox({"name": "web"}), agent.arn)
            await until(lambda arn=arn: fake.status(arn) == "RUNNING", what="RUNNING")
        # each new task: one answer, then the next poll carries PENDING..RUNNING as one report
        assert fake.report_calls == 0 and fake.polls_with_reports == 3
        assert sum(fake.report_batches) == 3
        stats = agent.engine.stats  # (the last poll, still out, counts when it is answered)
        assert stats.report_calls == 0 and stats.piggybacked == stats.task_reports >= 2
    finally:
        await agent.crash()


async def test_a_burst_is_reported_in_few_batches(fake, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, SimulatedRuntime(), tmp_path / "a")
    try:
        arns = [await fake.run_task(busybox({"name": "web"}), agent.arn) for _ in range(20)]
        await until(lambda: all(fake.status(a) == "RUNNING" for a in arns), what="all RUNNING")
        assert sum(fake.report_batches) == 20 and len(fake.report_batches) <= 3
    finally:
        await agent.crash()


async def test_a_report_goes_on_its_own_while_a_long_poll_is_out(fake, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, SimulatedRuntime(), tmp_path / "a", report_window=0.05)
    try:
        env = [{"name": "SIMULATED_EXIT_AFTER", "value": "0.3"}]
        arn = await fake.run_task(busybox({"name": "web", "environment": env}), agent.arn)
        await until(lambda: fake.status(arn) == "RUNNING", what="RUNNING")
        polls = fake.polls
        await until(lambda: fake.status(arn) == "STOPPED", timeout=1.5, what="STOPPED, without a new poll")
        assert fake.report_calls == 1 and fake.polls == polls  # the long-poll is still out
    finally:
        await agent.crash()


async def test_reports_refused_with_a_poll_never_hold_up_the_desired_set(fake, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, SimulatedRuntime(), tmp_path / "a")
    try:
        fake.fail_reports = True  # Report calls and polls carrying reports fail
        first = await fake.run_task(busybox({"name": "web"}), agent.arn)
        await until(lambda: agent.engine.reporter and agent.engine.reporter.pending, what="pending report")
        second = await fake.run_task(busybox({"name": "web"}), agent.arn)
        await until(lambda: second in agent.engine.runners, what="the second task started anyway")
        fake.fail_reports = False
        for arn in (first, second):
            await until(lambda arn=arn: fake.status(arn) == "RUNNING", what="RUNNING")
        assert agent.engine.stats.errors >= 1
    finally:
        await agent.crash()


async def test_the_poll_interval_spaces_desired_sets(fake, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, SimulatedRuntime(), tmp_path / "a", poll_interval=0.3)
    try:
        arns = []
        for _ in range(3):
            arns.append(await fake.run_task(busybox({"name": "web"}), agent.arn))
            await asyncio.sleep(0.05)
        await until(lambda: all(fake.status(a) == "RUNNING" for a in arns), what="all RUNNING")
        gaps = [b - a for a, b in zip(fake.poll_times[1:], fake.poll_times[2:], strict=False)]
        assert gaps and min(gaps) >= 0.28  # after each new desired set, at least the interval
    finally:
        await agent.crash()


class _Failing:
    async def report(self, body: dict[str, Any]) -> dict[str, Any]:
        raise TransportError("down")


async def test_reporter_hands_failed_reports_back_unless_superseded() -> None:
    seen: list[tuple[str, int, bool]] = []
    reporter = Reporter(
        _Failing(),  # type: ignore[arg-type]
        cluster_arn="c",
        instance_arn="i",
        on_result=lambda arn, seq, ok: seen.append((arn, seq, ok)),
    )
    reporter.submit({"taskArn": "a", "seq": 1})
    reporter.submit({"taskArn": "b", "seq": 1})
    reporter.submit({"taskArn": "a", "seq": 2})  # replaces the unsent seq 1
    batch = reporter.take()
    assert [(r["taskArn"], r["seq"]) for r in batch] == [("a", 2), ("b", 1)] and reporter.pending == 0
    reporter.submit({"taskArn": "b", "seq": 2})  # newer than what is in flight
    reporter.settle(batch, None)  # the call failed
    assert sorted((r["taskArn"], r["seq"]) for r in reporter.take()) == [("a", 2), ("b", 2)]
    drained = asyncio.ensure_future(reporter.drained())
    await asyncio.sleep(0)
    assert not drained.done()  # a batch is still in flight
    reporter.settle([{"taskArn": "a", "seq": 2}], {"results": [{"taskArn": "a", "accepted": False}]})
    await asyncio.wait_for(drained, 1)
    assert seen == [("a", 2, False)]


class _Recording:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def report(self, body: dict[str, Any]) -> dict[str, Any]:
        self.batches.append([r["taskArn"] for r in body["reports"]])
        return {"results": [{"taskArn": r["taskArn"], "accepted": True} for r in body["reports"]]}


@pytest.mark.parametrize("at_once", [True, False])
async def test_a_report_leaves_at_once_and_later_ones_coalesce(at_once: bool) -> None:
    client = _Recording()
    reporter = Reporter(client, cluster_arn="c", instance_arn="i", window=60.0, at_once=at_once)  # type: ignore[arg-type]
    job = asyncio.create_task(reporter.run())
    try:
        reporter.submit({"taskArn": "a", "seq": 1})
        if at_once:  # the first report does not wait the (minute-long) window
            await until(lambda: client.batches == [["a"]], what="the first report sent")
        reporter.submit({"taskArn": "b", "seq": 1})
        reporter.submit({"taskArn": "c", "seq": 1})
        for _ in range(20):
            await asyncio.sleep(0)
        # within a window of the last Report (or of the first pending one) the rest wait together
        assert client.batches == ([["a"]] if at_once else [])
        assert reporter.pending == (2 if at_once else 3)
    finally:
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)


async def test_hollow_agents_run_n_instances_in_one_process(fake, tmp_path):  # type: ignore[no-untyped-def]
    template = settings(fake.endpoint, tmp_path / "hollow")
    hollow = HollowAgents(template, 6, zones=["az-a", "az-b", "az-c"], delays=Delays(start=0.01))
    ready: list[int] = []
    job = asyncio.create_task(hollow.run(ready.append))
    try:
        await until(lambda: ready == [6], what="6 instances registered")
        engines = hollow.engines
        assert len({e.instance_arn for e in engines}) == 6 and len({e.instance_id for e in engines}) == 6
        zones = [
            next(
                a.get("value")
                for a in fake.instances[e.instance_arn]["attributes"]
                if a["name"] == "ecs.availability-zone"
            )
            for e in engines
        ]
        assert zones == ["az-a", "az-b", "az-c"] * 2
        resources = {
            r["name"]: r.get("integerValue")
            for r in fake.instances[engines[0].instance_arn]["totalResources"]
        }
        assert (resources["CPU"], resources["MEMORY"]) == (2048, 4096)
        session = engines[0].client._session
        assert session is not None and all(e.client._session is session for e in engines)
        # every instance has its first desired set before tasks arrive (one Poll answer each)
        await until(lambda: all(e.revision > 0 for e in engines), what="a first Poll answered on each")
        arns = [
            await fake.run_task(busybox({"name": "web"}), e.instance_arn) for e in engines for _ in range(3)
        ]
        await until(lambda: all(fake.status(a) == "RUNNING" for a in arns), what="all RUNNING")
        await until(lambda: hollow.running_tasks() == 18, what="18 running")
        assert sum(fake.report_batches) >= 18 and hollow.stats.polls >= 12  # one shared ReportStats
        assert not gc.isenabled()  # registered: hollow.YoungCollector collects
        first = [e.instance_arn for e in engines]
    finally:
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
    assert gc.isenabled()
    # each instance keeps its identity in its own state dir: a restart registers the same ones
    assert sorted(p.name for p in (tmp_path / "hollow").iterdir()) == [f"instance-{n:05d}" for n in range(6)]
    again = HollowAgents(template, 6)
    job = asyncio.create_task(again.run(register_only=True))
    try:
        await until(lambda: again.registered == 6, what="registered again")
        assert [e.instance_arn for e in again.engines] == first
    finally:
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)


def test_instances_need_the_simulated_runtime(tmp_path: Path) -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "COLUMNS": "300"}
    out = CliRunner().invoke(
        app,
        ["agent", "--server", "http://127.0.0.1:9", "--state-dir", str(tmp_path), "--instances", "3"],
        env=env,
    )
    assert out.exit_code != 0 and "simulated" in out.output
    out = CliRunner().invoke(
        app,
        ["agent", "--server", "http://127.0.0.1:9", "--runtime", "simulated", "--sim-pull-ms", "-1"],
        env=env,
    )
    assert out.exit_code != 0 and "not negative" in out.output


def test_hollow_agents_need_one_instance(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        HollowAgents(settings("http://127.0.0.1:9", tmp_path), 0)


def test_hollow_agent_command_against_the_real_server(dockyard_server, ecs, unique, tmp_path):  # type: ignore[no-untyped-def]
    """``dockyard agent --runtime simulated --instances 4``: four instances, zones round-robin, tasks
    RUNNING through the real Poll/Report path, a clean stop with its stats."""
    ecs.create_cluster(clusterName=unique)
    ecs.register_task_definition(
        family=unique, containerDefinitions=[{"name": "web", "image": "busybox", "memory": 64}]
    )
    zones = ["local-1a", "local-1b"]
    agent = AgentProcess(
        dockyard_server,
        unique,
        tmp_path / "hollow",
        tmp_path / "hollow.log",
        extra=[
            *("--runtime", "simulated", "--instances", "4", "--cpu-units", "512", "--memory-mib", "512"),
            *("--availability-zones", ",".join(zones), "--sim-start-ms", "20", "--log-level", "info"),
        ],
    ).start()
    try:

        def registered() -> list[dict[str, Any]]:
            arns = ecs.list_container_instances(cluster=unique)["containerInstanceArns"]
            if len(arns) < 4:
                return []
            found = ecs.describe_container_instances(cluster=unique, containerInstances=arns)
            return list(found["containerInstances"])

        instances = wait_until(registered, timeout=30, what="4 hollow instances")
        assert len({i["ec2InstanceId"] for i in instances}) == 4
        az = [
            next(a["value"] for a in i["attributes"] if a["name"] == "ecs.availability-zone")
            for i in instances
        ]
        assert sorted(az) == sorted(zones * 2)
        assert {
            r["integerValue"] for i in instances for r in i["registeredResources"] if r["name"] == "CPU"
        } == {512}
        tasks = [t["taskArn"] for t in ecs.run_task(cluster=unique, taskDefinition=unique, count=8)["tasks"]]

        def all_running() -> bool:
            described = ecs.describe_tasks(cluster=unique, tasks=tasks)["tasks"]
            return all(t["lastStatus"] == "RUNNING" for t in described)

        wait_until(all_running, timeout=30, what="8 tasks RUNNING")
        ecs.stop_task(cluster=unique, task=tasks[0])
        wait_until(
            lambda: (
                ecs.describe_tasks(cluster=unique, tasks=tasks[:1])["tasks"][0]["lastStatus"] == "STOPPED"
            ),
            timeout=30,
            what="a stopped task STOPPED",
        )
    finally:
        agent.kill(signal.SIGTERM)
    stats = [line for line in agent.log().splitlines() if "hollow agent stats" in line]
    assert stats, agent.log()
    counted = json.loads(stats[-1].split("hollow agent stats ", 1)[1])
    # each instance's first Poll is answered at once; the tasks may ride that answer or a later one
    assert counted["instances"] == 4 and counted["polls"] >= 4 and counted["errors"] == 0


async def test_reporter_hold_lasts_until_the_next_take() -> None:
    client = _Recording()
    reporter = Reporter(client, cluster_arn="c", instance_arn="i", window=0.01)  # type: ignore[arg-type]
    reporter.hold()  # the engine's next poll carries what is published meanwhile
    reporter.submit({"taskArn": "a", "seq": 1})
    assert not reporter._wake.is_set()  # no Report of its own
    assert [r["taskArn"] for r in reporter.take()] == ["a"]
    assert not reporter._wake.is_set()  # taken: released, nothing to wake for
    job = asyncio.create_task(reporter.run())
    try:
        reporter.submit({"taskArn": "b", "seq": 1})  # while that poll is out: a Report of its own
        await until(lambda: client.batches == [["b"]], what="a Report of b alone")
    finally:
        job.cancel()


def test_runner_takes_no_message_for_an_acknowledgement() -> None:
    runtime = SimulatedRuntime()
    ctx = RunnerContext(
        runtime=runtime,
        puller=ImagePuller(runtime, PullBehavior.PREFER_CACHED, set()),
        ports=PortAllocator(62000, 62999),
        cgroups=None,
        instance_arn="i",
        publish=lambda task, report: None,
    )
    definition = {"family": "f", "taskDefinitionArn": "td", "revision": 1, **busybox({"name": "web"})}
    task = task_spec.task_from_wire({"taskArn": "arn:t/1", "taskDefinition": definition})
    task.seq = 3
    runner = TaskRunner(task, ctx)
    runner.desire(TaskStatus.RUNNING, 3)  # the server acknowledging report 3: nothing to do
    runner.desire(TaskStatus.RUNNING, 2)
    assert not runner._inbox
    runner.desire(TaskStatus.RUNNING, 4)  # a seq above the task's: taken
    runner.desire(TaskStatus.STOPPED, 4)  # a stop: taken
    assert list(runner._inbox) == [Desired(TaskStatus.RUNNING, 4), Desired(TaskStatus.STOPPED, 4)]
    other = TaskRunner(task_spec.task_from_wire({"taskArn": "arn:t/2", "taskDefinition": definition}), ctx)
    other.task.seq = 3
    other.report_result(3, False)  # a rejected report waits for the server's seq
    other.desire(TaskStatus.RUNNING, 3)
    assert [type(m) for m in other._inbox] == [ReportResult, Desired]
