"""dependencies.py as tables: each dependsOn condition against each state of the dependency."""

from __future__ import annotations

import pytest

from dockyard.agent.dependencies import create_blocker, start_blocker, start_order, stop_blocker, validate
from dockyard.agent.task_state import ContainerPhase as P
from dockyard.domain.task_definitions import ContainerDefinition
from dockyard.domain.task_status import HealthStatus as H

from .factories import by_name, container

# (condition, dependency known, started, exit code, has check, health) -> "ok" | "wait" | "never"
START_TABLE = [
    ("START", P.NONE, False, None, False, H.UNKNOWN, "wait"),
    ("START", P.CREATED, False, None, False, H.UNKNOWN, "wait"),
    ("START", P.RUNNING, True, None, False, H.UNKNOWN, "ok"),
    ("START", P.STOPPED, True, 1, False, H.UNKNOWN, "ok"),
    ("START", P.STOPPED, False, None, False, H.UNKNOWN, "never"),
    ("COMPLETE", P.RUNNING, True, None, False, H.UNKNOWN, "wait"),
    ("COMPLETE", P.STOPPED, True, 0, False, H.UNKNOWN, "ok"),
    ("COMPLETE", P.STOPPED, True, 3, False, H.UNKNOWN, "ok"),
    ("COMPLETE", P.STOPPED, False, None, False, H.UNKNOWN, "never"),
    ("SUCCESS", P.PULLED, False, None, False, H.UNKNOWN, "wait"),
    ("SUCCESS", P.RUNNING, True, None, False, H.UNKNOWN, "wait"),
    ("SUCCESS", P.STOPPED, True, 0, False, H.UNKNOWN, "ok"),
    ("SUCCESS", P.STOPPED, True, 1, False, H.UNKNOWN, "never"),
    ("SUCCESS", P.STOPPED, True, 137, False, H.UNKNOWN, "never"),
    ("HEALTHY", P.RUNNING, True, None, True, H.UNKNOWN, "wait"),
    ("HEALTHY", P.RUNNING, True, None, True, H.HEALTHY, "ok"),
    ("HEALTHY", P.RUNNING, True, None, True, H.UNHEALTHY, "never"),
    ("HEALTHY", P.RUNNING, True, None, False, H.UNKNOWN, "never"),
    ("HEALTHY", P.STOPPED, True, 0, True, H.HEALTHY, "never"),
    ("HEALTHY", P.CREATED, False, None, True, H.UNKNOWN, "wait"),
]


def _verdict(blocker: object) -> str:
    if blocker is None:
        return "ok"
    return "never" if getattr(blocker, "never", False) else "wait"


@pytest.mark.parametrize(
    ("condition", "known", "started", "exit_code", "check", "health", "expected"), START_TABLE
)
def test_start_conditions(condition, known, started, exit_code, check, health, expected):  # type: ignore[no-untyped-def]
    dep = container("db", known, started=started, exit_code=exit_code, health_check=check, health=health)
    app = container("app", P.CREATED, depends_on={"db": condition})
    blocker = start_blocker(app, by_name(dep, app))
    assert _verdict(blocker) == expected
    if blocker is not None:
        assert blocker.container == "db"


def test_first_unmet_condition_blocks_and_missing_dependency_never_holds():
    a = container("a", P.RUNNING)
    b = container("b", P.CREATED)
    app = container("app", P.CREATED, depends_on={"a": "START", "b": "START"})
    assert start_blocker(app, by_name(a, b, app)).container == "b"  # type: ignore[union-attr]
    lonely = container("x", P.CREATED, depends_on={"ghost": "START"})
    assert start_blocker(lonely, by_name(lonely)).never  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("source_known", "expected"),
    [(P.NONE, "wait"), (P.PULLED, "wait"), (P.CREATED, "ok"), (P.RUNNING, "ok"), (P.STOPPED, "ok")],
)
def test_volumes_from_and_links_wait_for_creation(source_known, expected):  # type: ignore[no-untyped-def]
    src = container("data", source_known, runtime_id="id-data")
    for app in (
        container("app", P.PULLED, volumes_from=["data"]),
        container("app", P.PULLED, links=["data:db"]),
    ):
        assert _verdict(create_blocker(app, by_name(src, app))) == expected


@pytest.mark.parametrize(
    ("target_known", "started", "expected"),
    [(P.CREATED, False, "wait"), (P.RUNNING, True, "ok"), (P.STOPPED, False, "never")],
)
def test_links_start_after_their_target(target_known, started, expected):  # type: ignore[no-untyped-def]
    # Docker's default bridge network refuses a legacy link to a container that is not running
    target = container("data", target_known, runtime_id="id-data", started=started)
    app = container("app", P.CREATED, links=["data:db"])
    assert _verdict(start_blocker(app, by_name(target, app))) == expected


def test_source_that_stopped_without_creation_never_holds():
    src = container("data", P.STOPPED, runtime_id="")
    src.runtime_id = None
    app = container("app", P.PULLED, volumes_from=["data"])
    assert _verdict(create_blocker(app, by_name(src, app))) == "never"


@pytest.mark.parametrize(
    ("dependent_known", "expected"),
    [(P.NONE, "wait"), (P.CREATED, "wait"), (P.RUNNING, "wait"), (P.STOPPED, "ok")],
)
def test_stop_waits_for_dependents(dependent_known, expected):  # type: ignore[no-untyped-def]
    db = container("db", P.RUNNING)
    app = container("app", dependent_known, depends_on={"db": "START"})
    other = container("other", P.RUNNING)  # unrelated: never blocks
    assert _verdict(stop_blocker(db, by_name(db, app, other))) == expected
    assert stop_blocker(app, by_name(db, app, other)) is None


def _defs(spec: dict[str, dict[str, str]]) -> list[ContainerDefinition]:
    return [
        ContainerDefinition.from_wire(
            {
                "name": n,
                "image": "i",
                "dependsOn": [{"containerName": k, "condition": v} for k, v in deps.items()],
            }
        )
        for n, deps in spec.items()
    ]


def test_start_order_and_cycles():
    order = start_order(
        _defs({"web": {"app": "HEALTHY"}, "app": {"db": "START", "init": "SUCCESS"}, "db": {}, "init": {}})
    )
    assert order.index("db") < order.index("app") < order.index("web")
    assert order.index("init") < order.index("app")
    assert validate(_defs({"a": {"b": "START"}, "b": {"a": "START"}})) is not None
    assert "not in the task" in (validate(_defs({"a": {"zzz": "START"}})) or "")
    assert validate(_defs({"a": {"b": "START"}, "b": {}})) is None
