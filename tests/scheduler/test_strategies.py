"""Table tests for strategies (scorers), constraints (filters) and their wire validation."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from dockyard.domain.errors import InvalidParameter
from dockyard.scheduler import (
    RUN_TASK_DEFAULT,
    SERVICE_DEFAULT,
    PlacementConstraint,
    PlacementRequest,
    PlacementStrategy,
    Snapshot,
    TaskAsk,
    parse_constraints,
    parse_strategies,
    place,
)
from dockyard.scheduler.filters import DistinctInstanceFilter, MemberOfFilter
from dockyard.scheduler.model import DISTINCT_INSTANCE_UNSATISFIED, MEMBER_OF_UNSATISFIED
from dockyard.scheduler.scorers import MAX_PASSED
from tests.scheduler.factories import R, inst

BINPACK_MEMORY = PlacementStrategy("binpack", "memory")
BINPACK_CPU = PlacementStrategy("binpack", "cpu")
SPREAD_INSTANCE = PlacementStrategy("spread", "instanceId")
SPREAD_AZ = PlacementStrategy("spread", "attribute:ecs.availability-zone")
RANDOM = PlacementStrategy("random")
GROUP = "family:web"


def zone(name: str, az: str | None, **kw):  # type: ignore[no-untyped-def]
    attributes = {"ecs.os-type": "linux"} | ({"ecs.availability-zone": az} if az else {})
    return inst(name, attributes=attributes, **kw)


def chosen(instances, *asks, strategy=(), constraints=(), seed=0, **snapshot):  # type: ignore[no-untyped-def]
    request = PlacementRequest(tuple(asks), GROUP, tuple(strategy), tuple(constraints))
    result = place(request, Snapshot(instances, **snapshot), random.Random(seed))
    return [p.instance_id for p in result.placements], result


# ---- strategies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("need", "expected"),
    [
        (R(0, 200), ["a"]),  # the fullest that fits
        (R(0, 400), ["b"]),  # a is too full
        (R(0, 900), ["c"]),
        (R(0, 200, frozenset({8080})), ["b"]),  # a has the port taken: the next fullest
    ],
)
def test_binpack_memory_takes_the_least_remaining_memory_that_fits(need, expected):  # type: ignore[no-untyped-def]
    instances = [
        inst("c", remaining=R(1024, 1000)),
        inst("a", remaining=R(1024, 300, frozenset({22, 8080}))),
        inst("b", remaining=R(1024, 500)),
    ]
    assert chosen(instances, TaskAsk(need), strategy=[BINPACK_MEMORY])[0] == expected


def test_binpack_cpu_fills_one_instance_before_the_next_and_breaks_ties_at_random():
    instances = [inst(n, cpu=1024, memory=4096) for n in "abcd"]
    placed, _ = chosen(instances, *[TaskAsk(R(256, 1))] * 8, strategy=[BINPACK_CPU], seed=3)
    assert len(set(placed[:4])) == 1 and len(set(placed[4:])) == 1 and placed[0] != placed[4]
    firsts = {chosen(instances, TaskAsk(R(256, 1)), strategy=[BINPACK_CPU], seed=s)[0][0] for s in range(40)}
    assert firsts == set("abcd")  # equals are shuffled: concurrent placers spread out


def test_spread_instance_id_goes_where_the_group_runs_least():
    instances = [
        inst("a", groups={GROUP: 2}),
        inst("b"),
        inst("c", groups={GROUP: 1, "other": 5}),
    ]
    placed, _ = chosen(instances, *[TaskAsk(R(1, 1))] * 6, strategy=[SPREAD_INSTANCE])
    assert placed[0] == "b"
    counts = Counter({"a": 2, "c": 1}) + Counter(placed)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_spread_host_is_instance_id():
    assert parse_strategies([{"type": "spread", "field": "host"}]) == (SPREAD_INSTANCE,)


def test_spread_attribute_balances_values_across_feasible_values_only():
    instances = [
        zone("a1", "az-a", groups={GROUP: 3}),
        zone("a2", "az-a"),
        zone("b1", "az-b", groups={GROUP: 1}),
        zone("c1", "az-c", remaining=R(0, 0)),  # az-c has no room: not a feasible value
        zone("x", None, groups={GROUP: 9}),  # no zone at all: its own value, heavily used
    ]
    placed, _ = chosen(instances, *[TaskAsk(R(1, 1))] * 4, strategy=[SPREAD_AZ])
    # az-b (1) first, then az-b again (2) vs az-a (3): b, b, then a and b alternate
    per_zone = Counter({"az-a": 3, "az-b": 1})
    for name in placed:
        per_zone[{"a1": "az-a", "a2": "az-a", "b1": "az-b"}[name]] += 1
    assert placed[:2] == ["b1", "b1"] and per_zone == Counter({"az-a": 4, "az-b": 4})


def test_chained_strategies_break_each_others_ties():
    instances = [
        zone("a-full", "az-a", remaining=R(1024, 200)),
        zone("a-empty", "az-a"),
        zone("b-full", "az-b", remaining=R(1024, 100), groups={GROUP: 1}),
        zone("b-empty", "az-b"),
    ]
    placed, _ = chosen(instances, TaskAsk(R(1, 50)), strategy=[SPREAD_AZ, BINPACK_MEMORY])
    assert placed == ["a-full"]  # az-a runs the group least; inside it, the fullest
    placed, _ = chosen(instances, TaskAsk(R(1, 150)), strategy=[BINPACK_MEMORY, SPREAD_AZ])
    assert placed == ["a-full"]  # b-full has too little memory


def test_random_picks_among_all_feasible_and_ends_the_chain():
    instances = [inst("a"), inst("b"), inst("c", remaining=R(0, 0))]
    seen = {
        chosen(instances, TaskAsk(R(1, 1)), strategy=[RANDOM, BINPACK_MEMORY], seed=s)[0][0]
        for s in range(30)
    }
    assert seen == {"a", "b"}


def test_defaults_follow_ecs():
    assert RUN_TASK_DEFAULT == (RANDOM,)
    assert SERVICE_DEFAULT == (SPREAD_AZ,)


def test_busy_instances_come_last_among_equals_only():
    instances = [inst("a"), inst("b")]
    for seed in range(10):
        assert chosen(instances, TaskAsk(R(1, 1)), seed=seed, busy={"arn:ci/a"})[0] == ["b"]
    assert chosen([inst("a"), inst("b", remaining=R(0, 0))], TaskAsk(R(1, 1)), busy={"arn:ci/a"})[0] == ["a"]
    fuller = [inst("a", remaining=R(1024, 100)), inst("b")]
    assert chosen(fuller, TaskAsk(R(1, 1)), strategy=[BINPACK_MEMORY], busy={"arn:ci/a"})[0] == ["a"]


def test_busy_is_any_container_and_only_orders_equals_when_nearly_everything_is_busy():
    class Busy:  # e.g. the keys of a dict kept by the caller: only ``in`` is ever used
        def __init__(self, names: set[str]) -> None:
            self.names = names

        def __contains__(self, arn: object) -> bool:
            return isinstance(arn, str) and arn.rsplit("/", 1)[1] in self.names

    few = [inst(f"i{n}") for n in range(MAX_PASSED // 2)]
    busy = Busy({f"i{n}" for n in range(1, len(few))})
    for seed in range(10):  # fewer busy ones than pick passes over: the free one, always
        assert chosen(few, TaskAsk(R(1, 1)), seed=seed, busy=busy)[0] == ["i0"]
    many = [inst(f"i{n}") for n in range(4 * MAX_PASSED)]
    everything_but_one = Busy({f"i{n}" for n in range(1, len(many))})
    full = [inst(f"i{n}", remaining=R(0, 0) if n else R(1024, 1024)) for n in range(4 * MAX_PASSED)]
    for seed in range(10):  # still placed (pick stops passing over busy ones after MAX_PASSED)
        assert len(chosen(many, TaskAsk(R(1, 1)), seed=seed, busy=everything_but_one)[0]) == 1
        assert chosen(full, TaskAsk(R(1, 1)), seed=seed, busy=Busy({"i0"}))[0] == ["i0"]


def test_overrides_win_over_the_index():
    instances = [inst("a"), inst("b")]
    fresher = inst("a", remaining=R(0, 0))
    placed, _ = chosen(instances, *[TaskAsk(R(1, 1))] * 3, overrides={"arn:ci/a": fresher})
    assert placed == ["b", "b", "b"]


# ---- constraints ------------------------------------------------------------------------------------


def test_distinct_instance_never_co_locates_a_group():
    instances = [inst("a", groups={GROUP: 1}), inst("b"), inst("c")]
    distinct = [PlacementConstraint("distinctInstance")]
    placed, result = chosen(instances, *[TaskAsk(R(1, 1))] * 3, constraints=distinct)
    assert sorted(placed) == ["b", "c"] and result.unplaced == (2,)
    assert {(f.arn, f.reason) for f in result.failures} == {
        (f"arn:ci/{n}", DISTINCT_INSTANCE_UNSATISFIED) for n in "abc"
    }


def test_member_of_restricts_the_candidates_and_resources_are_reported_first():
    instances = [
        inst("t2", attributes={"ecs.instance-type": "t2.small"}),
        inst("g2", attributes={"ecs.instance-type": "g2.2xlarge"}),
        inst("g2-full", attributes={"ecs.instance-type": "g2.8xlarge"}, remaining=R(0, 0)),
    ]
    gpu = [PlacementConstraint("memberOf", "attribute:ecs.instance-type =~ g2.*")]
    placed, result = chosen(instances, *[TaskAsk(R(600, 1))] * 2, constraints=gpu)
    assert placed == ["g2"]
    assert {(f.arn, f.reason) for f in result.failures} == {
        ("arn:ci/t2", MEMBER_OF_UNSATISFIED),
        ("arn:ci/g2", "RESOURCE:CPU"),
        ("arn:ci/g2-full", "RESOURCE:CPU"),
    }


def test_constraint_filters_say_why():
    ask = TaskAsk(R(1, 1))
    assert "already runs a task of group 'g'" in (
        DistinctInstanceFilter("g").reject(inst("x", groups={"g": 1}), R(), ask) or ""
    )
    assert DistinctInstanceFilter("g").reject(inst("x", groups={"g": 0}), R(), ask) is None
    member = MemberOfFilter("attribute:stack == prod")
    assert "does not match 'attribute:stack == prod'" in (member.reject(inst("x"), R(), ask) or "")


def test_start_task_ignores_strategies_and_pins():
    instances = [inst("a"), inst("b", remaining=R(1024, 10))]
    placed, _ = chosen(instances, TaskAsk(R(1, 1), instance="arn:ci/a"), strategy=[BINPACK_MEMORY])
    assert placed == ["a"]


# ---- wire validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ([], ()),
        ([{"type": "binpack", "field": "MEMORY"}], (BINPACK_MEMORY,)),
        ([{"type": "binpack", "field": "cpu"}], (BINPACK_CPU,)),
        ([{"type": "spread", "field": "InstanceId"}], (SPREAD_INSTANCE,)),
        ([{"type": "spread", "field": "attribute:ecs.availability-zone"}], (SPREAD_AZ,)),
        ([{"type": "random", "field": "ignored"}], (RANDOM,)),
    ],
)
def test_strategies_parse(wire, expected):  # type: ignore[no-untyped-def]
    assert parse_strategies(wire) == expected


@pytest.mark.parametrize(
    ("wire", "words"),
    [
        ([{"type": "random"}] * 6, "at most 5"),
        (
            [{"type": "binpack", "field": "disk"}],
            "placementStrategy[0]: binpack needs the field cpu or memory",
        ),
        ([{"type": "binpack"}], "binpack needs"),
        ([{"type": "random"}, {"type": "spread"}], "placementStrategy[1]: spread needs"),
        ([{"type": "spread", "field": "attribute:"}], "spread needs"),
        ([{"type": "pack"}], "unknown placement strategy type 'pack'"),
    ],
)
def test_bad_strategies_are_refused(wire, words):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidParameter) as e:
        parse_strategies(wire)
    assert words in e.value.message


def test_constraints_merge_the_call_and_the_task_definition():
    merged = parse_constraints(
        [{"type": "distinctInstance"}], [{"type": "memberOf", "expression": "attribute:a exists"}]
    )
    assert merged == (
        PlacementConstraint("distinctInstance"),
        PlacementConstraint("memberOf", "attribute:a exists"),
    )


@pytest.mark.parametrize(
    ("call", "definition", "words"),
    [
        ([{"type": "distinctInstance", "expression": "attribute:a exists"}], [], "takes no expression"),
        ([{"type": "memberOf"}], [], "placementConstraints[0]: a memberOf constraint needs an expression"),
        ([{"type": "memberOf", "expression": " "}], [], "needs an expression"),
        ([{"type": "near"}], [], "unknown placement constraint type 'near'"),
        (
            [],
            [{"type": "memberOf", "expression": "attribute:a =="}],
            "taskDefinition.placementConstraints[0]: Invalid cluster query expression at position 15",
        ),
        ([{"type": "distinctInstance"}] * 6, [{"type": "memberOf", "expression": "a"}] * 5, "at most 10"),
    ],
)
def test_bad_constraints_are_refused(call, definition, words):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidParameter) as e:
        parse_constraints(call, definition)
    assert words in e.value.message


def test_spread_ranks_fresher_views_by_their_own_counts():
    """Instances whose snapshot view differs from the index (dirty) are ranked by that view."""
    instances = [inst(n, groups={GROUP: 1}) for n in "abc"]
    overrides = {
        "arn:ci/a": inst("a", groups={GROUP: 0}, remaining=R(0, 0)),  # least used, but full
        "arn:ci/b": inst("b", groups={GROUP: 0}),
    }
    for seed in range(10):
        assert chosen(
            instances, TaskAsk(R(1, 1)), strategy=[SPREAD_INSTANCE], seed=seed, overrides=overrides
        )[0] == ["b"]
    fuller = {"arn:ci/c": inst("c", remaining=R(1024, 5)), "arn:ci/a": inst("a", remaining=R(1024, 1))}
    assert chosen(instances, TaskAsk(R(1, 4)), strategy=[BINPACK_MEMORY], overrides=fuller)[0] == ["c"]
