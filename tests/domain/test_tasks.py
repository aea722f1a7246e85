"""What a task reserves (task-level sizes, container sums, overrides, static host ports)."""

from __future__ import annotations

import dataclasses
from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from dockyard.domain.errors import ClientError, InvalidParameter
from dockyard.domain.resources import Resources
from dockyard.domain.task_definition_rules import draft
from dockyard.domain.tasks import Container, Task, check_overrides, host_ports, needs, new_task


def td(containers: list[dict[str, Any]], **task: Any):  # type: ignore[no-untyped-def]
    return draft({"family": "f", "containerDefinitions": containers, **task})


def c(name: str = "a", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", **fields}


@pytest.mark.parametrize(
    ("definition", "overrides", "expected"),
    [
        # the sum of the containers' cpu and memoryReservation-or-memory
        (
            td([c("a", cpu=128, memory=256), c("b", cpu=64, memoryReservation=100, memory=300)]),
            {},
            (192, 356),
        ),
        # task-level sizes win
        (td([c("a", cpu=128, memory=256)], cpu="1024", memory="2048"), {}, (1024, 2048)),
        # only one task-level size set: the other is summed
        (td([c("a", cpu=128, memory=256), c("b", cpu=64, memory=64)], memory="1024"), {}, (192, 1024)),
        # task-level overrides
        (td([c("a", memory=256)], cpu="256", memory="512"), {"cpu": "1 vCPU", "memory": "1GB"}, (1024, 1024)),
        # container overrides replace what they name
        (
            td([c("a", cpu=128, memory=256), c("b", cpu=64, memory=64)]),
            {"containerOverrides": [{"name": "a", "cpu": 10, "memoryReservation": 32}]},
            (74, 96),
        ),
    ],
)
def test_needs(definition, overrides, expected):
    got = needs(definition, overrides)
    assert (got.cpu, got.memory) == expected


@pytest.mark.parametrize(
    ("mode", "mappings", "tcp", "udp"),
    [
        ("bridge", [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}], {8080}, set()),
        ("bridge", [{"containerPort": 80, "hostPort": 0}], set(), set()),
        ("host", [{"containerPort": 80}, {"containerPort": 53, "protocol": "udp"}], {80}, {53}),
        ("awsvpc", [{"containerPort": 80}], set(), set()),
    ],
)
def test_static_host_ports_by_network_mode(mode, mappings, tcp, udp):
    definition = td([c("a", memory=64, portMappings=mappings)], networkMode=mode)
    assert host_ports(definition) == (frozenset(tcp), frozenset(udp))


def test_check_overrides_rejects_unknown_containers_and_bad_sizes():
    definition = td([c("a", memory=64)])
    with pytest.raises(InvalidParameter, match="not a container"):
        check_overrides(definition, {"containerOverrides": [{"name": "zzz"}]})
    with pytest.raises(InvalidParameter):
        check_overrides(definition, {"containerOverrides": [{"name": "a", "memory": 1}]})
    with pytest.raises(ClientError):
        check_overrides(definition, {"cpu": "lots"})
    check_overrides(definition, {"containerOverrides": [{"name": "a", "command": ["true"]}]})


def _two_container_definition(**kw):  # type: ignore[no-untyped-def]
    definition = td([c("a", cpu=10, memory=64), c("b", memoryReservation=32)], **kw)
    return definition.__class__(**{**definition.__dict__, "arn": "arn:aws:ecs:r:1:task-definition/f:1"})


def _new_task(definition, **kw):  # type: ignore[no-untyped-def]
    """``new_task`` of ``definition`` as task t1 on instance i1 of cluster cl (``kw`` overrides)."""
    args = {
        "region": "r",
        "account": "1",
        "cluster": "cl",
        "task_id": "t1",
        "container_ids": ["x", "y"],
        "td": definition,
        "overrides": {},
        "instance_arn": "arn:aws:ecs:r:1:container-instance/cl/i1",
        "instance_id": "i1",
        "group": "g",
        "started_by": None,
        "tags": (),
        "now": 5.0,
    }
    return new_task(**{**args, **kw})


def test_new_task_round_trips_and_shows_ecs_shape():
    task = _new_task(
        _two_container_definition(memory="512"),
        overrides={"containerOverrides": [{"name": "b", "memory": 48}]},
        group="family:f",
        started_by="me",
        tags=(("k", "v"),),
    )
    assert task.reservation == Resources(10, 512)
    assert Task.from_document(task.to_document()) == task
    wire = task.to_wire(include_tags=True)
    assert wire["lastStatus"] == "PROVISIONING" and wire["desiredStatus"] == "RUNNING"
    assert wire["memory"] == "512" and "cpu" not in wire
    assert wire["tags"] == [{"key": "k", "value": "v"}]
    assert [x["containerArn"] for x in wire["containers"]] == [
        "arn:aws:ecs:r:1:container/cl/t1/x",
        "arn:aws:ecs:r:1:container/cl/t1/y",
    ]
    assert wire["containers"][1]["memory"] == "48" and wire["containers"][1]["memoryReservation"] == "32"
    assert "tags" not in task.to_wire()


def test_new_task_is_the_task_init_would_build():
    """new_task builds tasks without ``__init__`` (a frozen dataclass's is slow): the same value,
    every field set, still frozen."""
    task = _new_task(_two_container_definition(), availability_zone="z", gates=("lb",), service="s")
    containers = tuple(
        Container(name, f"arn:aws:ecs:r:1:container/cl/t1/{cid}", "busybox", cpu, memory, reservation)
        for name, cid, cpu, memory, reservation in (("a", "x", 10, 64, None), ("b", "y", 0, None, 32))
    )
    expected = Task(
        arn="arn:aws:ecs:r:1:task/cl/t1",
        id="t1",
        cluster="cl",
        cluster_arn="arn:aws:ecs:r:1:cluster/cl",
        task_definition_arn="arn:aws:ecs:r:1:task-definition/f:1",
        container_instance_arn="arn:aws:ecs:r:1:container-instance/cl/i1",
        instance_id="i1",
        containers=containers,
        reservation=Resources(10, 96),
        created_at=5.0,
        group="g",
        overrides={},
        availability_zone="z",
        gates=("lb",),
        service="s",
    )
    assert task == expected and vars(task) == vars(expected)
    assert [vars(x) for x in task.containers] == [vars(x) for x in containers]
    with pytest.raises(FrozenInstanceError):
        task.group = "other"  # type: ignore[misc]


def test_tasks_built_without_init_have_every_field():
    """``new_task`` and ``from_document`` build tasks without ``__init__`` and fill plain defaults
    only: every field (a factory's default or a ``__post_init__``'s work included) must be set."""
    assert not hasattr(Task, "__post_init__") and not hasattr(Container, "__post_init__")
    task = _new_task(_two_container_definition())
    for built in (task, Task.from_document(task.to_document())):
        assert [f.name for f in dataclasses.fields(Task) if not hasattr(built, f.name)] == []
        for container in built.containers:
            assert [f.name for f in dataclasses.fields(Container) if not hasattr(container, f.name)] == []
