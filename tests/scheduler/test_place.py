"""Table tests for the filter chain and first-fit placement (pure: no store, seeded rng)."""

from __future__ import annotations

import random

import pytest

from dockyard.domain.resources import Resources
from dockyard.scheduler import InstanceView, PlacementRequest, Snapshot, TaskAsk, place
from dockyard.scheduler.filters import (
    AgentFilter,
    AttributeFilter,
    StatusFilter,
    chain,
    first_rejection,
)

R = Resources


def inst(name: str, cpu: int = 1024, memory: int = 1024, **kw) -> InstanceView:  # type: ignore[no-untyped-def]
    registered = R(cpu, memory, frozenset({22}))
    fields = {
        "arn": f"arn:ci/{name}",
        "id": name,
        "status": "ACTIVE",
        "agent_connected": True,
        "registered": registered,
        "remaining": registered,
        "attributes": {"ecs.os-type": "linux"},
    }
    fields.update(kw)
    return InstanceView(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("instance", "ask", "reason"),
    [
        (inst("a"), TaskAsk(R(100, 100)), None),
        (inst("a", status="DRAINING"), TaskAsk(R(100, 100)), "INACTIVE"),
        (inst("a", agent_connected=False), TaskAsk(R(100, 100)), "AGENT"),
        (inst("a"), TaskAsk(R(100, 100), ("ecs.capability.x",)), "ATTRIBUTE"),
        (inst("a"), TaskAsk(R(2048, 100)), "RESOURCE:CPU"),
        (inst("a"), TaskAsk(R(100, 2048)), "RESOURCE:MEMORY"),
        (inst("a"), TaskAsk(R(1, 1, frozenset({22}))), "RESOURCE:PORTS"),
        (
            inst("a", remaining=R(1024, 1024, ports_udp=frozenset({53}))),
            TaskAsk(R(1, 1, ports_udp=frozenset({53}))),
            "RESOURCE:PORTS_UDP",
        ),
        # the cheapest failing check is the one reported
        (inst("a", status="DRAINING", agent_connected=False), TaskAsk(R(9999, 9999)), "INACTIVE"),
        (inst("a", agent_connected=False), TaskAsk(R(9999, 9999)), "AGENT"),
    ],
)
def test_filter_chain_reports_the_first_rejection(instance, ask, reason):
    rejection = first_rejection(chain(), instance, instance.remaining, ask)
    assert (rejection.reason if rejection else None) == reason
    if rejection:
        assert rejection.detail and rejection.instance_arn == instance.arn


def test_single_filters_say_why():
    ask = TaskAsk(R(1, 1), ("a", "b"))
    assert (
        StatusFilter().reject(inst("x", status="INACTIVE"), R(), ask) == "the container instance is INACTIVE"
    )
    assert "not connected" in (AgentFilter().reject(inst("x", agent_connected=False), R(), ask) or "")
    assert (
        AttributeFilter().reject(inst("x", attributes={"a": None}), R(), ask)
        == "missing required attributes: b"
    )


def test_first_fit_fills_instances_and_reports_failures_per_instance():
    snapshot = Snapshot((inst("a", memory=300), inst("b", memory=300)))
    result = place(PlacementRequest((TaskAsk(R(0, 128)),) * 5), snapshot, random.Random(1))
    assert len(result.placements) == 4 and result.unplaced == (4,)
    per_instance = {p.instance_id: 0 for p in result.placements}
    for p in result.placements:
        per_instance[p.instance_id] += 1
    assert per_instance == {"a": 2, "b": 2}
    assert sorted((f.arn, f.reason) for f in result.failures) == [
        ("arn:ci/a", "RESOURCE:MEMORY"),
        ("arn:ci/b", "RESOURCE:MEMORY"),
    ]


def test_static_ports_are_never_given_twice_in_one_plan():
    snapshot = Snapshot((inst("a"), inst("b")))
    ask = TaskAsk(R(1, 1, frozenset({8080})))
    result = place(PlacementRequest((ask, ask, ask)), snapshot, random.Random(7))
    assert sorted(p.instance_id for p in result.placements) == ["a", "b"]
    assert {f.reason for f in result.failures} == {"RESOURCE:PORTS"}


def test_pinned_tasks_go_only_where_asked():
    snapshot = Snapshot((inst("a"), inst("b", status="INACTIVE")))
    asks = (
        TaskAsk(R(1, 1), instance="arn:ci/a"),
        TaskAsk(R(1, 1), instance="arn:ci/b"),
        TaskAsk(R(1, 1), instance="arn:ci/zz"),
    )
    result = place(PlacementRequest(asks), snapshot, random.Random(0))
    assert [(p.task, p.instance_id) for p in result.placements] == [(0, "a")]
    assert sorted((f.arn, f.reason) for f in result.failures) == [
        ("arn:ci/b", "INACTIVE"),
        ("arn:ci/zz", "MISSING"),
    ]


def test_no_failures_when_everything_is_placed_and_rng_decides_the_order():
    snapshot = Snapshot(tuple(inst(n) for n in "abcdef"))
    firsts = {
        place(PlacementRequest((TaskAsk(R(1, 1)),)), snapshot, random.Random(seed)).placements[0].instance_id
        for seed in range(30)
    }
    assert len(firsts) > 1  # concurrent placers spread out
    result = place(PlacementRequest((TaskAsk(R(1, 1)),)), snapshot, random.Random(3))
    assert result.failures == () and result.unplaced == ()


@pytest.mark.parametrize("seed", range(20))
def test_placements_never_exceed_what_remains(seed):
    rng = random.Random(seed)
    instances = tuple(
        inst(str(i), cpu=rng.randrange(0, 2048), memory=rng.randrange(0, 2048)) for i in range(5)
    )
    asks = tuple(
        TaskAsk(R(rng.randrange(0, 512), rng.randrange(1, 512), frozenset({rng.randrange(80, 85)})))
        for _ in range(20)
    )
    result = place(PlacementRequest(asks), Snapshot(instances), rng)
    for i in instances:
        mine = [asks[p.task].needs for p in result.placements if p.instance_id == i.id]
        assert sum(n.cpu for n in mine) <= i.remaining.cpu
        assert sum(n.memory for n in mine) <= i.remaining.memory
        ports = [port for n in mine for port in n.ports]
        assert len(ports) == len(set(ports))
    assert len(result.placements) + len(result.unplaced) == len(asks)
