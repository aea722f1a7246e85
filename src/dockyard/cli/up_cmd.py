"""``dockyard up``: everything on one machine — the server (embedded SQLite) and a local agent.

The server runs in this process; the agent runs as a child process (as it would on another host),
registered to cluster ``default`` on this machine's Docker with the admin profile the server wrote.
Ctrl-C (or SIGTERM) stops the agent first, then the server. Task containers keep running across a
restart of the agent, as with ECS; ``dockyard up`` again re-adopts them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dockyard.cli.server_cmd import DEFAULT_STATE_DIR, ServerOptions, serve

if TYPE_CHECKING:
    from dockyard.services.context import Env

log = logging.getLogger("dockyard.up")


def up(
    host: str = typer.Option("127.0.0.1", help="Address the server listens on."),
    port: int = typer.Option(8080, help="Port the server listens on."),
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, help="Where state, credentials and config live."),
    cluster: str = typer.Option("default", help="The cluster the local agent joins (created if missing)."),
    region: str = typer.Option("us-east-1", help="The region of the credentials profile."),
    account_id: str = typer.Option("000000000000", help="The AWS account id resources belong to."),
    image_pull_behavior: str = typer.Option(
        "prefer-cached",
        help="The local agent's image pull behaviour. prefer-cached (here) runs images this machine has "
        "without asking a registry; ECS's own default, `default`, pulls first.",
    ),
    agent_arg: list[str] = typer.Option([], help="An extra argument for the agent (repeatable)."),
    log_level: str = typer.Option("info", help="Log level."),
) -> None:
    """Run the server and a local agent with embedded defaults; Ctrl-C stops both."""
    import uvloop

    from dockyard.services.context import Settings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state_dir = state_dir.resolve()
    options = ServerOptions(
        host=host,
        port=port,
        state_dir=state_dir,
        store_url=f"sqlite:///{state_dir}/state.db",
        account_id=account_id,
        region=region,
        settings=Settings(endpoint=f"http://{host}:{port}"),
        signature_window=900.0,
    )
    agent: subprocess.Popen[bytes] | None = None

    async def on_ready(env: Env) -> None:
        nonlocal agent
        from dockyard.services.clusters import create_cluster
        from dockyard.services.context import Principal, RequestContext

        ctx = RequestContext(account_id, region, Principal("admin", "dockyard-up"), "dockyard-up")
        await create_cluster(env, ctx, {"clusterName": cluster})
        agent_env = dict(os.environ)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            agent_env.pop(k, None)
        agent_env.update(
            AWS_SHARED_CREDENTIALS_FILE=str(state_dir / "credentials"),
            AWS_CONFIG_FILE=str(state_dir / "config"),
            AWS_PROFILE="dockyard",
            AWS_REGION=region,
        )
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dockyard.cli.agent_cmd",
                "agent",
                "--server",
                options.endpoint,
                "--cluster",
                cluster,
                "--state-dir",
                str(state_dir / "agent"),
                "--log-level",
                log_level,
                "--image-pull-behavior",
                image_pull_behavior,
                *agent_arg,
            ],
            env=agent_env,
            start_new_session=True,  # Ctrl-C reaches us; we stop the agent in order
        )
        print(
            f"\nDockyard is up: endpoint {options.endpoint}, cluster {cluster!r}, agent pid {agent.pid}\n"
            f"  export AWS_SHARED_CREDENTIALS_FILE={state_dir / 'credentials'} "
            f"AWS_CONFIG_FILE={state_dir / 'config'} AWS_PROFILE=dockyard\n"
            f"  aws --endpoint-url {options.endpoint} ecs list-container-instances --cluster {cluster}\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )

    def on_exit() -> None:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)

    try:
        uvloop.run(serve(options, on_ready=on_ready, on_exit=on_exit))
    finally:
        if agent is not None:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        print("Dockyard stopped.", flush=True)
