"""HAProxy configuration for one load balancer, rendered from its ``LbSpec`` (PURE: text out).

Shape of the file::

    global      admin socket (level admin, ``expose-fd listeners`` so a reload takes over the
                listening sockets), server-state file (a reload keeps server states), maxconn
    defaults    timeouts (the LB's idle timeout), retries + redispatch, load-server-state
    frontend ln-<port>         one per listener: bind <lb address>:<port>
        acl r<prio>_path path_reg '<regex>'       path-pattern values (OR)
        acl r<prio>_host hdr_reg(host) -i '<regex>'  host-header values (OR)
        use_backend <tg> if r<prio>_path r<prio>_host   conditions AND, rules by priority
        default_backend <tg>
    backend tg-<name>-<id>     one per target group in use: balance, ``source <lb source address>``,
        health check (option httpchk / tcp), server lines for the registered targets (each with
        ``source <address>:<port range>`` when ``source_arg`` gives one)

Dynamic servers ignore ``default-server``, so every server line (and every runtime ``add server``)
carries the full check settings: ``server_args`` builds them once for both.

Patterns become regular expressions written with ``\\xHH`` escapes for every character that is not
a letter or digit, inside single quotes: nothing in a pattern can end the quote or inject a keyword.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from dockyard.domain.target_groups import matched_codes
from dockyard.lb.model import BackendSpec, FrontendSpec, LbSpec, ServerSpec


@dataclass(frozen=True)
class Paths:
    admin_socket: str
    state_file: str


@dataclass(frozen=True)
class RenderOptions:
    maxconn: int = 4096
    # Targets are on this machine: a connection that is not up in 100 ms met a full accept queue
    # (its SYN was dropped; the kernel would resend it only after 1 s). Giving up and retrying
    # (``retries``, ``retry-on conn-failure``, ``redispatch``) is then far quicker.
    connect_timeout_ms: int = 100
    hard_stop_after: int = 60  # seconds an old process may keep serving after a reload
    nbthread: int | None = None
    # Source ports HAProxy takes toward targets (``source_arg``); None lets the kernel pick them
    # from its ephemeral range.
    source_ports: tuple[int, int] | None = None


# Fewer free source ports than this and HAProxy's own allocation is not worth it: the kernel picks.
MIN_SOURCE_PORTS = 1024


def _quote(text: str) -> str:
    """A single-quoted HAProxy word (a quote inside is closed, escaped and reopened)."""
    return "'" + text.replace("'", "'\\''") + "'"


def _escape(text: str) -> str:
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{ord(c):02x}" for c in text)


def wildcard_regex(pattern: str) -> str:
    """ELBv2 wildcards: ``*`` any run of characters, ``?`` exactly one; everything else literal."""
    return "".join(".*" if c == "*" else "." if c == "?" else _escape(c) for c in pattern)


def path_regex(patterns: tuple[str, ...]) -> str:
    return "^(?:" + "|".join(wildcard_regex(p) for p in patterns) + ")$"


def host_regex(patterns: tuple[str, ...]) -> str:
    """Host patterns match the Host header without its port, case-insensitively (``-i``)."""
    return "^(?:" + "|".join(wildcard_regex(p) for p in patterns) + ")(?::[0-9]+)?$"


def status_regex(matcher: str) -> str:
    codes = [str(code) for low, high in matched_codes(matcher) for code in range(low, high + 1)]
    return "^(?:" + "|".join(dict.fromkeys(codes)) + ")$"


def source_arg(spec: LbSpec, options: RenderOptions) -> str:
    """``<source address>:<low>-<high>`` for every server, or "" (the backend's ``source`` line only).

    Targets published on a host port sit behind Docker's DNAT and MASQUERADE: every connection
    reaches the container from the bridge's gateway address, keeping its source port when it can.
    HAProxy's connections and those of any other local client (a health probe, a user's curl, a
    benchmark) then share one port space at the container, whose TIME_WAIT sockets outlive the
    kernel's reuse of a port by the other client. SYNs landing on the other client's sockets were
    dropped (HAProxy's connects timed out and were retried, a plain client waits 1 s for its SYN
    to be resent), more and more while both were busy (bench/lb.py). ``options.source_ports`` is
    therefore a range below the kernel's ephemeral range (HAProxy hands its ports out in turn, each
    reused only after all the others), minus the listeners' ports when the load balancer listens on
    its source address (a port it listens on cannot be bound again).

    Only for a loopback source: a subnet address (awsvpc) is the load balancer's alone and reaches
    task addresses without NAT, and there a port HAProxy closed first would sit in TIME_WAIT that
    the kernel (``tcp_tw_reuse`` = 2: loopback only) does not let a new connection take over."""
    if options.source_ports is None or not ipaddress.ip_address(spec.source_address).is_loopback:
        return ""
    low, high = options.source_ports
    if spec.source_address == spec.address:
        low = max([low, *(fe.port + 1 for fe in spec.frontends if low <= fe.port <= high)])
    if high - low + 1 < MIN_SOURCE_PORTS:
        return ""
    return f"{spec.source_address}:{low}-{high}"


def server_args(backend: BackendSpec, server: ServerSpec, source: str = "") -> str:
    """Everything after the server's name, for a ``server`` line and for ``add server`` alike
    (``source``: ``source_arg``, "" for none)."""
    hc = backend.health_check
    args = [
        f"{server.address}:{server.port}",
        "check",
        f"inter {hc.interval}s",
        f"rise {hc.healthy_threshold}",
        f"fall {hc.unhealthy_threshold}",
    ]
    if server.check_port is not None:
        args.append(f"port {server.check_port}")
    if backend.slow_start:
        args.append(f"slowstart {backend.slow_start}s")
    if backend.proxy_protocol:
        args.append("send-proxy-v2")
    if source:
        args.append(f"source {source}")
    return " ".join(args)


def _frontend(spec: LbSpec, fe: FrontendSpec) -> list[str]:
    lines = [f"frontend {fe.name}", f"    mode {fe.mode}", f"    bind {spec.address}:{fe.port}"]
    if fe.mode == "http":
        lines += [
            "    option forwardfor",
            "    http-request set-header X-Forwarded-Proto http",
            f"    http-request set-header X-Forwarded-Port {fe.port}",
        ]
        for route in fe.routes:
            names = []
            acl = f"r{route.priority}"
            if route.path_patterns:
                names.append(f"{acl}_path")
                lines.append(f"    acl {acl}_path path_reg {_quote(path_regex(route.path_patterns))}")
            if route.host_patterns:
                names.append(f"{acl}_host")
                lines.append(f"    acl {acl}_host hdr_reg(host) -i {_quote(host_regex(route.host_patterns))}")
            if names:
                lines.append(f"    use_backend {route.backend} if {' '.join(names)}")
    if fe.default_backend:
        lines.append(f"    default_backend {fe.default_backend}")
    return lines


def _backend(spec: LbSpec, be: BackendSpec, enabled: Callable[[str, str], bool], source: str) -> list[str]:
    hc = be.health_check
    lines = [
        f"backend {be.name}",
        f"    mode {be.mode}",
        f"    balance {be.algorithm}",
        f"    source {spec.source_address}",
        f"    timeout check {hc.timeout}s",
    ]
    if hc.protocol == "HTTP":
        lines.append(f"    option httpchk GET {_quote(hc.path or '/')}")
        lines.append(f"    http-check expect rstatus {_quote(status_regex(hc.matcher or '200'))}")
    if be.mode == "http":
        lines.append("    retry-on conn-failure empty-response junk-response")
    for server in be.servers:
        off = "" if enabled(be.name, server.name) else " disabled"
        lines.append(f"    server {server.name} {server_args(be, server, source)}{off}")
    return lines


def render(
    spec: LbSpec,
    paths: Paths,
    options: RenderOptions = RenderOptions(),
    enabled: Callable[[str, str], bool] = lambda backend, server: True,
) -> str:
    """The whole file. ``enabled(backend, server)`` False renders the server ``disabled`` (maint):
    the data plane then brings it in through its checks, as a newly registered target."""
    lines = [
        f"# load balancer {spec.arn}",
        "global",
        f"    maxconn {options.maxconn}",
        f"    stats socket {paths.admin_socket} mode 600 level admin expose-fd listeners",
        f"    server-state-file {paths.state_file}",
        f"    hard-stop-after {options.hard_stop_after}s",
    ]
    if options.nbthread:
        lines.append(f"    nbthread {options.nbthread}")
    lines += [
        "",
        "defaults",
        f"    timeout connect {options.connect_timeout_ms}ms",
        f"    timeout client {spec.idle_timeout}s",
        f"    timeout server {spec.idle_timeout}s",
        f"    timeout http-keep-alive {spec.idle_timeout}s",
        "    timeout http-request 60s",
        "    timeout queue 10s",
        "    retries 3",
        "    option redispatch 1",
        "    load-server-state-from-file global",
    ]
    for fe in spec.frontends:
        lines += ["", *_frontend(spec, fe)]
    source = source_arg(spec, options)
    for be in spec.backends:
        lines += ["", *_backend(spec, be, enabled, source)]
    return "\n".join(lines) + "\n"
