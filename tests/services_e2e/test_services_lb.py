"""Services behind load balancers, with real containers, a real agent and HAProxy.

Busybox httpd tasks (bridge mode, dynamic host ports) answer ``/`` with their container's hostname
(the first 12 characters of the task's ``runtimeId``: which task answered) and ``/health`` while the
file exists. Health checks run at the fastest the ELBv2 API allows (every 5 s, 2 to change state);
deregistration delays are a few seconds. Every wait has a deadline; figures are printed, not
asserted. Two load balancers both listening on port 80 are covered by
``tests/lb/test_traffic.py::test_two_load_balancers_on_port_80_do_not_collide``.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess, wait_until
from tests.lb.backends import get
from tests.lb.conftest import FAST_CHECKS, lb_network, short

from .conftest import Agents, describe_service, needs_docker, register, service_tasks, start_service_server

# the container serves /www: / answers its hostname, /b/ too (for path rules), /health while it exists
HTTPD = [
    "sh",
    "-c",
    "mkdir -p /www/b && hostname > /www/index.html && hostname > /www/b/index.html "
    "&& echo ok > /www/health && trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait",
]
PORTS = [{"containerPort": 80, "hostPort": 0, "protocol": "tcp"}]
DRAIN = 3  # deregistration delay of the tests' target groups, seconds
COMPLETED_WITHIN = 90.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_service_server(tmp_path_factory.mktemp("services-lb"), "--lb-network", lb_network())
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def elbv2(server: ServerProcess) -> Any:
    return server.client("elbv2")


@dataclass
class Stack:
    """An application load balancer with an HTTP listener on port 80 and instance target groups."""

    elbv2: Any
    lb: dict[str, Any]
    listener: dict[str, Any] | None = None
    groups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return str(self.lb["DNSName"])

    def target_group(self, name: str, delay: int = DRAIN) -> dict[str, Any]:
        tg = self.elbv2.create_target_group(
            Name=short(name),
            Protocol="HTTP",
            Port=80,
            VpcId="vpc-test",
            TargetType="instance",
            HealthCheckPath="/health",
            **FAST_CHECKS,
        )["TargetGroups"][0]
        self.elbv2.modify_target_group_attributes(
            TargetGroupArn=tg["TargetGroupArn"],
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}],
        )
        self.groups.append(tg)
        return dict(tg)

    def health(self, tg: dict[str, Any]) -> dict[tuple[str, int], str]:
        out = self.elbv2.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])
        return {
            (d["Target"]["Id"], d["Target"]["Port"]): d["TargetHealth"]["State"]
            for d in out["TargetHealthDescriptions"]
        }

    def get(self, path: str = "/") -> tuple[int, str]:
        status, body = get(self.host, 80, path, timeout=5.0)
        return status, body.strip()

    def delete(self) -> None:
        self.elbv2.delete_load_balancer(LoadBalancerArn=self.lb["LoadBalancerArn"])
        for tg in self.groups:

            def gone(arn: str = tg["TargetGroupArn"]) -> bool:
                self.elbv2.delete_target_group(TargetGroupArn=arn)
                return True

            wait_until(gone, timeout=15, what="target group deleted")


@pytest.fixture
def stacks(elbv2: Any) -> Iterator[list[Stack]]:
    made: list[Stack] = []
    yield made
    for s in made:
        s.delete()


def make_stack(elbv2: Any, stacks: list[Stack], name: str) -> tuple[Stack, dict[str, Any]]:
    lb = elbv2.create_load_balancer(Name=short(name))["LoadBalancers"][0]
    stack = Stack(elbv2, lb)
    stacks.append(stack)
    tg = stack.target_group("tg-" + name)
    stack.listener = elbv2.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
    )["Listeners"][0]
    return stack, tg


def web_service(
    ecs: Any, cluster: str, name: str, td: str, tg: dict[str, Any], desired: int, **kw: Any
) -> dict[str, Any]:
    return dict(
        ecs.create_service(
            cluster=cluster,
            serviceName=name,
            taskDefinition=td,
            desiredCount=desired,
            loadBalancers=[
                {"targetGroupArn": tg["TargetGroupArn"], "containerName": "main", "containerPort": 80}
            ],
            **kw,
        )["service"]
    )


def wait_completed(ecs: Any, cluster: str, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        svc = describe_service(ecs, cluster, name)
        deployments = svc["deployments"]
        ok = len(deployments) == 1 and deployments[0]["rolloutState"] == "COMPLETED"
        return svc if ok and svc["runningCount"] == svc["desiredCount"] else None

    return dict(
        wait_until(done, timeout=COMPLETED_WITHIN, interval=0.25, what=f"{name} deployment completed")
    )


def wait_healthy(stack: Stack, tg: dict[str, Any], instance_id: str, tasks: list[dict[str, Any]]) -> None:
    """Until the targets of ``tasks`` are healthy (RUNNING tasks may still be in their first checks)."""
    wanted = {(instance_id, host_port(t)) for t in tasks}
    wait_until(
        lambda: all(stack.health(tg).get(k) == "healthy" for k in wanted),
        timeout=30,
        interval=0.25,
        what="targets healthy",
    )


def hostname(task: dict[str, Any]) -> str:
    return str(task["containers"][0]["runtimeId"])[:12]


def host_port(task: dict[str, Any]) -> int:
    return int(task["containers"][0]["networkBindings"][0]["hostPort"])


def ec2_id(ecs: Any, cluster: str, instance_arn: str) -> str:
    found = ecs.describe_container_instances(cluster=cluster, containerInstances=[instance_arn])
    return str(found["containerInstances"][0]["ec2InstanceId"])


def answers(stack: Stack, n: int, path: str = "/") -> set[str]:
    out = set()
    for _ in range(n):
        status, body = stack.get(path)
        assert status == 200, (status, body)
        out.add(body)
    return out


def td_of(ecs: Any, family: str) -> str:
    return register(ecs, family, command=HTTPD, portMappings=PORTS)


# ---- CreateService's checks ---------------------------------------------------------------------------


def test_create_service_checks_its_load_balancers(server, ecs, elbv2, stacks, cluster, unique):  # type: ignore[no-untyped-def]
    stack, tg = make_stack(elbv2, stacks, unique)
    loose = stack.target_group("loose-" + unique)  # no listener forwards to it
    td = td_of(ecs, unique)
    arn = tg["TargetGroupArn"]
    cases = {
        "does not exist in the task definition": {
            "targetGroupArn": arn,
            "containerName": "db",
            "containerPort": 80,
        },
        "did not have a container port 81": {
            "targetGroupArn": arn,
            "containerName": "main",
            "containerPort": 81,
        },
        "does not have an associated load balancer": {
            "targetGroupArn": loose["TargetGroupArn"],
            "containerName": "main",
            "containerPort": 80,
        },
        "does not exist": {"targetGroupArn": arn.replace(tg["TargetGroupName"], "nope"), **_main80()},
    }
    for message, entry in cases.items():
        with pytest.raises(ClientError) as err:
            ecs.create_service(
                cluster=cluster, serviceName="x", taskDefinition=td, desiredCount=1, loadBalancers=[entry]
            )
        assert err.value.response["Error"]["Code"] == "InvalidParameterException"
        assert message in err.value.response["Error"]["Message"]
    svc = web_service(ecs, cluster, "ok", td, tg, 0)
    assert svc["loadBalancers"] == [{"targetGroupArn": arn, "containerName": "main", "containerPort": 80}]
    # a new revision must still have the container and port
    other = register(ecs, unique, command=HTTPD, portMappings=[{"containerPort": 8080}])
    with pytest.raises(ClientError, match="did not have a container port 80"):
        ecs.update_service(cluster=cluster, service="ok", taskDefinition=other)
    ecs.delete_service(cluster=cluster, service="ok")


def _main80() -> dict[str, Any]:
    return {"containerName": "main", "containerPort": 80}


# ---- traffic ------------------------------------------------------------------------------------------


@needs_docker
def test_three_tasks_behind_an_alb_get_requests(server, ecs, elbv2, stacks, cluster, agents: Agents, unique):  # type: ignore[no-untyped-def]
    instance = agents.spawn(server, cluster).wait_registered()
    stack, tg = make_stack(elbv2, stacks, unique)
    td = td_of(ecs, unique)
    web_service(ecs, cluster, "web", td, tg, 3)
    started = time.monotonic()
    svc = wait_completed(ecs, cluster, "web")
    print(f"\n3 tasks registered and healthy in {time.monotonic() - started:.1f} s")
    assert svc["loadBalancers"][0]["targetGroupArn"] == tg["TargetGroupArn"]
    tasks = service_tasks(ecs, cluster, "web")
    assert len(tasks) == 3 and all(t["lastStatus"] == "RUNNING" for t in tasks)
    # instance targets: the container instance's ec2InstanceId and each task's host port
    instance_id = ec2_id(ecs, cluster, instance)
    assert stack.health(tg) == {(instance_id, host_port(t)): "healthy" for t in tasks}
    assert answers(stack, 30) == {hostname(t) for t in tasks}
    assert "(service web) has reached a steady state." in [e["message"] for e in svc["events"]]


@needs_docker
def test_a_task_whose_health_path_fails_leaves_rotation_and_is_replaced(  # type: ignore[no-untyped-def]
    server, ecs, elbv2, stacks, cluster, agents: Agents, unique
):
    instance = agents.spawn(server, cluster).wait_registered()
    stack, tg = make_stack(elbv2, stacks, unique)
    web_service(ecs, cluster, "web", td_of(ecs, unique), tg, 2)
    wait_completed(ecs, cluster, "web")
    victim, other = service_tasks(ecs, cluster, "web")
    instance_id = ec2_id(ecs, cluster, instance)
    target = (instance_id, host_port(victim))
    subprocess.run(
        ["docker", "exec", victim["containers"][0]["runtimeId"], "rm", "/www/health"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    began = time.monotonic()
    wait_until(lambda: stack.health(tg).get(target) != "healthy", timeout=30, what="the target failing")
    print(f"\ntarget out of service {time.monotonic() - began:.1f} s after its health path failed")
    assert hostname(victim) not in answers(stack, 20)  # out of rotation
    stopped = wait_until(
        lambda: (
            (t := ecs.describe_tasks(cluster=cluster, tasks=[victim["taskArn"]])["tasks"][0])["desiredStatus"]
            == "STOPPED"
            and t
        ),
        timeout=30,
        what="the unhealthy task stopped",
    )
    assert (
        stopped["stoppedReason"] == f"Task failed ELB health checks in (target-group {tg['TargetGroupArn']})"
    )
    svc = wait_completed(ecs, cluster, "web")
    now = service_tasks(ecs, cluster, "web")
    assert victim["taskArn"] not in {t["taskArn"] for t in now} and other["taskArn"] in {
        t["taskArn"] for t in now
    }
    wait_healthy(stack, tg, instance_id, now)
    assert answers(stack, 20) == {hostname(t) for t in now}
    print(f"replaced and healthy again {time.monotonic() - began:.1f} s after the health path failed")
    assert any("has stopped 1 running tasks" in e["message"] for e in svc["events"])


@needs_docker
def test_path_rules_route_to_two_services(server, ecs, elbv2, stacks, cluster, agents: Agents, unique):  # type: ignore[no-untyped-def]
    agents.spawn(server, cluster).wait_registered()
    stack, tg_a = make_stack(elbv2, stacks, unique)
    tg_b = stack.target_group("b-" + unique)
    assert stack.listener is not None
    elbv2.create_rule(
        ListenerArn=stack.listener["ListenerArn"],
        Priority=10,
        Conditions=[{"Field": "path-pattern", "Values": ["/b/*"]}],
        Actions=[{"Type": "forward", "TargetGroupArn": tg_b["TargetGroupArn"]}],
    )
    td = td_of(ecs, unique)
    web_service(ecs, cluster, "a", td, tg_a, 2)
    web_service(ecs, cluster, "b", td, tg_b, 1)
    wait_completed(ecs, cluster, "a")
    wait_completed(ecs, cluster, "b")
    a = {hostname(t) for t in service_tasks(ecs, cluster, "a")}
    b = {hostname(t) for t in service_tasks(ecs, cluster, "b")}
    assert answers(stack, 20, "/") == a
    assert answers(stack, 10, "/b/") == b


@needs_docker
def test_scale_in_drains_before_stopping(server, ecs, elbv2, stacks, cluster, agents: Agents, unique):  # type: ignore[no-untyped-def]
    instance = agents.spawn(server, cluster).wait_registered()
    stack, tg = make_stack(elbv2, stacks, unique)
    web_service(ecs, cluster, "web", td_of(ecs, unique), tg, 2)
    wait_completed(ecs, cluster, "web")
    before = {t["taskArn"]: t for t in service_tasks(ecs, cluster, "web")}
    instance_id = ec2_id(ecs, cluster, instance)
    with Load(stack) as load:
        ecs.update_service(cluster=cluster, service="web", desiredCount=1)
        asked = time.monotonic()
        # the task being stopped: DEACTIVATING, its target draining, its container still running
        leaving = wait_until(
            lambda: [t for t in service_tasks(ecs, cluster, "web", "STOPPED") if t["taskArn"] in before],
            timeout=30,
            what="a task to stop",
        )[0]
        seen: list[tuple[str, str, bool]] = []

        def observe() -> bool:
            t = ecs.describe_tasks(cluster=cluster, tasks=[leaving["taskArn"]])["tasks"][0]
            state = stack.health(tg).get((instance_id, host_port(leaving)), "gone")
            seen.append((t["lastStatus"], state, container_running(leaving)))
            return bool(t["lastStatus"] == "STOPPED")

        wait_until(observe, timeout=DRAIN + 30, interval=0.2, what="the drained task stopped")
        drained = time.monotonic() - asked
    assert ("DEACTIVATING", "draining", True) in seen, seen
    # it was stopped only after the drain: never STOPPING while its target still drained
    assert not [
        s for s in seen if s[0] in ("STOPPING", "DEPROVISIONING", "STOPPED") and s[1] == "draining"
    ], seen
    print(f"\nscale-in: stopped {drained:.1f} s after the update (deregistration delay {DRAIN} s); {load}")
    assert load.failed == 0, load
    wait_completed(ecs, cluster, "web")


@needs_docker
def test_a_container_that_dies_is_deregistered_at_once(
    server, ecs, elbv2, stacks, cluster, agents: Agents, unique
):  # type: ignore[no-untyped-def]
    instance = agents.spawn(server, cluster).wait_registered()
    stack, tg = make_stack(elbv2, stacks, unique)
    web_service(ecs, cluster, "web", td_of(ecs, unique), tg, 2)
    wait_completed(ecs, cluster, "web")
    victim = service_tasks(ecs, cluster, "web")[0]
    target = (ec2_id(ecs, cluster, instance), host_port(victim))
    states: list[str] = []
    with Load(stack) as load:
        killed = time.monotonic()
        subprocess.run(
            ["docker", "kill", victim["containers"][0]["runtimeId"]],
            check=True,
            capture_output=True,
            timeout=30,
        )

        def left() -> bool:
            states.append(stack.health(tg).get(target, "gone"))
            return states[-1] != "healthy"

        wait_until(left, timeout=30, interval=0.1, what="the dead task's target leaving")
        print(f"\ndead task deregistered {time.monotonic() - killed:.2f} s after docker kill began; {load}")
    # deregistered from the agent's report (draining), not found out by health checks (unhealthy)
    assert states[-1] in ("draining", "gone"), states
    assert load.failed == 0, load  # HAProxy retried the dead target's connections elsewhere
    wait_completed(ecs, cluster, "web")


# ---- helpers ----------------------------------------------------------------------------------------


def container_running(task: dict[str, Any]) -> bool:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", task["containers"][0]["runtimeId"]],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip() == "true"


class Load:
    """Requests on the listener in a thread, one after the other, each on a fresh connection."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = self.stack.get("/")
                if status == 200:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(f"{status} {body[:80]}")
            except OSError as e:
                self.failed += 1
                self.errors.append(repr(e))
            time.sleep(0.01)

    def __repr__(self) -> str:
        return f"{self.ok} requests answered, {self.failed} failed {self.errors[:3]}"
