"""Runtime-API plans and health verdicts (pure), from HAProxy's own output formats."""

from __future__ import annotations

from dockyard.domain.target_groups import HealthCheck
from dockyard.lb.model import BackendSpec, LbSpec, ServerSpec
from dockyard.lb.observe import ServerStat, judge, parse_servers_state, parse_stat
from dockyard.lb.plan import enable_batch, plan, remove_batch

CHECK = HealthCheck("HTTP", "traffic-port", "/", 5, 2, 2, 2, "200")
STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state (and 18 more columns)
3 be 1 up_1 127.0.0.1 2 0 1 1 7 15 3 3 6 0 0 0 - 1 - 0 0 - - 0
3 be 2 maint_2 127.0.0.2 0 5 1 1 0 1 0 0 14 0 0 0 - 2 - 0 0 - - 0
3 be 3 drain_3 127.0.0.3 2 8 1 1 0 15 3 3 6 0 0 0 - 3 - 0 0 - - 0
3 be 4 gone_4 127.0.0.4 2 0 1 1 0 15 3 3 6 0 0 0 - 4 - 0 0 - - 0
3 be 5 moved_5 127.0.0.5 2 0 1 1 0 15 3 3 6 0 0 0 - 5 - 0 0 - - 0
3 be 6 enabled_6 127.0.0.6 2 4 1 1 0 15 3 3 6 0 0 0 - 6 - 0 0 - - 0
"""


def spec(*servers: ServerSpec) -> LbSpec:
    return LbSpec(
        "arn",
        "lb",
        "id",
        "127.100.0.1",
        "dns",
        backends=(BackendSpec("be", "tg", "http", CHECK, servers=servers),),
    )


def s(name: str, address: str, port: int, draining: bool = False) -> ServerSpec:
    return ServerSpec(name, address, port, None, draining, "r")


def test_parse_servers_state():
    state = parse_servers_state(STATE)
    assert state[("be", "maint_2")].maint and not state[("be", "up_1")].maint
    assert state[("be", "drain_3")].drain and state[("be", "drain_3")].port == 3
    assert not state[("be", "enabled_6")].maint  # CMAINT alone: came from the config, now enabled
    assert parse_servers_state("2\n# other format\n") == {}


def test_plan_converges_every_case():
    observed = parse_servers_state(STATE)
    desired = spec(
        s("up_1", "127.0.0.1", 1),  # in service: nothing to do
        s("maint_2", "127.0.0.2", 2),  # rendered disabled: enable through checks
        s("drain_3", "127.0.0.3", 3),  # registered again while draining: ready
        s("moved_5", "127.0.0.9", 5),  # another address: remove and add
        s("enabled_6", "127.0.0.6", 6, draining=True),  # deregistered: drain
        s("new_7", "127.0.0.7", 7),  # registered: add, then enable with health down
    )
    commands = plan(desired, observed)
    assert commands == [
        remove_batch("be", "gone_4"),
        enable_batch("be", "maint_2"),
        "set server be/drain_3 state ready",
        remove_batch("be", "moved_5"),
        "add server be/moved_5 127.0.0.9:5 check inter 5s rise 2 fall 2",
        enable_batch("be", "moved_5"),
        "set server be/enabled_6 state drain",
        "add server be/new_7 127.0.0.7:7 check inter 5s rise 2 fall 2",
        enable_batch("be", "new_7"),
    ]
    assert enable_batch("be", "x") == "enable health be/x;enable server be/x;set server be/x health down"
    assert plan(spec(s("up_1", "127.0.0.1", 1)), {k: v for k, v in observed.items() if k[1] == "up_1"}) == []
    # a source port range (config.source_arg) rides on every added server, as on the server lines
    assert plan(spec(s("new_7", "127.0.0.7", 7)), {}, "127.100.0.1:1024-32767")[0] == (
        "add server be/new_7 127.0.0.7:7 check inter 5s rise 2 fall 2 source 127.100.0.1:1024-32767"
    )


def test_parse_stat_and_judge():
    text = (
        "# pxname,svname,status,check_status,check_code,chkfail,type\n"
        "fe,FRONTEND,OPEN,,,,0\n"
        "be,a,UP,L7OK,200,0,2\n"
        "be,b,DOWN,L7STS,503,4,2\n"
        "be,c,DOWN 1/2,* L4CON,,1,2\n"
        "be,BACKEND,UP,,,,1\n"
    )
    stats = parse_stat(text)
    assert set(stats) == {("be", "a"), ("be", "b"), ("be", "c")}
    assert stats[("be", "c")].check_status == "L4CON"
    assert judge(stats[("be", "a")], False, 2).state == "healthy"
    mismatch = judge(stats[("be", "b")], False, 2)
    assert (mismatch.state, mismatch.reason) == ("unhealthy", "Target.ResponseCodeMismatch") and "503" in str(
        mismatch.description
    )
    assert judge(stats[("be", "c")], False, 2).reason == "Elb.InitialHealthChecking"  # not decided yet
    assert judge(stats[("be", "c")], True, 2).reason == "Target.FailedHealthChecks"  # was up: now down
    timeout = ServerStat("be", "d", "DOWN", "L4TOUT", "", 3)
    assert judge(timeout, False, 2).reason == "Target.Timeout"
    assert judge(ServerStat("be", "e", "MAINT", "", "", 0), False, 2).state == "initial"
