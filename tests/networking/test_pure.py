"""Pure parts of awsvpc: the nft ruleset, EC2's form decoding, rule parsing, address choice."""

from __future__ import annotations

import random
from urllib.parse import urlencode

import pytest

from dockyard.agent.networking.firewall import ruleset, task_rules
from dockyard.api import validation
from dockyard.api.ec2_protocol import decode, render_error
from dockyard.api.query_protocol import parse_form
from dockyard.domain.ec2 import (
    InsufficientFreeAddresses,
    InvalidVpcRange,
    MissingParameter,
    check_vpc_range,
    mac_address,
    parse_permissions,
    pick_addresses,
)


def test_ruleset_admits_lo_replies_and_rules_only() -> None:
    rules = [
        {"protocol": "tcp", "fromPort": 80, "toPort": 80, "sources": ["10.213.0.9/32"]},
        {"protocol": "udp", "fromPort": 53, "toPort": 54, "sources": ["10.0.0.0/8"]},
        {"protocol": "-1", "fromPort": 0, "toPort": 65535, "sources": []},  # an empty source group
    ]
    text = ruleset(rules)
    assert text.startswith("table inet dockyard {}\ndelete table inet dockyard\n")  # atomic replace
    assert (
        "policy drop;" in text and 'iif "lo" accept' in text and "ct state established,related accept" in text
    )
    assert "ip saddr { 10.213.0.9/32 } tcp dport 80 accept" in text
    assert "ip saddr { 10.0.0.0/8 } udp dport 53-54 accept" in text
    assert text.count("accept") == 5  # lo, replies, icmp errors, two rules: an empty group admits nobody
    assert task_rules(["a"], {"a": rules[:1], "b": rules[1:]}) == rules[:1]


def test_ec2_form_decoding_uses_flattened_lists() -> None:
    body = urlencode(
        {
            "GroupId": "sg-1",
            "IpPermissions.1.IpProtocol": "tcp",
            "IpPermissions.1.FromPort": "80",
            "IpPermissions.1.ToPort": "80",
            "IpPermissions.1.IpRanges.1.CidrIp": "10.0.0.0/8",
            "IpPermissions.1.Groups.1.GroupId": "sg-2",
        }
    )
    op = validation.service_model("ec2").operation_model("AuthorizeSecurityGroupIngress")
    got = decode(op.input_shape, parse_form(body))
    assert got["GroupId"] == "sg-1"
    perm = got["IpPermissions"][0]
    assert perm["FromPort"] == 80 and perm["IpRanges"] == [{"CidrIp": "10.0.0.0/8"}]
    assert perm["UserIdGroupPairs"] == [{"GroupId": "sg-2"}]
    filters = validation.service_model("ec2").operation_model("DescribeVpcs")
    decoded = decode(
        filters.input_shape, parse_form("Filter.1.Name=is-default&Filter.1.Value.1=true&VpcId.1=v")
    )
    assert decoded == {"Filters": [{"Name": "is-default", "Values": ["true"]}], "VpcIds": ["v"]}


def test_error_document_is_ec2s() -> None:
    body = render_error("InvalidGroup.NotFound", "no such group", "req-1").decode()
    assert "<Response><Errors><Error><Code>InvalidGroup.NotFound</Code>" in body
    assert "<RequestID>req-1</RequestID>" in body


def test_rules_ranges_and_addresses() -> None:
    with pytest.raises(MissingParameter):
        parse_permissions([{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80}])
    rules = parse_permissions([{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.1.0.0/16"}]}])
    assert (rules[0].protocol, rules[0].from_port, rules[0].to_port) == ("-1", 0, 65535)
    with pytest.raises(InvalidVpcRange):
        check_vpc_range("172.17.0.0/16", ["172.17.0.0/16"])
    with pytest.raises(InvalidVpcRange):
        check_vpc_range("10.0.0.0/8", [])  # larger than /16
    picked = pick_addresses("10.9.0.0/28", ["10.9.0.4"], 10, random.Random(1))
    assert len(set(picked)) == 10 and "10.9.0.4" not in picked
    assert all(a not in ("10.9.0.0", "10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.15") for a in picked)
    with pytest.raises(InsufficientFreeAddresses):
        pick_addresses("10.9.0.0/28", [], 12, random.Random(1))
    assert mac_address("10.213.0.7") == "02:42:0a:d5:00:07"


def test_load_balancer_subnet_address_nat_and_bridge() -> None:
    from dockyard.lb.vpc import bridge_name, nat_script

    assert bridge_name({"Id": "0123456789abcdef", "Options": {}}) == "br-0123456789ab"
    assert bridge_name({"Id": "x", "Options": {"com.docker.network.bridge.name": "dy0"}}) == "dy0"
    script = nat_script("t", {"10.0.0.9": "br-1"})
    assert "priority 99" in script and 'ip saddr 10.0.0.9 oifname "br-1" snat to 10.0.0.9' in script
    assert nat_script("t", {}) == "table ip t {}\ndelete table ip t\n"  # nothing placed: no table


def test_load_balancer_source_is_its_subnet_address_when_placed() -> None:
    from dataclasses import replace

    from dockyard.domain.target_groups import default_health_check
    from dockyard.lb.config import Paths, render
    from dockyard.lb.model import BackendSpec, LbSpec

    backend = BackendSpec("b", "tg", "http", default_health_check("HTTP"))
    spec = LbSpec("arn", "n", "id", "127.100.0.5", "dns", backends=(backend,))
    assert "    source 127.100.0.5\n" in render(spec, Paths("s", "f"))
    assert "    source 10.213.0.9\n" in render(replace(spec, source="10.213.0.9"), Paths("s", "f"))


def test_a_warm_pause_containers_owner_is_dead_only_on_this_boot_and_pid_namespace() -> None:
    import subprocess

    from dockyard.agent.networking.pause import owner_gone, process_id

    me = process_id()
    child = subprocess.Popen(["sleep", "60"])
    try:
        owner = process_id(child.pid)
        assert not owner_gone(owner, me) and not owner_gone(me, me)
    finally:
        child.kill()
        child.wait()
    assert owner_gone(owner, me)
    boot, namespace, pid, started = owner.split("/")
    assert not owner_gone(f"other-boot/{namespace}/{pid}/{started}", me)
    assert not owner_gone(f"{boot}/pid:[1]/{pid}/{started}", me)
    assert not owner_gone("", me) and not owner_gone("a/b/c/d", me)
    # the pid reused by a later process is not the owner
    assert owner_gone(f"{boot}/{namespace}/{me.split('/')[2]}/1", me)
