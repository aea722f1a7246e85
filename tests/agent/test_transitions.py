"""transitions.next_step as a truth table, like amazon-ecs-agent's containerNextState tests."""

from __future__ import annotations

import pytest

from dockyard.agent.task_state import ContainerPhase as P
from dockyard.agent.transitions import (
    ESSENTIAL_EXITED,
    next_step,
    stop_decision,
    task_health,
    task_status,
)
from dockyard.agent.transitions import (
    Action as A,
)
from dockyard.domain.task_status import HealthStatus as H
from dockyard.domain.task_status import StopCode
from dockyard.domain.task_status import TaskStatus as T

from .factories import by_name, container, task

# known, task desired, dependency (db) known, -> next, action, blocked on
TABLE = [
    # desired RUNNING, no dependency issues
    (P.NONE, T.RUNNING, P.RUNNING, P.PULLED, A.PULL, None),
    (P.PULLED, T.RUNNING, P.RUNNING, P.CREATED, A.CREATE, None),
    (P.CREATED, T.RUNNING, P.RUNNING, P.RUNNING, A.START, None),
    (P.RUNNING, T.RUNNING, P.RUNNING, None, A.NONE, None),
    (P.STOPPED, T.RUNNING, P.RUNNING, None, A.NONE, None),
    # desired RUNNING, dependency (START) not started yet: pull and create go on, start waits
    (P.NONE, T.RUNNING, P.CREATED, P.PULLED, A.PULL, None),
    (P.PULLED, T.RUNNING, P.CREATED, P.CREATED, A.CREATE, None),
    (P.CREATED, T.RUNNING, P.CREATED, None, A.NONE, "db"),
    # dependency stopped without ever starting: the container can never start
    (P.CREATED, T.RUNNING, P.STOPPED, P.STOPPED, A.ABORT, "db"),
    # desired STOPPED
    (P.NONE, T.STOPPED, P.RUNNING, P.STOPPED, A.NONE, None),
    (P.PULLED, T.STOPPED, P.RUNNING, P.STOPPED, A.NONE, None),
    (P.CREATED, T.STOPPED, P.RUNNING, P.STOPPED, A.NONE, None),
    (P.RUNNING, T.STOPPED, P.RUNNING, P.STOPPED, A.STOP, None),
    (P.STOPPED, T.STOPPED, P.RUNNING, None, A.NONE, None),
]


@pytest.mark.parametrize(("known", "desired", "dep_known", "nxt", "action", "blocked"), TABLE)
def test_next_step(known, desired, dep_known, nxt, action, blocked):  # type: ignore[no-untyped-def]
    db = container("db", dep_known, started=dep_known is P.RUNNING)
    app = container("app", known, depends_on={"db": "START"})
    step = next_step(app, desired, by_name(db, app))
    assert (step.next, step.action, step.blocked_on) == (nxt, action, blocked)
    assert step.reason


def test_stop_in_reverse_dependency_order():
    db = container("db", P.RUNNING)
    app = container("app", P.RUNNING, depends_on={"db": "START"})
    cs = by_name(db, app)
    assert next_step(db, T.STOPPED, cs).blocked_on == "app"
    assert next_step(app, T.STOPPED, cs).action is A.STOP
    app.known = P.STOPPED
    assert next_step(db, T.STOPPED, cs).action is A.STOP


def test_volumes_from_waits_for_source_creation():
    data = container("data", P.PULLED)
    app = container("app", P.PULLED, volumes_from=["data"])
    assert next_step(app, T.RUNNING, by_name(data, app)).blocked_on == "data"


def test_stop_decision_table():
    # essential container exited after running
    t = task(container("web", P.STOPPED, exit_code=0), container("side", P.RUNNING, essential=False))
    d = stop_decision(t)
    assert d is not None and (d.stop_code, d.reason) == (
        StopCode.ESSENTIAL_CONTAINER_EXITED,
        ESSENTIAL_EXITED,
    )
    # essential container never started (failed pull): the reason is its own
    failed = container("web", P.STOPPED, started=False)
    failed.reason = "CannotPullContainerError: nope"
    d = stop_decision(task(failed))
    assert (
        d is not None and d.stop_code == StopCode.TASK_FAILED_TO_START and d.reason.startswith("CannotPull")
    )
    # a non-essential container exiting changes nothing
    assert (
        stop_decision(task(container("web", P.RUNNING), container("init", P.STOPPED, essential=False)))
        is None
    )
    # already stopping: no new decision
    assert stop_decision(task(container("web", P.STOPPED), desired=T.STOPPED)) is None


@pytest.mark.parametrize(
    ("states", "desired", "before", "expected"),
    [
        ([(P.NONE, True)], T.RUNNING, T.PENDING, T.PENDING),
        ([(P.RUNNING, True), (P.CREATED, False)], T.RUNNING, T.PENDING, T.PENDING),
        ([(P.RUNNING, True), (P.RUNNING, False)], T.RUNNING, T.PENDING, T.RUNNING),
        ([(P.RUNNING, True), (P.STOPPED, False)], T.RUNNING, T.PENDING, T.RUNNING),  # init container done
        (
            [(P.RUNNING, True), (P.STOPPED, True)],
            T.STOPPED,
            T.RUNNING,
            T.RUNNING,
        ),  # stopping: never backwards
        ([(P.STOPPED, True), (P.STOPPED, False)], T.STOPPED, T.RUNNING, T.STOPPED),
        ([(P.STOPPED, True)], T.STOPPED, T.PENDING, T.STOPPED),
        ([(P.RUNNING, True)], T.STOPPED, T.PENDING, T.PENDING),  # desired STOPPED before it ran
    ],
)
def test_task_status(states, desired, before, expected):  # type: ignore[no-untyped-def]
    cs = [container(f"c{i}", k, essential=e) for i, (k, e) in enumerate(states)]
    assert task_status(task(*cs, desired=desired, known=before)) == expected


@pytest.mark.parametrize(
    ("healths", "expected"),
    [
        ([], H.UNKNOWN),
        ([H.HEALTHY], H.HEALTHY),
        ([H.HEALTHY, H.UNKNOWN], H.UNKNOWN),
        ([H.HEALTHY, H.UNHEALTHY], H.UNHEALTHY),
    ],
)
def test_task_health(healths, expected):  # type: ignore[no-untyped-def]
    cs = [container(f"c{i}", P.RUNNING, health_check=True, health=h) for i, h in enumerate(healths)]
    cs.append(container("unchecked", P.RUNNING))  # no check: not counted
    cs.append(
        container("side", P.RUNNING, essential=False, health_check=True, health=H.UNHEALTHY)
    )  # not essential
    assert task_health(cs) == expected
