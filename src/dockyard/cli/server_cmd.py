"""``dockyard server``: the control plane (the ECS API) with embedded defaults.

Heavy imports (uvicorn, Starlette, botocore) happen inside the functions, so ``dockyard agent``,
which shares the ``dockyard`` command, does not pay for them in memory.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from dockyard.controller.model import ControllerSettings
    from dockyard.lb.settings import LbSettings
    from dockyard.services.context import Env, Settings
    from dockyard.services.ec2_store import Ec2Settings

# The server keeps a large heap of long-lived objects (the cluster cache: every task, instance and
# index entry) and allocates many short-lived ones per request: collecting the youngest generation
# every 700 allocations and walking the long-lived heap in full collections cost about a quarter of
# a placement's CPU (measured in-process). Collect the young generations less often, freeze what
# startup built, and leave full collections (the whole heap, each time it grew by a quarter while
# the cache fills) to a background job every FULL_COLLECTION_SECONDS.
# A young collection walks every young object still alive, and under load that is mostly the
# agents' long-polls in flight (a thousand coroutine chains, events and timers that live until the
# next placement on their instance): at 20,000 allocations (a collection every ~0.5 s) nearly every
# poll was walked once; at 50,000 (~2 s) most answered first. Measured (gc.callbacks, process
# time, bench/placement.py e2e): young collections ~50-70 ms of CPU per second of load -> ~35,
# each pause ~20-55 ms -> ~55-65 ms. The middle generation keeps its interval of about a million
# allocations (50,000 x 20).
GC_THRESHOLDS = (50_000, 20, 1_000_000)
FULL_COLLECTION_SECONDS = 30.0

# The SQLite writer thread needs the GIL back after every statement (SQLite runs without it), and
# a thread waiting for the GIL gets it only after the switch interval, when the holder is asked to
# drop it. With Python's 5 ms, a batch of ~10 statements could wait tens of milliseconds for the
# event loop, and the loop then idled waiting for those commits (measured: idle ~10-16% of the
# time under bench/placement.py e2e). 1 ms: +4-5% placements/s there (alternating pairs); 0.5 ms
# another +3% over 1 ms (3 pairs, 2 ahead).
SWITCH_INTERVAL = 0.0005

DEFAULT_STATE_DIR = Path(os.environ.get("DOCKYARD_STATE_DIR", str(Path.home() / ".dockyard")))
log = logging.getLogger("dockyard")


async def _run_controller(env: Env, settings: ControllerSettings | None) -> None:
    """The service controller, reading the same cluster cache as the use cases."""
    from dockyard.controller.loop import ServiceController
    from dockyard.services.cluster_state import cluster_cache

    await ServiceController(env.store, await cluster_cache(env, sync=False), env.clock, settings).run()


async def _collect_garbage(interval: float) -> None:
    """A full collection every ``interval`` seconds (GC_THRESHOLDS leaves them to this job)."""
    import asyncio
    import gc

    while True:
        await asyncio.sleep(interval)
        gc.collect()


async def _run_load_balancers(env: Env, settings: LbSettings) -> None:
    """The load-balancer data plane: one HAProxy per ELBv2 load balancer (lb/reconciler.py)."""
    from dockyard.lb.reconciler import LoadBalancerReconciler

    await LoadBalancerReconciler(env.store, env.clock, settings).run()


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
    service_settle_seconds: float = typer.Option(
        40.0, help="Seconds a service task without health check must run to count as healthy."
    ),
    service_backoff_seconds: float = typer.Option(5.0, help="First delay of a service's launch back-off."),
    service_backoff_max_seconds: float = typer.Option(1620.0, help="Longest launch back-off, seconds."),
    service_disconnect_grace: float = typer.Option(
        300.0, help="Seconds an agent may stay disconnected before its service tasks are replaced."
    ),
    lb_network: str = typer.Option("127.100.0.0/16", help="Load balancers' listen addresses come from here."),
    lb_hosts_file: str = typer.Option("/etc/hosts", help="Where load balancers' DNSNames go ('': none)."),
    haproxy: str = typer.Option("/usr/sbin/haproxy", help="The HAProxy binary of the load balancers."),
    default_vpc_cidr: str = typer.Option(
        "10.213.0.0/16", help="Each region's default VPC (clear of Docker's pools and the host's routes)."
    ),
    default_subnet_cidr: str = typer.Option("10.213.0.0/20", help="Each region's default subnet (in it)."),
    log_level: str = typer.Option("info", help="Log level."),
) -> None:
    """Run the control plane (the ECS API) with embedded defaults."""
    import uvloop

    from dockyard.controller.model import ControllerSettings
    from dockyard.lb.settings import LbSettings
    from dockyard.services.context import Settings
    from dockyard.services.ec2_store import Ec2Settings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = ServerOptions(
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
        controller=ControllerSettings(
            settle_seconds=service_settle_seconds,
            backoff_seconds=service_backoff_seconds,
            backoff_max_seconds=service_backoff_max_seconds,
            disconnect_grace_seconds=service_disconnect_grace,
        ),
        lb=LbSettings(
            network=lb_network, hosts_file=lb_hosts_file or None, haproxy=haproxy, state_dir=state_dir / "lb"
        ),
        ec2=Ec2Settings(default_vpc_cidr=default_vpc_cidr, default_subnet_cidr=default_subnet_cidr),
    )
    uvloop.run(serve(options))


@dataclass
class ServerOptions:
    host: str
    port: int
    state_dir: Path
    store_url: str
    account_id: str
    region: str
    settings: Settings
    signature_window: float
    controller: ControllerSettings | None = None  # the service controller's (defaults when None)
    lb: LbSettings | None = None  # load balancing (defaults, files under state_dir/lb, when None)
    ec2: Ec2Settings | None = None  # the default VPC and subnet (checked at start; defaults when None)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"


async def serve(
    options: ServerOptions,
    on_ready: Callable[[Env], Awaitable[None]] | None = None,
    on_exit: Callable[[], None] | None = None,
) -> None:
    """Run the server until SIGINT/SIGTERM.

    ``on_ready(env)`` runs once it accepts requests; ``on_exit()`` runs (synchronously) as soon as a
    shutdown signal arrives, before in-flight requests finish.
    """
    import asyncio
    import gc

    import uvicorn

    from dockyard.api import agent_session
    from dockyard.api.app import ApiConfig, create_app
    from dockyard.api.credentials import PROFILE, KeyRing, write_cli_files
    from dockyard.api.http_protocol import OneWriteHttpToolsProtocol
    from dockyard.clock import SystemClock
    from dockyard.lb.settings import EXTRAS_KEY as LB_SETTINGS
    from dockyard.lb.settings import LbSettings
    from dockyard.services import ec2_store, retention
    from dockyard.services.context import Env
    from dockyard.store import open_store

    options.state_dir.mkdir(parents=True, exist_ok=True)
    clock = SystemClock()
    store = open_store(options.store_url, clock)
    env = Env(store=store, clock=clock, settings=options.settings)
    keyring = KeyRing(store)
    admin = await keyring.bootstrap_admin(
        os.environ.get("DOCKYARD_ACCESS_KEY_ID"), os.environ.get("DOCKYARD_SECRET_ACCESS_KEY")
    )
    write_cli_files(options.state_dir, admin, options.region)
    lb = options.lb or LbSettings(state_dir=options.state_dir / "lb")
    env.extras[LB_SETTINGS] = lb
    try:  # the default VPC and subnet must clear Docker's pools and the host's routes
        env.extras[ec2_store.EXTRAS_KEY] = await ec2_store.check_defaults(
            env, options.ec2 or ec2_store.Ec2Settings(), options.account_id, options.region
        )
    except ec2_store.DefaultRangeError as e:
        await store.close()
        raise SystemExit(f"dockyard server: {e}") from None
    api = create_app(
        env,
        keyring,
        ApiConfig(account_id=options.account_id, signature_window_seconds=options.signature_window),
        background=[
            lambda: retention.run(env),
            lambda: _run_controller(env, options.controller),
            lambda: _run_load_balancers(env, lb),
            lambda: _collect_garbage(FULL_COLLECTION_SECONDS),
        ],
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            env.stopping.set()  # long-polls answer now instead of holding the shutdown
            if on_exit is not None:
                on_exit()
            super().handle_exit(sig, frame)

    srv = Server(
        uvicorn.Config(
            api,
            host=options.host,
            port=options.port,
            loop="uvloop",
            http=OneWriteHttpToolsProtocol,  # each answer's head and body in one socket write
            ws=_websocket_protocol(),  # agent sessions (api/agent_session.py)
            ws_max_size=agent_session.MAX_MESSAGE,
            ws_per_message_deflate=False,  # small JSON messages on loopback or a LAN: not worth the CPU
            access_log=False,
            log_level="warning",
            timeout_keep_alive=30,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=10,
            backlog=4096,
        )
    )
    log.info(
        "dockyard server on %s (store %s)\n  AWS CLI: AWS_SHARED_CREDENTIALS_FILE=%s AWS_CONFIG_FILE=%s "
        "aws --profile %s --endpoint-url %s ecs list-clusters",
        options.endpoint,
        options.store_url,
        options.state_dir / "credentials",
        options.state_dir / "config",
        PROFILE,
        options.endpoint,
    )

    async def when_ready() -> None:
        while not srv.started:
            if srv.should_exit:
                return
            await asyncio.sleep(0.05)
        gc.freeze()  # what startup built lives as long as the server: no collection walks it again
        if on_ready is not None:
            await on_ready(env)

    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL)
    ready = asyncio.create_task(when_ready())
    try:
        await srv.serve()
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        ready.cancel()
        await asyncio.gather(ready, return_exceptions=True)
        await store.close()


def _websocket_protocol() -> type:
    """uvicorn's websockets-sansio protocol, minus one false alarm: a refused upgrade (an AWS error
    sent as the HTTP answer, ``websocket.http.response.*``) is logged by uvicorn 0.54 as "ASGI
    callable returned without completing handshake" at ERROR, so any unsigned client could fill
    the log. The answer is complete once its last body part is sent; this says so."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class Protocol(WebSocketsSansIOProtocol):
        async def send(self, message: Any) -> None:
            await super().send(message)
            if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
                self.handshake_complete = True

    return Protocol
