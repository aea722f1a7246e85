"""Property tests: what placement promises whatever the cluster looks like.

- placements never exceed what remains (cpu, memory, host ports);
- ``spread`` always takes a value that runs the group least among the values with room, so a
  balanced group stays within max - min <= 1;
- ``distinctInstance`` never co-locates two tasks of the group;
- ``binpack`` takes the fullest instance that fits;
- the index's tiered search picks exactly what a full scan ranking every feasible instance by the
  whole strategy chain would pick (the index saves work, never changes the answer);
- the index kept current by ``put``/``remove`` equals one built from scratch.
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.domain.resources import Resources
from dockyard.scheduler import (
    InstanceIndex,
    InstanceView,
    PlacementConstraint,
    PlacementRequest,
    PlacementStrategy,
    Snapshot,
    TaskAsk,
    place,
)
from dockyard.scheduler.filters import chain, first_rejection
from dockyard.scheduler.index import attribute_value
from tests.scheduler.factories import R, inst

GROUP = "g"
ZONES = ["az-a", "az-b", "az-c", None]
CHOICES = [
    PlacementStrategy("binpack", "cpu"),
    PlacementStrategy("binpack", "memory"),
    PlacementStrategy("spread", "instanceId"),
    PlacementStrategy("spread", "attribute:zone"),
    PlacementStrategy("random"),
]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def instances(draw: st.DrawFn, min_size: int = 1, max_size: int = 12) -> list[InstanceView]:
    n = draw(st.integers(min_size, max_size))
    out = []
    for i in range(n):
        cpu = draw(st.integers(0, 2048))
        memory = draw(st.integers(0, 2048))
        ports = frozenset(draw(st.sets(st.integers(80, 83), max_size=2)))
        zone = draw(st.sampled_from(ZONES))
        out.append(
            inst(
                f"i{i:02d}",
                cpu=2048,
                memory=2048,
                remaining=R(cpu, memory, ports),
                status=draw(st.sampled_from(["ACTIVE"] * 6 + ["DRAINING"])),
                agent_connected=draw(st.booleans()) or draw(st.booleans()),
                attributes={"zone": zone} if zone else {},
                groups={GROUP: draw(st.integers(0, 3))},
            )
        )
    return out


asks = st.lists(
    st.builds(
        lambda cpu, mem, port: TaskAsk(R(cpu, mem, frozenset({port}) if port else frozenset())),
        st.integers(0, 600),
        st.integers(1, 600),
        st.one_of(st.none(), st.integers(80, 83)),
    ),
    min_size=1,
    max_size=10,
)
chains = st.lists(st.sampled_from(CHOICES), max_size=3)


@FAST
@given(instances(), asks, chains, st.booleans(), st.integers(0, 2**32))
def test_placements_never_exceed_what_remains(views, tasks, strategy, distinct, seed):  # type: ignore[no-untyped-def]
    constraints = (PlacementConstraint("distinctInstance"),) if distinct else ()
    request = PlacementRequest(tuple(tasks), GROUP, tuple(strategy), constraints)
    result = place(request, Snapshot(views), random.Random(seed))
    assert len(result.placements) + len(result.unplaced) == len(tasks)
    by_id = {v.id: v for v in views}
    for view in views:
        mine = [tasks[p.task].needs for p in result.placements if p.instance_id == view.id]
        assert sum(n.cpu for n in mine) <= view.remaining.cpu
        assert sum(n.memory for n in mine) <= view.remaining.memory
        ports = [port for n in mine for port in n.ports]
        assert len(ports) == len(set(ports)) and not set(ports) & view.remaining.ports
        if mine:
            assert by_id[view.id].status == "ACTIVE" and by_id[view.id].agent_connected
        if distinct:
            assert len(mine) <= (0 if view.groups.get(GROUP) else 1)  # never co-located
    if result.unplaced:
        assert result.failures


@FAST
@given(
    instances(min_size=2),
    st.integers(1, 10),
    st.sampled_from(["instanceId", "attribute:zone"]),
    st.integers(0, 2**32),
)
def test_spread_always_takes_a_least_used_value_with_room(views, n, field, seed):  # type: ignore[no-untyped-def]
    ask = TaskAsk(R(50, 50))
    snapshot = Snapshot(views)
    rng = random.Random(seed)
    strategy = (PlacementStrategy("spread", field),)
    for _ in range(n):  # one task per request, applying each placement as a commit would
        current = snapshot.instances

        def value(v: InstanceView) -> object:
            return v.arn if field == "instanceId" else attribute_value(v, "zone")

        counts: Counter[object] = Counter()
        for v in current:
            if v.schedulable:
                counts[value(v)] += v.groups.get(GROUP, 0)
        checks = chain()
        feasible = [v for v in current if first_rejection(checks, v, v.remaining, ask) is None]
        result = place(PlacementRequest((ask,), GROUP, strategy), snapshot, rng)
        if not feasible:
            assert result.unplaced == (0,)
            break
        [p] = result.placements
        picked = next(v for v in current if v.arn == p.instance_arn)
        assert counts[value(picked)] == min(counts[value(v)] for v in feasible)
        grown = Resources(picked.remaining.cpu - 50, picked.remaining.memory - 50, picked.remaining.ports)
        groups = {GROUP: picked.groups.get(GROUP, 0) + 1}
        snapshot = Snapshot([v if v.arn != picked.arn else _with(v, grown, groups) for v in current])


@FAST
@given(st.integers(2, 12), st.integers(1, 40), st.integers(0, 2**32))
def test_spread_keeps_a_balanced_group_within_one(size, n, seed):  # type: ignore[no-untyped-def]
    views = [inst(f"i{i}", cpu=4096, memory=4096, attributes={"zone": ZONES[i % 3]}) for i in range(size)]
    for field in ("instanceId", "attribute:zone"):
        request = PlacementRequest((TaskAsk(R(10, 10)),) * n, GROUP, (PlacementStrategy("spread", field),))
        result = place(request, Snapshot(views), random.Random(seed))
        assert not result.unplaced
        key = {v.id: (v.id if field == "instanceId" else v.attributes["zone"]) for v in views}
        counts = Counter({k: 0 for k in key.values()})
        counts.update(key[p.instance_id] for p in result.placements)
        assert max(counts.values()) - min(counts.values()) <= 1


@FAST
@given(instances(), asks, st.sampled_from(["cpu", "memory"]), st.integers(0, 2**32))
def test_binpack_takes_the_fullest_instance_that_fits(views, tasks, field, seed):  # type: ignore[no-untyped-def]
    ask = tasks[0]
    result = place(
        PlacementRequest((ask,), GROUP, (PlacementStrategy("binpack", field),)),
        Snapshot(views),
        random.Random(seed),
    )
    checks = chain()
    fits = [v for v in views if first_rejection(checks, v, v.remaining, ask) is None]
    left = {v.arn: getattr(v.remaining, field) for v in views}
    if not fits:
        assert result.unplaced == (0,)
    else:
        assert left[result.placements[0].instance_arn] == min(left[v.arn] for v in fits)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(max_size=6), asks, chains, st.data())
def test_the_index_picks_what_a_full_scan_would(views, tasks, strategy, data):  # type: ignore[no-untyped-def]
    """Place task by task; each pick must rank best by the chain among every feasible instance."""
    overrides = {}
    for v in views:  # some instances are fresher in the snapshot than in the index, either way
        if data.draw(st.booleans()):
            fresher = Resources(
                data.draw(st.integers(0, 2048)), data.draw(st.integers(0, 2048)), v.remaining.ports
            )
            overrides[v.arn] = _with(v, fresher, {GROUP: data.draw(st.integers(0, 3))})
    snapshot = Snapshot(views, overrides=overrides)
    request = PlacementRequest(tuple(tasks), GROUP, tuple(strategy))
    result = place(request, snapshot, random.Random(data.draw(st.integers(0, 2**32))))
    state = {v.arn: overrides.get(v.arn, v) for v in views}
    cut = []
    for s in strategy:
        if s.type == "random":
            break
        cut.append(s)
    placed = {p.task: p.instance_arn for p in result.placements}
    checks = chain(group=GROUP)
    for i, ask in enumerate(tasks):
        feasible = [v for v in state.values() if first_rejection(checks, v, v.remaining, ask) is None]
        if i not in placed:
            assert not feasible
            continue

        def rank(v: InstanceView, ask: TaskAsk = ask) -> tuple[int, ...]:
            return tuple(_key(s, v, state) for s in cut)

        best = min(rank(v) for v in feasible)
        assert rank(state[placed[i]]) == best
        v = state[placed[i]]
        state[v.arn] = _with(
            v,
            Resources(
                v.remaining.cpu - ask.needs.cpu,
                v.remaining.memory - ask.needs.memory,
                v.remaining.ports | ask.needs.ports,
            ),
            {**v.groups, GROUP: v.groups.get(GROUP, 0) + 1},
        )


@FAST
@given(
    instances(max_size=8),
    st.lists(st.tuples(st.integers(0, 7), st.sampled_from("rgnpf"), st.integers(0, 4)), max_size=30),
)
def test_the_index_kept_current_equals_one_built_from_scratch(views, changes):  # type: ignore[no-untyped-def]
    """r: removed; g: groups and status changed (re-filed); n: only the running count changed (the
    index swaps the view without re-filing it); p: a task placed (remaining shrinks, another group
    or the same one grows: re-filed in place); f: a task freed (remaining grows, a count drops)."""
    live = InstanceIndex(views)
    live.attribute_buckets("zone")  # built early: must be kept current too
    current = {v.arn: v for v in views}
    for position, kind, count in changes:
        if not views:
            break
        v = views[position % len(views)]
        if kind == "r":
            live.remove(v.arn)
            current.pop(v.arn, None)
        else:
            base = current.get(v.arn, v)
            if kind == "g":
                changed = _with(
                    base, base.remaining, {GROUP: count}, status="ACTIVE" if count % 2 else "DRAINING"
                )
            elif kind == "p":
                group = GROUP if count % 2 else f"other{count}"
                left = R(base.remaining.cpu - 10 * count, base.remaining.memory - count)
                changed = _with(base, left, {**base.groups, group: base.groups.get(group, 0) + 1})
            elif kind == "f":
                groups = {g: n - 1 for g, n in base.groups.items() if n > 1 or g != GROUP}
                changed = _with(base, R(base.remaining.cpu + count, base.remaining.memory), groups)
            else:
                changed = _with(base, base.remaining, dict(base.groups), running_tasks=count)
            live.put(changed)
            current[v.arn] = changed
    fresh = InstanceIndex(current.values())
    assert live.views == fresh.views
    assert sorted(live.order) == sorted(fresh.order)
    for field in ("cpu", "memory"):
        assert list(live.sorted_by(field)) == list(fresh.sorted_by(field))
    for group in [GROUP] + [f"other{n}" for n in range(5)]:
        assert dict(live.group_counts(group)) == dict(fresh.group_counts(group))
        assert {k: sorted(b) for k, b in live.group_buckets(group).items()} == {
            k: sorted(b) for k, b in fresh.group_buckets(group).items()
        }
    assert {k: sorted(b) for k, b in live.attribute_buckets("zone").items()} == {
        k: sorted(b) for k, b in fresh.attribute_buckets("zone").items()
    }


@FAST
@given(
    instances(min_size=9, max_size=12),
    st.lists(st.tuples(st.integers(0, 11), st.sampled_from("rpfs"), st.integers(0, 40)), max_size=30),
)
def test_binpack_order_read_between_changes_equals_a_fresh_sort(views, changes):  # type: ignore[no-untyped-def]
    """The sorted lists are brought up to date when read: read after every change (one instance
    re-filed at a time) they equal a sort of the current views. s: status or connection flipped."""
    live = InstanceIndex(views)
    current = {v.arn: v for v in views}
    for position, kind, count in changes:
        v = views[position % len(views)]
        base = current.get(v.arn, v)
        if kind == "r":
            live.remove(v.arn)
            current.pop(v.arn, None)
            continue
        if kind == "s":
            changed = _with(base, base.remaining, dict(base.groups), agent_connected=not base.agent_connected)
        else:
            step = -count if kind == "p" else count
            changed = _with(
                base, R(base.remaining.cpu + step, base.remaining.memory - step), dict(base.groups)
            )
        live.put(changed)
        current[v.arn] = changed
        for field in ("cpu", "memory"):
            expected = sorted(
                (w.remaining.cpu if field == "cpu" else w.remaining.memory, w.arn)
                for w in current.values()
                if w.schedulable
            )
            assert list(live.sorted_by(field)) == expected


def _with(v: InstanceView, left: Resources, groups: dict[str, int], **kw: object) -> InstanceView:
    from dataclasses import replace

    return replace(v, remaining=left, groups=groups, **kw)  # type: ignore[arg-type]


def _key(s: PlacementStrategy, v: InstanceView, state: dict[str, InstanceView]) -> int:
    if s.type == "binpack":
        return v.remaining.cpu if s.field == "cpu" else v.remaining.memory
    if s.field == "instanceId":
        return v.groups.get(GROUP, 0)
    value = attribute_value(v, "zone")
    return sum(
        w.groups.get(GROUP, 0)
        for w in state.values()
        if w.schedulable and attribute_value(w, "zone") == value
    )
