"""Allocation records: what a record derives from its reservations (reserved total, group counts,
encoded document) is the same whether computed afresh or carried over by ``with_tasks`` and
``without`` from the record before."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.domain.container_instances import Allocation, InstanceStatus
from dockyard.domain.resources import Resources, total

IDS = [f"t{i}" for i in range(8)]
GROUPS = ["g1", "g2", "service:web"]

reservations = st.builds(
    Resources,
    st.integers(0, 512),
    st.integers(0, 512),
    st.frozensets(st.integers(80, 83), max_size=2),
    st.frozensets(st.integers(53, 54), max_size=1),
    st.integers(0, 1),
)
adds = st.dictionaries(st.sampled_from(IDS), reservations, max_size=3).flatmap(
    lambda placed: st.tuples(
        st.just(placed),
        st.one_of(
            st.none(),
            st.dictionaries(st.sampled_from(sorted(placed) or IDS), st.sampled_from(GROUPS), max_size=3),
        ),
    )
)
changes = st.lists(st.one_of(adds, st.lists(st.sampled_from(IDS), max_size=3)), max_size=12)


def fresh(a: Allocation) -> Allocation:
    """The same record as one decoded from the store (nothing derived yet)."""
    return Allocation(a.status, dict(a.tasks), dict(a.groups))


def expected_counts(a: Allocation) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task_id, group in a.groups.items():
        if task_id in a.tasks:
            counts[group] = counts.get(group, 0) + 1
    return counts


@settings(max_examples=300, deadline=None)
@given(changes, st.booleans())
def test_derived_values_carried_over_equal_those_computed_afresh(steps, warm):  # type: ignore[no-untyped-def]
    alloc = Allocation(InstanceStatus.ACTIVE)
    for step in steps:
        if warm:  # derive everything, so the next step carries it over
            alloc.reserved(), alloc.group_counts(), alloc.to_json()
        if isinstance(step, tuple):
            placed, groups = step
            alloc = alloc.with_tasks(placed, groups)
        else:
            alloc = alloc.without(step)
        assert alloc.reserved() == total(alloc.tasks.values()) == fresh(alloc).reserved()
        assert alloc.group_counts() == expected_counts(alloc) == fresh(alloc).group_counts()
        assert alloc.to_json() == orjson.dumps(alloc.to_document())
        assert Allocation.from_document(orjson.loads(alloc.to_json())) == alloc


def test_group_counts_is_a_copy():
    alloc = Allocation().with_tasks({"a": Resources(1, 1)}, {"a": "g"})
    alloc.group_counts()["g"] = 99
    assert alloc.group_counts() == {"g": 1}


def test_document_bytes_for_every_status_and_a_reservation_shared_by_tasks():
    """``to_json`` reuses the encoded reservation of the task added before when the next one shares
    it (one RunTask's tasks do): the bytes stay ``orjson.dumps(to_document())`` whatever the order."""
    shared = Resources(256, 512, frozenset({80}), frozenset(), 1)
    for status in InstanceStatus:
        alloc = Allocation(status)
        for placed in (
            {"a": shared},
            {"b": shared, "c": Resources(1, 2)},
            {"d": shared},
            {"e": Resources(1, 2)},
        ):
            alloc.to_json()  # warm: the next record's members are carried over
            alloc = alloc.with_tasks(placed, {k: "service:web" for k in placed})
            assert alloc.to_json() == orjson.dumps(alloc.to_document())
            assert fresh(alloc).to_json() == alloc.to_json()
        assert alloc.without(["b"]).to_json() == orjson.dumps(alloc.without(["b"]).to_document())
