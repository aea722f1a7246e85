"""Fixtures for load-balancing tests: a server with its own load-balancer network, ELBv2 clients,
backends, and helpers that create load balancers with the fastest health checks the API allows."""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, start_server, wait_until
from tests.lb.backends import Backend, get

# The lowest values ELBv2 accepts: checks every 5 s, 2 s timeout, 2 to go healthy or unhealthy.
FAST_CHECKS = {
    "HealthCheckIntervalSeconds": 5,
    "HealthCheckTimeoutSeconds": 2,
    "HealthyThresholdCount": 2,
    "UnhealthyThresholdCount": 2,
}
HEALTHY_WITHIN = 30.0  # two checks 5 s apart, the first within an interval, and slack

_networks = itertools.count(random.randrange(256))
_second = random.randrange(130, 250)


def lb_network() -> str:
    """A /24 of loopback for each server started here, picked at random so that servers of test runs
    going on at the same time (other pytest processes) do not hand out the same listen addresses."""
    return f"127.{_second}.{next(_networks) % 256}.0/24"


@pytest.fixture(scope="session")
def lb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("dockyard-lb"), "--lb-network", lb_network())
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def elbv2(lb_server: ServerProcess):  # type: ignore[no-untyped-def]
    return lb_server.client("elbv2")


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    """Start backends with ``backends.append(start_backend(id))``; all are closed after the test."""
    started: list[Backend] = []
    yield started
    for b in started:
        b.close()


def short(name: str) -> str:
    """ELBv2 names: at most 32 characters, letters, digits and hyphens, no hyphen at either end.

    Long names keep their start and get a hash of the whole name, so they stay distinct."""
    if len(name) <= 32:
        return name.strip("-")
    return f"{name[:22].strip('-')}-{zlib.crc32(name.encode()):08x}"


@dataclass
class Stack:
    """One load balancer with an HTTP listener on port 80 and its default target group."""

    client: object
    lb: dict
    tg: dict
    listener: dict
    extra: list[dict] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.lb["DNSName"]

    def target_group(self, name: str, **kwargs: object) -> dict:
        tg = self.client.create_target_group(  # type: ignore[attr-defined]
            Name=short(name),
            Protocol="HTTP",
            Port=80,
            VpcId="vpc-test",
            TargetType="ip",
            HealthCheckPath="/health",
            **{**FAST_CHECKS, **kwargs},
        )["TargetGroups"][0]
        self.extra.append(tg)
        return tg

    def register(self, tg: dict, *targets: Backend) -> None:
        self.client.register_targets(  # type: ignore[attr-defined]
            TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": b.host, "Port": b.port} for b in targets]
        )

    def health(self, tg: dict) -> dict[str, str]:
        out = self.client.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])  # type: ignore[attr-defined]
        return {
            f"{d['Target']['Id']}:{d['Target']['Port']}": d["TargetHealth"]["State"]
            for d in out["TargetHealthDescriptions"]
        }

    def wait_healthy(self, tg: dict, *targets: Backend) -> None:
        names = {f"{b.host}:{b.port}" for b in targets}
        wait_until(
            lambda: all(self.health(tg).get(n) == "healthy" for n in names),
            timeout=HEALTHY_WITHIN,
            interval=0.25,
            what=f"targets {sorted(names)} healthy",
        )

    def wait_active(self) -> None:
        def active() -> bool:
            lbs = self.client.describe_load_balancers(LoadBalancerArns=[self.lb["LoadBalancerArn"]])  # type: ignore[attr-defined]
            return lbs["LoadBalancers"][0]["State"]["Code"] == "active"

        wait_until(active, timeout=15, what="load balancer active")

    def get(self, path: str = "/", **kwargs: object) -> tuple[int, str]:
        return get(self.host, 80, path, **kwargs)  # type: ignore[arg-type]

    def delete(self) -> None:
        c = self.client
        c.delete_load_balancer(LoadBalancerArn=self.lb["LoadBalancerArn"])  # type: ignore[attr-defined]
        for tg in [self.tg, *self.extra]:
            c.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])  # type: ignore[attr-defined]


def make_stack(client: object, name: str, port: int = 80, **tg_kwargs: object) -> Stack:
    c = client
    lb = c.create_load_balancer(Name=short(name))["LoadBalancers"][0]  # type: ignore[attr-defined]
    tg = c.create_target_group(  # type: ignore[attr-defined]
        Name=short("tg-" + name),
        Protocol="HTTP",
        Port=80,
        VpcId="vpc-test",
        TargetType="ip",
        HealthCheckPath="/health",
        **{**FAST_CHECKS, **tg_kwargs},
    )["TargetGroups"][0]
    listener = c.create_listener(  # type: ignore[attr-defined]
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=port,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
    )["Listeners"][0]
    return Stack(c, lb, tg, listener)


@pytest.fixture
def stacks(elbv2) -> Iterator[list[Stack]]:  # type: ignore[no-untyped-def]
    made: list[Stack] = []
    yield made
    for s in made:
        s.delete()


def lb_directory(srv: ServerProcess, stack: Stack) -> Path:
    return srv.state_dir / "lb" / stack.lb["LoadBalancerArn"].rsplit("/", 1)[1]
