"""The engine end to end on the hollow runtime, against the fake control plane: fast, no Docker."""

from __future__ import annotations

from dockyard.agent.checkpoint import load_task
from dockyard.agent.runtime.simulated import SimulatedRuntime

from .harness import busybox, start_agent, until


async def test_register_run_stop(fake, tmp_path):  # type: ignore[no-untyped-def]
    rt = SimulatedRuntime()
    agent = await start_agent(fake, rt, tmp_path / "a", attributes={"team": "blue"}, availability_zone="az-1")
    try:
        reg = fake.instances[agent.arn]
        resources = {r["name"]: r for r in reg["totalResources"]}
        assert resources["CPU"]["integerValue"] == 2048 and resources["MEMORY"]["integerValue"] == 4096
        assert resources["PORTS"]["stringSetValue"] == ["22", "2375", "2376", "51678", "51679"]
        attrs = {a["name"]: a.get("value") for a in reg["attributes"]}
        assert attrs["team"] == "blue" and attrs["ecs.availability-zone"] == "az-1"
        assert attrs["ecs.os-type"] == "linux" and "ecs.capability.container-ordering" in attrs
        assert fake.instances[agent.arn]["ec2InstanceId"].startswith("i-")

        arn = await fake.run_task(busybox({"name": "web"}), agent.arn)
        await until(lambda: fake.status(arn) == "RUNNING", what="RUNNING")
        assert fake.container(arn, "web")["status"] == "RUNNING"
        await fake.stop_task(arn)
        await until(lambda: fake.status(arn) == "STOPPED", what="STOPPED")
        assert fake.container(arn, "web")["exitCode"] == 143
        seqs = [r["seq"] for r in fake.reports if r["taskArn"] == arn]
        assert seqs == sorted(set(seqs))
        assert fake.tasks[arn].history[-1] == "STOPPED" and "RUNNING" in fake.tasks[arn].history
    finally:
        await agent.crash()


async def test_essential_exit_failed_pull_and_unsupported(fake, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, SimulatedRuntime(), tmp_path / "a")
    try:
        exited = await fake.run_task(
            busybox({"name": "main", "command": ["exit", "3"]}, {"name": "side", "essential": False}),
            agent.arn,
        )
        missing = await fake.run_task(busybox({"name": "x", "image": "missing/image:1"}), agent.arn)
        secret = await fake.run_task(
            busybox({"name": "s", "secrets": [{"name": "PW", "valueFrom": "arn:aws:ssm:x"}]}), agent.arn
        )
        for arn in (exited, missing, secret):
            await until(lambda arn=arn: fake.status(arn) == "STOPPED", what=f"{arn} STOPPED")
        r = fake.tasks[exited].report
        assert (r["stopCode"], r["reason"]) == (
            "EssentialContainerExited",
            "Essential container in task exited",
        )
        assert fake.container(exited, "main")["exitCode"] == 3
        assert fake.container(exited, "side")["status"] == "STOPPED"
        r = fake.tasks[missing].report
        assert r["stopCode"] == "TaskFailedToStart" and r["reason"].startswith("CannotPullContainerError")
        r = fake.tasks[secret].report
        assert r["stopCode"] == "TaskFailedToStart"
        assert r["reason"].startswith("ResourceInitializationError") and "secrets" in r["reason"]
    finally:
        await agent.crash()


async def test_depends_on_success_orders_starts(fake, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, SimulatedRuntime(), tmp_path / "a")
    try:
        arn = await fake.run_task(
            busybox(
                {"name": "init", "essential": False, "command": ["exit", "0"]},
                {"name": "app", "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
            ),
            agent.arn,
        )
        await until(lambda: fake.status(arn) == "RUNNING", what="RUNNING")
        assert fake.container(arn, "init")["exitCode"] == 0
        bad = await fake.run_task(
            busybox(
                {"name": "init", "essential": False, "command": ["exit", "1"]},
                {"name": "app", "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
            ),
            agent.arn,
        )
        await until(lambda: fake.status(bad) == "STOPPED", what="STOPPED")
        assert fake.tasks[bad].report["stopCode"] == "TaskFailedToStart"
        assert "init" in fake.container(bad, "app")["reason"]
    finally:
        await agent.crash()


async def test_tasks_start_from_the_answers_definitions(fake, tmp_path):  # type: ignore[no-untyped-def]
    """An answer names each task's definition and carries it once (``taskDefinitions``): the engine
    embeds it in the task again, so the checkpoint holds the task whole, and tasks of one definition
    share one parsed definition. A server that still embeds it in every task is followed too."""
    agent = await start_agent(fake, SimulatedRuntime(), tmp_path / "a")
    try:
        shared = busybox({"name": "web"}, family="shared", taskDefinitionArn="td/shared")
        arns = [await fake.run_task(shared, agent.arn) for _ in range(3)]
        arns.append(await fake.run_task(busybox({"name": "app"}, family="other"), agent.arn))
        await until(lambda: all(fake.status(a) == "RUNNING" for a in arns), what="RUNNING")
        assert fake.polls > 0 and fake.tasks[arns[0]].wire["taskDefinition"]["family"] == "shared"
        saved = [agent.engine.checkpoint.tasks[a]["task"] for a in arns]
        assert [t["taskDefinition"]["family"] for t in saved] == ["shared"] * 3 + ["other"]
        assert [load_task(agent.engine.checkpoint.tasks[a]).containers.keys() for a in arns] == [
            {"web"},
            {"web"},
            {"web"},
            {"app"},
        ]
        tasks = [agent.engine.runners[a].task for a in arns]
        assert tasks[0].definition is tasks[1].definition is tasks[2].definition
        assert tasks[3].definition.family == "other"

        fake.embed_definitions = True  # a server of the version before taskDefinitions
        old = await fake.run_task(busybox({"name": "legacy"}, family="legacy"), agent.arn)
        await until(lambda: fake.status(old) == "RUNNING", what="RUNNING from an embedded definition")
        assert agent.engine.runners[old].task.definition.family == "legacy"
    finally:
        await agent.crash()


async def test_restart_readopts_without_duplicates(fake, tmp_path):  # type: ignore[no-untyped-def]
    rt = SimulatedRuntime()
    agent = await start_agent(fake, rt, tmp_path / "a")
    arn = await fake.run_task(busybox({"name": "web"}), agent.arn)
    await until(lambda: fake.status(arn) == "RUNNING", what="RUNNING")
    gone = await fake.run_task(busybox({"name": "web"}), agent.arn)
    await until(lambda: fake.status(gone) == "RUNNING", what="RUNNING")
    instance = agent.arn
    await agent.crash()
    await fake.stop_task(gone)  # stopped while the agent was away
    before = {o.id for o in await rt.list({})}
    agent = await start_agent(fake, rt, tmp_path / "a")
    try:
        assert agent.arn == instance
        await until(lambda: fake.status(gone) == "STOPPED", what="stray task STOPPED")
        assert fake.status(arn) == "RUNNING"
        assert agent.engine.runners[arn].task.definition.family == "fam"  # from the checkpoint
        assert {o.id for o in await rt.list({})} == before  # nothing created twice
        running = [o for o in await rt.list({}) if o.state.value == "running"]
        assert len(running) == 1
    finally:
        await agent.crash()


async def test_reports_retry_until_the_server_answers(fake, tmp_path):  # type: ignore[no-untyped-def]
    agent = await start_agent(fake, SimulatedRuntime(), tmp_path / "a")
    try:
        fake.fail_reports = True
        arn = await fake.run_task(busybox({"name": "web"}), agent.arn)
        await until(lambda: agent.engine.reporter and agent.engine.reporter.pending, what="pending report")
        fake.fail_reports = False
        await until(lambda: fake.status(arn) == "RUNNING", what="RUNNING")
    finally:
        await agent.crash()


async def test_many_hollow_agents_in_one_process(fake, tmp_path):  # type: ignore[no-untyped-def]
    agents = [await start_agent(fake, SimulatedRuntime(), tmp_path / f"h{i}") for i in range(5)]
    try:
        assert len({a.arn for a in agents}) == 5
        arns = [await fake.run_task(busybox({"name": "web"}), a.arn) for a in agents for _ in range(4)]
        for arn in arns:
            await until(lambda arn=arn: fake.status(arn) == "RUNNING", what="RUNNING")
    finally:
        for a in agents:
            await a.crash()


async def test_stopped_task_cleaned_up_after_the_wait(fake, tmp_path):  # type: ignore[no-untyped-def]
    rt = SimulatedRuntime()
    agent = await start_agent(fake, rt, tmp_path / "a", task_cleanup_wait=0.5)
    try:
        arn = await fake.run_task(busybox({"name": "web", "command": ["exit", "0"]}), agent.arn)
        await until(lambda: fake.status(arn) == "STOPPED", what="STOPPED")
        assert await rt.list({})  # kept for `dockyard logs` until the wait is over
        await until(lambda: arn not in agent.engine.checkpoint.tasks, timeout=5, what="cleanup")
        assert await rt.list({}) == []
        assert arn not in agent.engine.finished
    finally:
        await agent.crash()


async def test_container_removed_behind_the_agents_back_is_stopped(fake, tmp_path):  # type: ignore[no-untyped-def]
    rt = SimulatedRuntime()
    agent = await start_agent(fake, rt, tmp_path / "a")
    try:
        arn = await fake.run_task(busybox({"name": "web"}), agent.arn)
        await until(lambda: fake.status(arn) == "RUNNING", what="RUNNING")
        await rt.remove(fake.container(arn, "web")["runtimeId"])
        await until(lambda: fake.status(arn) == "STOPPED", what="STOPPED")
        assert fake.container(arn, "web")["status"] == "STOPPED"
        assert fake.tasks[arn].report["stopCode"] == "EssentialContainerExited"
    finally:
        await agent.crash()
