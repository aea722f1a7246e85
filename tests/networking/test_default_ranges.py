"""The default VPC and subnet are configurable (``dockyard server --default-vpc-cidr`` and
``--default-subnet-cidr``) and checked at start as CreateVpc and CreateSubnet check theirs: clear of
Docker's address pools and the host's routes, the subnet inside the VPC; the server refuses to start
otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard.domain.ec2 import gateway
from dockyard.domain.task_eni import LABEL_SUBNET
from dockyard.services.ec2_store import (
    DOCKER_DEFAULT_POOLS,
    DefaultRangeError,
    Ec2Settings,
    Route,
    check_default_ranges,
    default_forbidden,
    docker_pools,
    host_routes,
    parse_routes,
    pools_of_config,
    short_id,
)
from tests.agent.conftest import needs_docker
from tests.conftest import REGION, free_port, start_server

ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
br-0123456789ab\t0000D50A\t00000000\t0001\t0\t0\t0\t00F0FFFF\t0\t0\t0
"""


def _settings(tmp_path: Path, vpc: str = "10.213.0.0/16", subnet: str = "10.213.0.0/20") -> Ec2Settings:
    table = tmp_path / "route"
    table.write_text(ROUTES)
    return Ec2Settings(default_vpc_cidr=vpc, default_subnet_cidr=subnet, route_table=str(table))


def test_routes_are_read_with_their_device() -> None:
    assert parse_routes(ROUTES) == [
        Route("172.17.0.0/16", "docker0"),
        Route("192.0.2.0/24", "eth0"),
        Route("10.213.0.0/20", "br-0123456789ab"),
    ]


def test_docker_pools_from_the_daemon_config(tmp_path: Path) -> None:
    config = {"default-address-pools": [{"base": "10.50.0.0/16", "size": 24}, {"base": "bad"}]}
    assert pools_of_config(config) == ("10.50.0.0/16",)
    assert pools_of_config({}) is None and pools_of_config([]) is None
    daemon = tmp_path / "daemon.json"
    settings = Ec2Settings(docker_config=str(daemon))
    assert docker_pools(settings) == DOCKER_DEFAULT_POOLS  # no file: Docker's built-in pools
    daemon.write_text('{"default-address-pools": [{"base": "10.50.0.0/16", "size": 24}]}')
    assert docker_pools(settings) == ("10.50.0.0/16",)
    daemon.write_text("{not json")
    assert docker_pools(settings) == DOCKER_DEFAULT_POOLS


def test_defaults_clear_of_pools_and_routes_pass(tmp_path: Path) -> None:
    s = _settings(tmp_path, "10.217.0.0/16", "10.217.32.0/20")
    check_default_ranges(s, default_forbidden(s, [], []))


@pytest.mark.parametrize(
    ("vpc", "subnet", "flag", "words"),
    [
        ("172.20.0.0/16", "172.20.0.0/20", "--default-vpc-cidr", "overlaps 172.20.0.0/14"),  # Docker's pool
        ("192.0.2.0/24", "192.0.2.0/26", "--default-vpc-cidr", "overlaps 192.0.2.0/24"),  # a host route
        ("10.0.0.0/8", "10.0.0.0/20", "--default-vpc-cidr", "/16 to /28"),
        ("10.217.0.0/16", "10.218.0.0/20", "--default-subnet-cidr", "invalid for this VPC"),
        ("10.217.0.0/16", "not-a-cidr", "--default-subnet-cidr", "not-a-cidr"),
    ],
)
def test_defaults_that_overlap_or_do_not_fit_are_refused(
    tmp_path: Path, vpc: str, subnet: str, flag: str, words: str
) -> None:
    s = _settings(tmp_path, vpc, subnet)
    with pytest.raises(DefaultRangeError) as e:
        check_default_ranges(s, default_forbidden(s, [], []))
    assert str(e.value).startswith(f"{flag} ") and words in str(e.value)


def test_the_default_subnets_own_network_is_not_a_conflict(tmp_path: Path) -> None:
    """An agent on this host made the default subnet's Docker network (route 10.213.0.0/20 on its
    bridge): that route is ours, another route inside the range is not."""
    s = _settings(tmp_path)
    with pytest.raises(DefaultRangeError):
        check_default_ranges(s, default_forbidden(s, [], []))  # br-0123456789ab unknown: refused
    check_default_ranges(s, default_forbidden(s, [], ["br-0123456789ab"]))
    check_default_ranges(s, default_forbidden(s, ["10.213.0.0/16"], []))  # the stored default VPC


def test_server_with_custom_default_ranges(tmp_path: Path) -> None:
    srv = start_server(
        tmp_path, "--default-vpc-cidr", "10.217.0.0/16", "--default-subnet-cidr", "10.217.32.0/20"
    )
    try:
        ec2 = srv.client("ec2")
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]  # type: ignore[attr-defined]
        assert [v["CidrBlock"] for v in vpcs] == ["10.217.0.0/16"]
        subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]  # type: ignore[attr-defined]
        assert [(s["CidrBlock"], s["VpcId"]) for s in subnets] == [("10.217.32.0/20", vpcs[0]["VpcId"])]
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--default-vpc-cidr", "172.20.0.0/16"], "--default-vpc-cidr 172.20.0.0/16: The CIDR"),
        (["--default-subnet-cidr", "10.99.0.0/20"], "--default-subnet-cidr 10.99.0.0/20: The CIDR"),
    ],
)
def test_server_refuses_to_start_with_an_overlapping_default(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "dockyard.cli.main", "server"),
            *("--port", str(free_port()), "--state-dir", str(tmp_path / "state")),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]


@needs_docker
def test_server_starts_beside_the_default_subnets_own_network(tmp_path: Path) -> None:
    """Agents on this host made the default subnet's Docker network (for this or another server):
    its route is the default subnet's own, so a fresh server with the same defaults starts."""
    s = Ec2Settings()
    subnet_id = short_id("subnet", "000000000000", REGION)
    name = f"dockyard-{subnet_id}"
    made = subprocess.run(["docker", "network", "inspect", name], capture_output=True).returncode != 0
    if made:
        subprocess.run(
            [
                "docker",
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                s.default_subnet_cidr,
                "--gateway",
                gateway(s.default_subnet_cidr),
                "--label",
                f"{LABEL_SUBNET}={subnet_id}",
                name,
            ],
            capture_output=True,
            timeout=30,
        )
    try:
        assert s.default_subnet_cidr in host_routes(s.route_table)
        srv = start_server(tmp_path)
        srv.stop()
    finally:
        if made:
            subprocess.run(["docker", "network", "rm", name], capture_output=True, timeout=30)
