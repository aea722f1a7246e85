"""Runtime API commands that bring HAProxy's servers to the spec (PURE: states in, command lines out).

Per server, desired (``ServerSpec``) against observed (``show servers state``)::

    missing                      add server B/S <check settings>; then, unless draining, one batch:
                                 enable health; enable server; set server health down
                                 (a new target takes no traffic until ``rise`` checks pass: initial)
    address or port differ       remove, then add as above
    in service, should drain     set server state drain   (no new requests; in-flight ones finish)
    draining, registered again   set server state ready
    in maintenance, should serve the enable batch (servers rendered ``disabled`` at a start or reload)
    not desired any more         set server state maint; shutdown sessions server; del server

Each entry of the plan is one line sent on its own connection; commands joined by ``;`` in one line
run back to back inside HAProxy, so no request is routed between ``enable server`` and
``set server health down``.
"""

from __future__ import annotations

from collections.abc import Mapping

from dockyard.lb.config import server_args
from dockyard.lb.model import LbSpec
from dockyard.lb.observe import ServerState


def enable_batch(backend: str, server: str) -> str:
    target = f"{backend}/{server}"
    return f"enable health {target};enable server {target};set server {target} health down"


def remove_batch(backend: str, server: str) -> str:
    target = f"{backend}/{server}"
    return f"set server {target} state maint;shutdown sessions server {target};del server {target}"


def plan(spec: LbSpec, observed: Mapping[tuple[str, str], ServerState], source: str = "") -> list[str]:
    """``source``: what ``config.source_arg`` gives for the spec, carried by every added server."""
    commands: list[str] = []
    desired = spec.servers()
    known_backends = {b.name for b in spec.backends}
    for backend, name in sorted(observed):
        if backend in known_backends and (backend, name) not in desired:
            commands.append(remove_batch(backend, name))
    for be in spec.backends:
        for server in be.servers:
            state = observed.get((be.name, server.name))
            if state is not None and (state.address != server.address or state.port != server.port):
                commands.append(remove_batch(be.name, server.name))
                state = None
            if state is None:
                commands.append(f"add server {be.name}/{server.name} {server_args(be, server, source)}")
                if not server.draining:
                    commands.append(enable_batch(be.name, server.name))
                continue
            if server.draining:
                if not state.maint and not state.drain:
                    commands.append(f"set server {be.name}/{server.name} state drain")
            elif state.maint:
                commands.append(enable_batch(be.name, server.name))
            elif state.drain:
                commands.append(f"set server {be.name}/{server.name} state ready")
    return commands
