"""Rendering HAProxy configuration from a spec (pure), checked by HAProxy itself (``haproxy -c``)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from dockyard.domain.target_groups import HealthCheck
from dockyard.lb.config import Paths, host_regex, path_regex, render, server_args, status_regex
from dockyard.lb.model import BackendSpec, FrontendSpec, LbSpec, RouteSpec, ServerSpec

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


def test_haproxy_accepts_the_rendered_configuration(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text(render(spec(), Paths(str(tmp_path / "admin.sock"), str(tmp_path / "state"))))
    out = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
