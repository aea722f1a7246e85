"""Rendering HAProxy configuration from a spec (pure), checked by HAProxy itself (``haproxy -c``)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess

import pytest

from dockyard.domain.target_groups import HealthCheck
from dockyard.lb.config import (
    Paths,
    RenderOptions,
    host_regex,
    path_regex,
    render,
    server_args,
    source_arg,
    status_regex,
)
from dockyard.lb.model import BackendSpec, FrontendSpec, LbSpec, RouteSpec, ServerSpec
from dockyard.lb.settings import resolve_source_ports

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HTTP_CHECK = HealthCheck("HTTP", "traffic-port", "/health", 5, 2, 2, 3, "200-202")


def server(name: str, draining: bool = False, check_port: int | None = None) -> ServerSpec:
    return ServerSpec(name, "127.0.0.5", 8080, check_port, draining, "reg-" + name)


def spec() -> LbSpec:
    web = BackendSpec(
        "tg-web-1", "arn:web", "http", HTTP_CHECK, servers=(server("a_8080"), server("b_8080", True))
    )
    api = BackendSpec(
        "tg-api-2",
        "arn:api",
        "http",
        HTTP_CHECK,
        algorithm="leastconn",
        slow_start=30,
        servers=(server("c_8080", check_port=9000),),
    )
    raw = BackendSpec(
        "tg-raw-3",
        "arn:raw",
        "tcp",
        HealthCheck("TCP", "traffic-port", None, 10, 5, 3, 3, None),
        proxy_protocol=True,
        servers=(server("d_8080"),),
    )
    routes = (
        RouteSpec(1, ("/api/*", "/v?/x"), (), "tg-api-2"),
        RouteSpec(2, ('/it\'s "odd"',), ("*.example.com",), "tg-api-2"),
    )
    return LbSpec(
        arn="arn:lb",
        name="web",
        id="0123456789abcdef",
        address="127.100.0.7",
        dns_name="web-1.us-east-1.elb.dockyard.internal",
        idle_timeout=120,
        frontends=(
            FrontendSpec("ln-80", 80, "http", routes, "tg-web-1"),
            FrontendSpec("ln-9000", 9000, "tcp", (), "tg-raw-3"),
        ),
        backends=(api, web, raw),
    )


def test_render_maps_listeners_rules_and_groups():
    text = render(spec(), Paths("/run/lb/admin.sock", "/run/lb/servers.state"))
    assert "stats socket /run/lb/admin.sock mode 600 level admin expose-fd listeners" in text
    assert "server-state-file /run/lb/servers.state" in text and "load-server-state-from-file global" in text
    assert "bind 127.100.0.7:80" in text and "bind 127.100.0.7:9000" in text
    assert "use_backend tg-api-2 if r1_path" in text and "use_backend tg-api-2 if r2_path r2_host" in text
    assert text.index("r1_path path_reg") < text.index("r2_path path_reg")  # priority order
    assert "default_backend tg-web-1" in text
    assert "timeout client 120s" in text and "timeout server 120s" in text  # the LB's idle timeout
    assert "source 127.100.0.7" in text  # the LB's own address toward targets
    assert "option httpchk GET '/health'" in text and "timeout check 2s" in text
    assert "balance leastconn" in text and "slowstart 30s" in text and "send-proxy-v2" in text
    assert "server c_8080 127.0.0.5:8080 check inter 5s rise 2 fall 3 port 9000 slowstart 30s" in text
    # quotes in a pattern cannot close the quoted regex: everything but letters and digits is \xHH
    odd = re.search(r"acl r2_path path_reg '([^']*)'", text)
    assert odd is not None and "\\x27" in odd.group(1) and "\\x22" in odd.group(1)


def test_disabled_servers_and_server_args():
    s = spec()
    text = render(s, Paths("/a", "/b"), enabled=lambda backend, name: name != "a_8080")
    assert "server a_8080 127.0.0.5:8080 check inter 5s rise 2 fall 3 disabled" in text
    assert "server b_8080 127.0.0.5:8080 check inter 5s rise 2 fall 3\n" in text
    web = s.backend("tg-web-1")
    assert web is not None
    assert server_args(web, web.servers[0]) == "127.0.0.5:8080 check inter 5s rise 2 fall 3"


@pytest.mark.parametrize(
    ("patterns", "matches", "misses"),
    [
        (("/api/*",), ["/api/", "/api/x/y"], ["/api", "/API/x", "/x/api/"]),
        (("/v?/x", "/exact"), ["/v1/x", "/exact"], ["/v12/x", "/exact/"]),
        (("*.png",), ["/a/b.png"], ["/a/b.pngx", "/a/bxpng"]),
    ],
)
def test_path_patterns(patterns, matches, misses):
    regex = re.compile(path_regex(patterns).replace("\\x", "\\x"))
    for path in matches:
        assert regex.match(path), path
    for path in misses:
        assert not regex.match(path), path


def test_host_patterns_ignore_case_and_port():
    regex = re.compile(host_regex(("*.example.com", "api.test")), re.IGNORECASE)
    assert regex.match("www.Example.COM:8080") and regex.match("api.test")
    assert not regex.match("example.com") and not regex.match("api.testx")
    assert re.match(status_regex("200,202-203"), "203") and not re.match(status_regex("200,202-203"), "201")


def test_source_ports_stay_below_the_ephemeral_range_and_off_the_listeners():
    below = RenderOptions(source_ports=(1024, 32767))
    # listening on its source address (ports 80 and 9000): the range starts above 9000
    assert source_arg(spec(), below) == "127.100.0.7:9001-32767"
    assert source_arg(dataclasses.replace(spec(), source="127.100.0.8"), below) == "127.100.0.8:1024-32767"
    assert source_arg(dataclasses.replace(spec(), source="10.0.1.5"), below) == ""  # a subnet's: no NAT
    assert source_arg(spec(), RenderOptions()) == ""  # the kernel picks
    assert source_arg(spec(), RenderOptions(source_ports=(8000, 9500))) == ""  # too few ports left
    text = render(spec(), Paths("/a", "/b"), below)
    assert "server c_8080 127.0.0.5:8080 check inter 5s rise 2 fall 3 port 9000 slowstart 30s source " in text
    assert text.count(" source 127.100.0.7:9001-32767") == 4  # every server line
    web = spec().backend("tg-web-1")
    assert web is not None
    assert server_args(web, web.servers[0], "127.100.0.7:9001-32767").endswith(
        " source 127.100.0.7:9001-32767"
    )


def test_ephemeral_low_reads_the_kernel_range(tmp_path):
    from dockyard.lb.reconciler import ephemeral_low

    (tmp_path / "range").write_text("32768\t60999\n")
    assert ephemeral_low(tmp_path / "range") == 32768
    assert ephemeral_low(tmp_path / "missing") is None


def test_resolve_source_ports():
    assert resolve_source_ports("auto", 32768) == (1024, 32767)
    assert resolve_source_ports("auto", 1024) is None and resolve_source_ports("auto", None) is None
    assert resolve_source_ports("kernel", 32768) is None and resolve_source_ports("", 32768) is None
    assert resolve_source_ports(" 2000-3000 ", 32768) == (2000, 3000)
    for bad in ("1024", "3000-2000", "0-10", "1-70000", "a-b"):
        with pytest.raises(ValueError):
            resolve_source_ports(bad, 32768)


@pytest.mark.parametrize("source_ports", [None, (1024, 32767)])
def test_haproxy_accepts_the_rendered_configuration(tmp_path, source_ports):
    config = tmp_path / "haproxy.cfg"
    paths = Paths(str(tmp_path / "admin.sock"), str(tmp_path / "state"))
    config.write_text(render(spec(), paths, RenderOptions(source_ports=source_ports)))
    out = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
