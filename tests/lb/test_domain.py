"""ELBv2 rules (pure domain), the data-plane spec, listen addresses and the hosts file."""

from __future__ import annotations

import pytest

from dockyard.domain.elb_errors import InvalidLoadBalancerAction, ValidationError
from dockyard.domain.load_balancers import (
    Action,
    Condition,
    Listener,
    LoadBalancer,
    Rule,
    check_name,
    dns_name,
    listener_arn,
    load_balancer_arn,
    parse_actions,
    parse_arn,
    parse_conditions,
    rule_arn,
    target_group_arn,
)
from dockyard.domain.target_groups import (
    HealthRecord,
    Registration,
    TargetGroup,
    apply_health_check,
    default_attributes,
    default_health_check,
    describe_health,
)
from dockyard.lb.hosts import render_hosts
from dockyard.lb.model import Snapshot, build_specs, next_deadline
from dockyard.lb.settings import pick_address

LB_ID, TG_ID, L_ID, R_ID = "0" * 15 + "1", "0" * 15 + "2", "0" * 15 + "3", "0" * 15 + "4"


def test_names_and_arns():
    assert check_name("a-b1") == "a-b1"
    for bad in ("-a", "a-", "a_b", "x" * 33, "internal-x", ""):
        with pytest.raises(ValidationError):
            check_name(bad)
    arn = rule_arn("eu-west-1", "123", "application", "web", LB_ID, L_ID, R_ID)
    parsed = parse_arn(arn, "listener-rule")
    assert (parsed.region, parsed.account, parsed.parts, parsed.lb_type) == (
        "eu-west-1",
        "123",
        ("app", "web", LB_ID, L_ID, R_ID),
        "application",
    )
    assert parse_arn(target_group_arn("r", "1", "tg", TG_ID), "targetgroup").parts == ("tg", TG_ID)
    for bad in (
        "arn:aws:ecs:r:1:cluster/x",
        load_balancer_arn("r", "1", "network", "n", LB_ID) + "/x",
        "nope",
    ):
        with pytest.raises(ValidationError):
            parse_arn(bad, "loadbalancer")
    assert dns_name("Web", "0000000a" + "0" * 8, "us-east-1", "internal", "elb.x").startswith(
        "internal-web-0000000010."
    )


def test_actions_and_conditions():
    tg = target_group_arn("r", "1", "tg", TG_ID)
    assert parse_actions(
        [{"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": tg}]}}]
    ) == (Action(tg),)
    with pytest.raises(InvalidLoadBalancerAction):
        parse_actions([{"Type": "redirect"}])
    conditions = parse_conditions(
        [
            {"Field": "path-pattern", "Values": ["/a*"]},
            {"Field": "host-header", "HostHeaderConfig": {"Values": ["x.*"]}},
        ]
    )
    assert conditions == (Condition("path-pattern", ("/a*",)), Condition("host-header", ("x.*",)))
    for bad in (
        [{"Field": "query-string", "Values": ["a"]}],
        [{"Field": "path-pattern", "Values": []}],
        [{"Field": "path-pattern", "Values": ["/a b"]}],
        [{"Field": "path-pattern", "Values": ["/" + str(i) for i in range(6)]}],
        [],
    ):
        with pytest.raises(ValidationError):
            parse_conditions(bad)


def test_health_check_rules():
    hc = apply_health_check(
        default_health_check("HTTP"), {"HealthCheckIntervalSeconds": 5, "HealthCheckTimeoutSeconds": 2}, "ip"
    )
    assert (hc.interval, hc.timeout, hc.path) == (5, 2, "/")
    tcp = apply_health_check(default_health_check("HTTP"), {"HealthCheckProtocol": "TCP"}, "ip")
    assert tcp.path is None and tcp.matcher is None
    with pytest.raises(ValidationError):
        apply_health_check(default_health_check("HTTP"), {"HealthCheckIntervalSeconds": 5}, "ip")  # timeout 5
    with pytest.raises(ValidationError):
        apply_health_check(default_health_check("TCP"), {"HealthCheckPath": "/x"}, "ip")
    assert default_attributes("network")["deregistration_delay.timeout_seconds"] == "300"


REG = Registration("127.0.0.1", 80, "127.0.0.1", 100.0, "r1")


@pytest.mark.parametrize(
    ("registration", "in_use", "record", "now", "state", "reason"),
    [
        (None, True, None, 200.0, "unused", "Target.NotRegistered"),
        (
            Registration(**{**REG.__dict__, "drain_until": 150.0}),
            True,
            None,
            200.0,
            "unused",
            "Target.NotRegistered",
        ),
        (
            Registration(**{**REG.__dict__, "drain_until": 250.0}),
            True,
            None,
            200.0,
            "draining",
            "Target.DeregistrationInProgress",
        ),
        (REG, False, None, 200.0, "unused", "Target.NotInUse"),
        (REG, True, None, 200.0, "initial", "Elb.RegistrationInProgress"),
        (REG, True, HealthRecord("old", "healthy"), 200.0, "initial", "Elb.RegistrationInProgress"),
        (REG, True, HealthRecord("r1", "initial"), 200.0, "initial", "Elb.InitialHealthChecking"),
        (REG, True, HealthRecord("r1", "healthy"), 200.0, "healthy", None),
        (
            REG,
            True,
            HealthRecord("r1", "unhealthy", "Target.Timeout", "t"),
            200.0,
            "unhealthy",
            "Target.Timeout",
        ),
    ],
)
def test_describe_health(registration, in_use, record, now, state, reason):
    health = describe_health(registration, in_use, record, now)
    assert (health.state, health.reason) == (state, reason)


def test_build_specs_from_documents():
    lb_arn = load_balancer_arn("r", "1", "application", "web", LB_ID)
    tg_arn = target_group_arn("r", "1", "tg", TG_ID)
    lst = listener_arn("r", "1", "application", "web", LB_ID, L_ID)
    lb = LoadBalancer(
        lb_arn, "web", LB_ID, "application", "internet-facing", "ipv4", "127.100.0.2", "dns", 0.0
    )
    tg = TargetGroup(
        tg_arn,
        "tg",
        TG_ID,
        "HTTP",
        80,
        "vpc",
        "ip",
        default_health_check("HTTP"),
        default_attributes("application"),
        0.0,
        {lst: lb_arn},
    )
    listener = Listener(lst, lb_arn, L_ID, 80, "HTTP", (Action(tg_arn),), R_ID)
    rule = Rule(
        rule_arn("r", "1", "application", "web", LB_ID, L_ID, R_ID),
        lst,
        R_ID,
        3,
        (Condition("path-pattern", ("/x",)),),
        (Action(tg_arn),),
    )
    regs = [
        Registration("127.0.0.8", 80, "127.0.0.8", 0.0, "a"),
        Registration("127.0.0.9", 80, "127.0.0.9", 0.0, "b", drain_until=50.0),
        Registration("127.0.0.7", 80, "127.0.0.7", 0.0, "c", drain_until=5.0),
    ]
    snap = Snapshot([lb], {tg_arn: tg}, [listener], [rule], {TG_ID: regs})
    spec = build_specs(snap, now=10.0)[lb_arn]
    assert [(f.port, f.default_backend, [r.priority for r in f.routes]) for f in spec.frontends] == [
        (80, f"tg-tg-{TG_ID}", [3])
    ]
    assert [(s.name, s.draining) for s in spec.backends[0].servers] == [
        ("127.0.0.8_80", False),
        ("127.0.0.9_80", True),
    ]
    assert spec.structure().backends[0].servers == ()
    assert next_deadline(regs, 10.0) == 50.0


def test_pick_address_and_hosts_file():
    assert pick_address("127.100.0.0/30", set(), "x") in {"127.100.0.1", "127.100.0.2"}
    assert pick_address("127.100.0.0/30", {"127.100.0.1", "127.100.0.2"}, "x") is None
    text = "127.0.0.1 localhost\n10.0.0.1 a # dockyard-lb owner=7\n10.0.0.2 b # dockyard-lb owner=8\n"
    out = render_hosts(text, {"web.elb": "127.100.0.3"}, owner=7, alive=lambda pid: pid != 8)
    assert out == "127.0.0.1 localhost\n127.100.0.3\tweb.elb\t# dockyard-lb owner=7\n"
    assert render_hosts(out, {}, owner=7) == "127.0.0.1 localhost\n"
