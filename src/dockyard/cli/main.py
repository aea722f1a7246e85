"""The ``dockyard`` command: ``server`` (the control plane) and, later, ``agent`` and ``up``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import typer
import uvicorn
import uvloop

from dockyard.api.app import ApiConfig, create_app
from dockyard.api.credentials import PROFILE, KeyRing, write_cli_files
from dockyard.cli.agent_cmd import agent as agent_command
from dockyard.cli.agent_cmd import logs as logs_command
from dockyard.clock import SystemClock
from dockyard.services import retention
from dockyard.services.context import Env, Settings
from dockyard.store import open_store

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Dockyard: ECS you can run yourself.")


@app.callback()
def _root() -> None:
    """Dockyard: ECS you can run yourself."""


app.command("agent")(agent_command)
app.command("logs")(logs_command)

DEFAULT_STATE_DIR = Path(os.environ.get("DOCKYARD_STATE_DIR", str(Path.home() / ".dockyard")))


@app.command()
def server(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, help="Where state, credentials and config live."),
    store: str = typer.Option("", help="Store URL: sqlite:///path/state.db (default, under the state dir)."),
    account_id: str = typer.Option("000000000000", help="The AWS account id resources belong to."),
    region: str = typer.Option("us-east-1", help="The region written to the credentials profile."),
    retention_seconds: float = typer.Option(3600.0, help="How long INACTIVE/deleted objects stay visible."),
    retention_interval: float = typer.Option(60.0, help="How often expired objects are swept, seconds."),
    signature_window: float = typer.Option(900.0, help="Accepted clock skew of signed requests, seconds."),
    agent_timeout: float = typer.Option(30.0, help="Seconds without a poll before an agent is disconnected."),
    stopped_task_retention: float = typer.Option(3600.0, help="How long STOPPED tasks stay describable."),
    log_level: str = typer.Option("info", help="Log level."),
) -> None:
    """Run the control plane (the ECS API) with embedded defaults."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(
        _serve(
            host=host,
            port=port,
            state_dir=state_dir,
            store_url=store or f"sqlite:///{state_dir.resolve()}/state.db",
            account_id=account_id,
            region=region,
            settings=Settings(
                inactive_retention_seconds=retention_seconds,
                retention_interval_seconds=retention_interval,
                agent_timeout_seconds=agent_timeout,
                stopped_task_retention_seconds=stopped_task_retention,
                endpoint=f"http://{host}:{port}",
            ),
            signature_window=signature_window,
        )
    )


async def _serve(
    *,
    host: str,
    port: int,
    state_dir: Path,
    store_url: str,
    account_id: str,
    region: str,
    settings: Settings,
    signature_window: float,
) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    clock = SystemClock()
    store = open_store(store_url, clock)
    env = Env(store=store, clock=clock, settings=settings)
    keyring = KeyRing(store)
    admin = await keyring.bootstrap_admin(
        os.environ.get("DOCKYARD_ACCESS_KEY_ID"), os.environ.get("DOCKYARD_SECRET_ACCESS_KEY")
    )
    write_cli_files(state_dir, admin, region)
    api = create_app(
        env,
        keyring,
        ApiConfig(account_id=account_id, signature_window_seconds=signature_window),
        background=[lambda: retention.run(env)],
    )
    config = uvicorn.Config(
        api,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
        backlog=4096,
    )
    srv = uvicorn.Server(config)
    logging.getLogger("dockyard").info(
        "dockyard server on http://%s:%d (store %s); AWS CLI: AWS_SHARED_CREDENTIALS_FILE=%s "
        "AWS_CONFIG_FILE=%s aws --profile %s --endpoint-url http://%s:%d ecs list-clusters",
        host,
        port,
        store_url,
        state_dir / "credentials",
        state_dir / "config",
        PROFILE,
        host,
        port,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: setattr(srv, "should_exit", True))
    try:
        await srv.serve()
    finally:
        await store.close()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
