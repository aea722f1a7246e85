"""``dockyard agent`` (run the agent on this host) and ``dockyard logs`` (a task's container output).

Kept apart from ``cli.main``'s server imports so the agent process stays small (no Starlette,
uvicorn or botocore): run it as ``dockyard agent ...`` or ``python -m dockyard.cli.agent_cmd agent ...``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import typer

from dockyard.agent.runtime.base import LABEL_CONTAINER_NAME, LABEL_TASK_ARN, PullBehavior

DEFAULT_AGENT_DIR = Path(os.environ.get("DOCKYARD_STATE_DIR", str(Path.home() / ".dockyard"))) / "agent"


def agent(
    server: str = typer.Option(..., help="The Dockyard server endpoint, e.g. http://127.0.0.1:8080."),
    cluster: str = typer.Option("default", help="The cluster to join."),
    state_dir: Path = typer.Option(
        DEFAULT_AGENT_DIR, help="The agent's own state (checkpoint, instance id)."
    ),
    cpu_units: int | None = typer.Option(None, help="Registered CPU units (default: cores x 1024)."),
    memory_mib: int | None = typer.Option(
        None, help="Registered memory, MiB (default: host memory - reserve)."
    ),
    memory_reserve_mib: int = typer.Option(
        256, help="Memory kept back from tasks when --memory-mib is unset."
    ),
    awsvpc_tasks: int | None = typer.Option(
        None, min=0, help="awsvpc tasks this instance takes (the ENI resource; default 16)."
    ),
    attribute: list[str] = typer.Option([], help="A custom attribute key=value (repeatable)."),
    availability_zone: str | None = typer.Option(None, help="The ecs.availability-zone attribute."),
    region: str | None = typer.Option(None, help="Signing region (default: AWS_REGION, profile, us-east-1)."),
    runtime: str = typer.Option("docker", help="docker | simulated (hollow: no containers)."),
    allow_privileged: bool = typer.Option(False, help="Allow privileged containers."),
    image_pull_behavior: str = typer.Option("default", help="default | always | once | prefer-cached."),
    port_range: str | None = typer.Option(
        None, help="Dynamic host ports LO-HI (default: above the ephemeral range)."
    ),
    bind_address: str = typer.Option("127.0.0.1", help="Address that bridge-mode host ports bind to."),
    bridge_network: str = typer.Option(
        "bridge",
        help="Docker network of bridge-mode tasks: Docker's default 'bridge' (as ECS), or a user-defined "
        "one the agent creates, e.g. dockyard-bridge (embedded DNS, ~35 ms more per container start).",
    ),
    stop_timeout: int = typer.Option(30, help="Default seconds between SIGTERM and SIGKILL."),
    task_cleanup_wait: float = typer.Option(3600.0, help="Seconds stopped containers are kept (logs)."),
    report_window_ms: float = typer.Option(
        20.0,
        help="Milliseconds reports gather before they are sent (they ride the next Poll when one is due); "
        "hollow instances at scale batch better with ~100.",
    ),
    report_at_once: bool | None = typer.Option(
        None,
        "--report-at-once/--no-report-at-once",
        help="Send a report in a Report call of its own at once when none left within the report window "
        "(reports coalesce only under load); default: on with --runtime docker, off for simulated ones.",
    ),
    poll_interval_ms: float = typer.Option(
        0.0, help="At least this many milliseconds between two desired sets acted on (burst coalescing)."
    ),
    session: bool = typer.Option(
        True,
        "--session/--no-session",
        help="Send Poll and Report over one signed WebSocket (default), or each as an HTTP request "
        "(e.g. behind a proxy without WebSockets; a server without sessions is detected either way).",
    ),
    instances: int = typer.Option(
        1, help="With --runtime simulated: how many hollow container instances this process runs."
    ),
    availability_zones: str | None = typer.Option(
        None,
        help="Hollow instances: comma-separated zones, assigned round-robin (e.g. us-east-1a,us-east-1b).",
    ),
    sim_pull_ms: float = typer.Option(0.0, help="Simulated runtime: milliseconds an image pull takes."),
    sim_create_ms: float = typer.Option(
        0.0, help="Simulated runtime: milliseconds a container create takes."
    ),
    sim_start_ms: float = typer.Option(0.0, help="Simulated runtime: milliseconds a container start takes."),
    sim_stop_ms: float = typer.Option(0.0, help="Simulated runtime: milliseconds a container stop takes."),
    log_level: str = typer.Option("info", help="Log level."),
) -> None:
    """Run the Dockyard agent: register this host and run the tasks placed on it.

    With ``--runtime simulated --instances N`` one process runs N hollow container instances (no
    containers; each task walks the real lifecycle after the --sim-*-ms delays), for scale tests."""
    from dockyard.agent.engine import AgentSettings
    from dockyard.agent.ports import default_range, parse_range
    from dockyard.client.credentials import NoCredentials, find_credentials, find_region

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        credentials = find_credentials()
    except NoCredentials as e:
        raise typer.BadParameter(str(e)) from e
    attrs = {}
    for item in attribute:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--attribute wants key=value, not {item!r}")
        attrs[key] = value
    try:
        behavior = PullBehavior(image_pull_behavior)
    except ValueError as e:
        raise typer.BadParameter(f"--image-pull-behavior: {image_pull_behavior!r}") from e
    if runtime not in ("docker", "simulated"):
        raise typer.BadParameter("--runtime is docker or simulated")
    if instances < 1 or (instances > 1 and runtime != "simulated"):
        raise typer.BadParameter("--instances N (N > 1) runs hollow instances: it needs --runtime simulated")
    zones = [z.strip() for z in (availability_zones or "").split(",") if z.strip()]
    if min(report_window_ms, poll_interval_ms, sim_pull_ms, sim_create_ms, sim_start_ms, sim_stop_ms) < 0:
        raise typer.BadParameter("--report-window-ms, --poll-interval-ms and --sim-*-ms are not negative")
    settings = AgentSettings(
        server=server,
        cluster=cluster,
        state_dir=state_dir,
        region=find_region(region) or "us-east-1",
        credentials=credentials,
        cpu_units=cpu_units,
        memory_mib=memory_mib,
        memory_reserve_mib=memory_reserve_mib,
        awsvpc_tasks=awsvpc_tasks,
        attributes=attrs,
        availability_zone=availability_zone,
        allow_privileged=allow_privileged,
        pull_behavior=behavior,
        port_range=parse_range(port_range) if port_range else default_range(),
        bind_address=bind_address,
        bridge_network=bridge_network,
        default_stop_timeout=stop_timeout,
        task_cleanup_wait=task_cleanup_wait,
        cgroup_root=Path("/sys/fs/cgroup") if runtime == "docker" else None,
        report_window=report_window_ms / 1000,
        report_at_once=runtime == "docker" if report_at_once is None else report_at_once,
        poll_interval=poll_interval_ms / 1000,
        session=session,
    )
    delays = (sim_pull_ms / 1000, sim_create_ms / 1000, sim_start_ms / 1000, sim_stop_ms / 1000)
    if instances > 1:
        _run(_run_hollow(settings, instances, zones, delays))
    else:
        if zones and settings.availability_zone is None:
            settings.availability_zone = zones[0]
        _run(_run_agent(settings, runtime, delays))


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the agent does not need it
        asyncio.run(main)
    else:
        uvloop.run(main)


def _cancel_on_signals() -> None:
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: main.cancel() if main else None)


async def _run_hollow(settings: object, count: int, zones: list[str], delays: tuple[float, ...]) -> None:
    from dockyard.agent.engine import AgentSettings
    from dockyard.agent.hollow import HollowAgents
    from dockyard.agent.runtime.simulated import Delays

    assert isinstance(settings, AgentSettings)
    hollow = HollowAgents(settings, count, zones=zones, delays=Delays(*delays))
    _cancel_on_signals()
    log = logging.getLogger("dockyard.agent")
    try:
        await hollow.run()
    except asyncio.CancelledError:
        log.info("hollow agents stopping")
    finally:
        log.info("hollow agent stats %s", json.dumps({**hollow.stats.as_json(), "instances": count}))


async def _run_agent(settings: object, runtime_name: str, delays: tuple[float, ...]) -> None:
    from dockyard.agent.engine import AgentSettings, Engine
    from dockyard.agent.runtime.base import ContainerRuntime

    assert isinstance(settings, AgentSettings)
    runtime: ContainerRuntime
    if runtime_name == "simulated":
        from dockyard.agent.runtime.simulated import Delays, SimulatedRuntime

        runtime = SimulatedRuntime(Delays(*delays))
    else:
        from dockyard.agent.runtime.docker import DockerRuntime

        runtime = DockerRuntime()
    engine = Engine(settings, runtime)
    _cancel_on_signals()
    try:
        await engine.run()
    except asyncio.CancelledError:
        logging.getLogger("dockyard.agent").info("agent stopping; task containers keep running")
    finally:
        await engine.client.close()
        await runtime.close()


def logs(
    task: str = typer.Argument(..., help="The task's ARN or id."),
    container: str | None = typer.Option(None, help="Only this container of the task."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output."),
) -> None:
    """Print a task's container output (awslogs output is kept on this machine)."""
    code = asyncio.run(_logs(task, container, follow))
    raise typer.Exit(code)


async def _logs(task: str, container: str | None, follow: bool) -> int:
    from dockyard.agent.runtime.docker import DockerRuntime

    runtime = DockerRuntime()
    try:
        filters = json.dumps({"label": [LABEL_TASK_ARN]})
        found = await runtime.client.containers.list(all="1", filters=filters)
        matches = []
        for c in found:
            labels = c._container.get("Labels") or {}
            arn = labels.get(LABEL_TASK_ARN, "")
            if (arn == task or arn.endswith("/" + task)) and (
                container is None or labels.get(LABEL_CONTAINER_NAME) == container
            ):
                matches.append((labels.get(LABEL_CONTAINER_NAME, ""), c.id))
        if not matches:
            print(
                f"no containers for task {task}" + (f" named {container}" if container else ""),
                file=sys.stderr,
            )
            return 1
        prefix = len(matches) > 1

        async def show(name: str, cid: str) -> None:
            async for line in runtime.logs(cid, follow=follow):
                sys.stdout.write((f"{name} | " if prefix else "") + line)
                sys.stdout.flush()

        await asyncio.gather(*(show(n, cid) for n, cid in sorted(matches)))
        return 0
    finally:
        await runtime.close()


app = typer.Typer(add_completion=False, no_args_is_help=True, help="The Dockyard agent.")
app.command("agent")(agent)
app.command("logs")(logs)

if __name__ == "__main__":
    app()
