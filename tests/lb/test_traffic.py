"""Real traffic through HAProxy to real backends, driven only through the ELBv2 API.

Health checks run at the fastest the API allows (every 5 s, 2 to change state), so a target takes
5 to 10 s to become healthy; every wait has a deadline, none is a fixed sleep.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
from collections import Counter

import pytest

from tests.conftest import start_server, wait_until
from tests.lb.backends import start_backend
from tests.lb.conftest import lb_directory, lb_network, make_stack


def spread(stack, n: int = 40, path: str = "/") -> Counter[str]:  # type: ignore[no-untyped-def]
    out: Counter[str] = Counter()
    for _ in range(n):
        status, body = stack.get(path)
        assert status == 200, body
        out[body] += 1
    return out


def test_requests_reach_every_target_and_come_from_the_lb_address(elbv2, backends, stacks, unique):
    stack = make_stack(elbv2, unique)
    stacks.append(stack)
    backends += [start_backend(f"{unique}-{i}") for i in range(3)]
    stack.register(stack.tg, *backends)
    stack.wait_active()
    stack.wait_healthy(stack.tg, *backends)

    # the DNS name resolves on this machine to the load balancer's own loopback address
    address = socket.getaddrinfo(stack.host, 80, socket.AF_INET)[0][4][0]
    assert address.startswith("127.")
    seen = spread(stack, 60)
    assert set(seen) == {b.id for b in backends}
    assert min(seen.values()) >= 15  # round robin
    # targets see the load balancer's own address as the source, not 127.0.0.1
    assert all(b.peers == {address} for b in backends)


def test_unhealthy_target_leaves_rotation_and_comes_back(elbv2, backends, stacks, unique):
    stack = make_stack(elbv2, unique)
    stacks.append(stack)
    sick, well = start_backend(f"{unique}-sick"), start_backend(f"{unique}-well")
    backends += [sick, well]
    stack.register(stack.tg, sick, well)
    stack.wait_healthy(stack.tg, sick, well)

    sick.health_status = 500
    key = f"{sick.host}:{sick.port}"
    wait_until(lambda: stack.health(stack.tg)[key] == "unhealthy", timeout=20, what="target unhealthy")
    out = elbv2.describe_target_health(
        TargetGroupArn=stack.tg["TargetGroupArn"], Targets=[{"Id": sick.host, "Port": sick.port}]
    )["TargetHealthDescriptions"][0]["TargetHealth"]
    assert out["Reason"] == "Target.ResponseCodeMismatch" and "500" in out["Description"]
    assert set(spread(stack, 20)) == {well.id}

    sick.health_status = 200
    stack.wait_healthy(stack.tg, sick)
    assert set(spread(stack, 20)) == {sick.id, well.id}


def test_path_and_host_rules_route_to_two_target_groups(elbv2, backends, stacks, unique):
    stack = make_stack(elbv2, unique)
    stacks.append(stack)
    web, api, admin = (start_backend(f"{unique}-{n}") for n in ("web", "api", "admin"))
    backends += [web, api, admin]
    api_tg = stack.target_group(f"api-{unique}")
    admin_tg = stack.target_group(f"adm-{unique}")
    listener = stack.listener["ListenerArn"]
    elbv2.create_rule(
        ListenerArn=listener,
        Priority=10,
        Conditions=[{"Field": "path-pattern", "Values": ["/api/*"]}],
        Actions=[{"Type": "forward", "TargetGroupArn": api_tg["TargetGroupArn"]}],
    )
    elbv2.create_rule(
        ListenerArn=listener,
        Priority=5,
        Conditions=[
            {"Field": "host-header", "HostHeaderConfig": {"Values": ["admin.*"]}},
            {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*", "/adm?n"]}},
        ],
        Actions=[{"Type": "forward", "TargetGroupArn": admin_tg["TargetGroupArn"]}],
    )
    stack.register(stack.tg, web)
    stack.register(api_tg, api)
    stack.register(admin_tg, admin)
    for tg, b in ((stack.tg, web), (api_tg, api), (admin_tg, admin)):
        stack.wait_healthy(tg, b)

    assert stack.get("/") == (200, web.id)
    assert stack.get("/api/users?x=1") == (200, f"{api.id} /api/users?x=1")
    assert stack.get("/API/users")[1].startswith(web.id)  # path patterns are case sensitive
    assert stack.get("/apix") == (200, f"{web.id} /apix")
    # both conditions of priority 5 must hold; it wins over priority 10
    assert stack.get("/api/x", headers={"Host": "Admin.Example.com:8080"}) == (200, f"{admin.id} /api/x")
    assert stack.get("/admin", headers={"Host": "admin.example.com"}) == (200, f"{admin.id} /admin")
    assert stack.get("/admin", headers={"Host": "www.example.com"}) == (200, f"{web.id} /admin")
    groups = elbv2.describe_target_groups(LoadBalancerArn=stack.lb["LoadBalancerArn"])["TargetGroups"]
    assert {g["TargetGroupArn"] for g in groups} == {
        stack.tg["TargetGroupArn"],
        api_tg["TargetGroupArn"],
        admin_tg["TargetGroupArn"],
    }


def test_deregistration_drains_in_flight_requests_then_removes_the_target(
    elbv2, lb_server, backends, stacks, unique
):
    stack = make_stack(elbv2, unique)
    stacks.append(stack)
    leaving, staying = start_backend(f"{unique}-leaving"), start_backend(f"{unique}-staying")
    backends += [leaving, staying]
    delay = 4
    elbv2.modify_target_group_attributes(
        TargetGroupArn=stack.tg["TargetGroupArn"],
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}],
    )
    stack.register(stack.tg, leaving, staying)
    stack.wait_healthy(stack.tg, leaving, staying)

    # two slow requests in flight, one on each target (round robin)
    results: list[tuple[int, str]] = []
    threads = [threading.Thread(target=lambda: results.append(stack.get("/slow"))) for _ in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: len(leaving.peers) and len(staying.peers), timeout=5, what="slow requests started")
    elbv2.deregister_targets(
        TargetGroupArn=stack.tg["TargetGroupArn"], Targets=[{"Id": leaving.host, "Port": leaving.port}]
    )
    key = f"{leaving.host}:{leaving.port}"
    assert stack.health(stack.tg)[key] == "draining"
    # new requests stop reaching the draining target at once
    wait_until(lambda: set(spread(stack, 6)) == {staying.id}, timeout=15, interval=0.05, what="drained")
    assert set(spread(stack, 20)) == {staying.id}
    for t in threads:
        t.join(15)
    assert sorted(results) == sorted([(200, leaving.id), (200, staying.id)])  # in-flight ones finished

    # after the delay the target is gone from the API and from HAProxy
    wait_until(lambda: key not in stack.health(stack.tg), timeout=delay + 5, what="target removed")
    config = (lb_directory(lb_server, stack) / "haproxy.cfg").read_text()
    sock = re.search(r"stats socket (\S+)", config).group(1)  # type: ignore[union-attr]

    def servers() -> str:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        s.sendall(b"show servers state\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        return data.decode()

    wait_until(lambda: f"{leaving.host}_{leaving.port}" not in servers(), timeout=10, what="server deleted")
    assert f"{staying.host}_{staying.port}" in servers()


def test_two_load_balancers_on_port_80_do_not_collide(elbv2, backends, stacks, unique):
    one, two = make_stack(elbv2, f"a-{unique}"), make_stack(elbv2, f"b-{unique}")
    stacks += [one, two]
    b1, b2 = start_backend(f"{unique}-one"), start_backend(f"{unique}-two")
    backends += [b1, b2]
    one.register(one.tg, b1)
    two.register(two.tg, b2)
    one.wait_healthy(one.tg, b1)
    two.wait_healthy(two.tg, b2)
    assert one.host != two.host
    assert set(spread(one, 10)) == {b1.id}
    assert set(spread(two, 10)) == {b2.id}


def test_a_killed_haproxy_is_restarted_and_resynchronised(elbv2, lb_server, backends, stacks, unique):
    stack = make_stack(elbv2, unique)
    stacks.append(stack)
    a, b = start_backend(f"{unique}-a"), start_backend(f"{unique}-b")
    backends += [a, b]
    stack.register(stack.tg, a, b)
    stack.wait_healthy(stack.tg, a, b)
    pid_file = lb_directory(lb_server, stack) / "haproxy.pid"
    old = int(pid_file.read_text())

    os.kill(old, signal.SIGKILL)
    wait_until(lambda: int(pid_file.read_text()) != old, timeout=10, what="haproxy restarted")
    # targets known healthy are served at once, without waiting for new checks
    wait_until(lambda: stack.get()[0] == 200, timeout=5, interval=0.05, what="traffic again")
    assert set(spread(stack, 20)) == {a.id, b.id}
    # and changes made after the restart still reach the new process through the runtime API
    c = start_backend(f"{unique}-c")
    backends.append(c)
    stack.register(stack.tg, c)
    stack.wait_healthy(stack.tg, c)
    assert set(spread(stack, 30)) == {a.id, b.id, c.id}


def test_structural_changes_reload_without_failing_requests(elbv2, backends, stacks, unique):
    stack = make_stack(elbv2, unique)
    stacks.append(stack)
    a, other = start_backend(f"{unique}-a"), start_backend(f"{unique}-o")
    backends += [a, other]
    stack.register(stack.tg, a)
    stack.wait_healthy(stack.tg, a)

    failures: list[object] = []
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            try:
                status, body = stack.get("/")
                if status != 200 or body != a.id:
                    failures.append((status, body))
            except OSError as e:
                failures.append(e)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        # each of these changes the HAProxy configuration: a seamless reload
        other_tg = stack.target_group(f"o-{unique}")
        rule = elbv2.create_rule(
            ListenerArn=stack.listener["ListenerArn"],
            Priority=1,
            Conditions=[{"Field": "path-pattern", "Values": ["/other*"]}],
            Actions=[{"Type": "forward", "TargetGroupArn": other_tg["TargetGroupArn"]}],
        )["Rules"][0]
        stack.register(other_tg, other)
        stack.wait_healthy(other_tg, other)
        elbv2.modify_target_group(TargetGroupArn=stack.tg["TargetGroupArn"], HealthCheckTimeoutSeconds=3)
        elbv2.delete_rule(RuleArn=rule["RuleArn"])
        wait_until(lambda: stack.get("/other")[1].startswith(a.id), timeout=5, what="rule gone")
    finally:
        done.set()
        worker.join(10)
    assert failures == []
    # the target kept its state through the reloads (no new initial checks)
    assert stack.health(stack.tg)[f"{a.host}:{a.port}"] == "healthy"


def test_a_restarted_server_brings_its_load_balancers_back(tmp_path, backends, unique):
    """The data plane is rebuilt from the store: same address, targets known healthy serve at once."""
    network = lb_network()
    srv = start_server(tmp_path, "--lb-network", network)
    try:
        stack = make_stack(srv.client("elbv2"), unique)
        a = start_backend(f"{unique}-a")
        backends.append(a)
        stack.register(stack.tg, a)
        stack.wait_healthy(stack.tg, a)
        srv.stop()
        with pytest.raises(OSError):
            stack.get(timeout=1)
        srv = start_server(tmp_path, "--lb-network", network)
        stack.client = srv.client("elbv2")
        wait_until(
            lambda: stack.get(timeout=1) == (200, a.id), timeout=10, interval=0.05, what="traffic again"
        )
        assert stack.health(stack.tg)[f"{a.host}:{a.port}"] == "healthy"
        stack.delete()
    finally:
        srv.stop()


def test_target_changes_go_through_the_runtime_api_without_a_reload(
    elbv2, lb_server, backends, stacks, unique
):
    """RegisterTargets / DeregisterTargets change HAProxy's servers at runtime: the serving process
    (its pid) and its configuration file stay the same while targets come and go."""
    stack = make_stack(elbv2, unique)
    stacks.append(stack)
    elbv2.modify_target_group_attributes(
        TargetGroupArn=stack.tg["TargetGroupArn"],
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "0"}],
    )
    first, second = start_backend(f"{unique}-1"), start_backend(f"{unique}-2")
    backends += [first, second]
    stack.register(stack.tg, first)
    stack.wait_healthy(stack.tg, first)
    directory = lb_directory(lb_server, stack)
    pid, config = (directory / "haproxy.pid").read_text(), (directory / "haproxy.cfg").read_text()

    stack.register(stack.tg, second)
    stack.wait_healthy(stack.tg, second)
    wait_until(lambda: set(spread(stack, 10)) == {first.id, second.id}, timeout=10, what="both serve")
    elbv2.deregister_targets(
        TargetGroupArn=stack.tg["TargetGroupArn"], Targets=[{"Id": first.host, "Port": first.port}]
    )
    wait_until(lambda: set(spread(stack, 6)) == {second.id}, timeout=10, what="first target gone")

    assert (directory / "haproxy.pid").read_text() == pid  # the same process: no reload, no restart
    assert (directory / "haproxy.cfg").read_text() == config
