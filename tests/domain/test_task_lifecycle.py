"""The task lifecycle as truth tables: report merges, stops, sequence checks, never backwards."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dockyard.domain.resources import Resources
from dockyard.domain.task_lifecycle import (
    STALE,
    ContainerReport,
    TaskReport,
    in_desired_set,
    merge_report,
    request_stop,
    stop_now,
)
from dockyard.domain.task_status import ContainerStatus, TaskStatus
from dockyard.domain.tasks import Container, Task

S = TaskStatus
NOW = 100.0


def task(last: TaskStatus = S.PROVISIONING, desired: TaskStatus = S.RUNNING, seq: int = 0, **kw) -> Task:  # type: ignore[no-untyped-def]
    return Task(
        arn="arn:aws:ecs:r:1:task/c/t",
        id="t",
        cluster="c",
        cluster_arn="arn:aws:ecs:r:1:cluster/c",
        task_definition_arn="arn:aws:ecs:r:1:task-definition/f:1",
        container_instance_arn="arn:aws:ecs:r:1:container-instance/c/i",
        instance_id="i",
        containers=(Container(name="web", arn="arn:c/web", image="busybox"),),
        reservation=Resources(10, 10),
        created_at=1.0,
        group="family:f",
        last_status=last,
        desired_status=desired,
        reported_seq=seq,
        **kw,
    )


# (stored last, stored desired, reported, -> last, desired, released)
MERGES = [
    (S.PROVISIONING, S.RUNNING, S.PENDING, S.PENDING, S.RUNNING, False),
    (S.PROVISIONING, S.RUNNING, S.RUNNING, S.RUNNING, S.RUNNING, False),  # ACTIVATING settles to RUNNING
    (S.PENDING, S.RUNNING, S.RUNNING, S.RUNNING, S.RUNNING, False),
    (S.RUNNING, S.RUNNING, S.PENDING, S.RUNNING, S.RUNNING, False),  # never backwards
    (S.RUNNING, S.RUNNING, S.STOPPED, S.STOPPED, S.STOPPED, True),  # stopped by itself
    (S.PENDING, S.RUNNING, S.STOPPED, S.STOPPED, S.STOPPED, True),  # failed to start
    (S.STOPPING, S.STOPPED, S.RUNNING, S.STOPPING, S.STOPPED, False),  # a late RUNNING changes nothing
    (S.STOPPING, S.STOPPED, S.STOPPED, S.STOPPED, S.STOPPED, True),
    (S.STOPPED, S.STOPPED, S.RUNNING, S.STOPPED, S.STOPPED, False),
    (S.STOPPED, S.STOPPED, S.STOPPED, S.STOPPED, S.STOPPED, False),  # released only once
]


@pytest.mark.parametrize(("last", "desired", "reported", "want_last", "want_desired", "released"), MERGES)
def test_merge_truth_table(last, desired, reported, want_last, want_desired, released):
    merged = merge_report(task(last, desired), TaskReport(seq=1, status=reported), NOW)
    assert merged.accepted
    assert (merged.task.last_status, merged.task.desired_status) == (want_last, want_desired)
    assert merged.released is released
    assert merged.task.reported_seq == 1


@pytest.mark.parametrize(
    ("stored_seq", "seq", "accepted"), [(0, 1, True), (5, 6, True), (5, 5, False), (5, 3, False)]
)
def test_sequence_drops_stale_and_duplicate_reports(stored_seq, seq, accepted):
    before = task(S.PENDING, seq=stored_seq)
    merged = merge_report(before, TaskReport(seq=seq, status=S.RUNNING), NOW)
    assert merged.accepted is accepted
    if not accepted:
        assert merged.reason == STALE and merged.task == before and not merged.changed


def test_unsequenced_reports_merge_without_moving_the_sequence():
    merged = merge_report(task(S.PENDING, seq=4), TaskReport(status=S.RUNNING), NOW)
    assert merged.accepted and merged.task.last_status is S.RUNNING and merged.task.reported_seq == 4


def test_reordered_reports_never_move_status_backwards():
    reports = [
        TaskReport(seq=3, status=S.STOPPED),
        TaskReport(seq=1, status=S.PENDING),
        TaskReport(seq=2, status=S.RUNNING),
    ]
    t = task()
    for r in reports:
        t = merge_report(t, r, NOW).task
    assert t.last_status is S.STOPPED and t.reported_seq == 3


def test_stop_codes_and_reasons():
    failed = merge_report(task(S.PENDING), TaskReport(seq=1, status=S.STOPPED), NOW).task
    assert failed.stop_code == "TaskFailedToStart"
    exited = merge_report(task(S.RUNNING), TaskReport(seq=1, status=S.STOPPED), NOW).task
    assert exited.stop_code == "EssentialContainerExited"
    assert exited.stopped_reason == "Essential container in task exited"
    given = merge_report(
        task(S.RUNNING), TaskReport(seq=1, status=S.STOPPED, reason="oom", stop_code="TaskFailedToStart"), NOW
    )
    assert (given.task.stop_code, given.task.stopped_reason) == ("TaskFailedToStart", "oom")
    # the user's stop wins over what the agent says afterwards
    stopping = request_stop(task(S.RUNNING), reason=None, stop_code="UserInitiated", now=NOW).task
    stopped = merge_report(stopping, TaskReport(seq=1, status=S.STOPPED, reason="exit 143"), NOW + 1).task
    assert (stopped.stop_code, stopped.stopped_reason) == ("UserInitiated", "Task stopped by user")
    assert stopped.stopping_at == NOW and stopped.stopped_at == NOW + 1


# stored last -> last after StopTask
STOPS = [
    (S.PROVISIONING, S.STOPPING),
    (S.PENDING, S.STOPPING),
    (S.RUNNING, S.STOPPING),
]


@pytest.mark.parametrize(("last", "want"), STOPS)
def test_request_stop(last, want):
    merged = request_stop(task(last), reason="bye", stop_code="UserInitiated", now=NOW)
    assert merged.changed and not merged.released
    assert (merged.task.last_status, merged.task.desired_status) == (want, S.STOPPED)
    assert merged.task.stopped_reason == "bye" and merged.task.stopping_at == NOW
    assert in_desired_set(merged.task)  # the agent still has to stop it
    again = request_stop(merged.task, reason="other", stop_code="UserInitiated", now=NOW + 5)
    assert not again.changed and again.task.stopped_reason == "bye"


def test_stop_now_releases_once():
    merged = stop_now(task(S.RUNNING), reason="gone", stop_code="UserInitiated", now=NOW)
    assert merged.released and merged.task.stopped and not in_desired_set(merged.task)
    assert all(c.last_status is ContainerStatus.STOPPED for c in merged.task.containers)
    assert not stop_now(merged.task, reason="gone", stop_code="UserInitiated", now=NOW).changed


def test_timestamps_are_set_once_and_version_counts_changes():
    t = task(S.PROVISIONING)
    t = merge_report(
        t, TaskReport(seq=1, status=S.PENDING, pull_started_at=5.0, pull_stopped_at=6.0), NOW
    ).task
    t = merge_report(t, TaskReport(seq=2, status=S.RUNNING, started_at=7.0, pull_started_at=99.0), NOW).task
    assert (t.pull_started_at, t.pull_stopped_at, t.started_at) == (5.0, 6.0, 7.0)
    assert t.version == 3


def test_containers_merge_monotonically():
    t = task(S.RUNNING)
    binding = {"bindIP": "127.0.0.1", "containerPort": 80, "hostPort": 49153, "protocol": "tcp"}
    r1 = TaskReport(
        seq=1,
        containers=(
            ContainerReport("web", ContainerStatus.RUNNING, runtime_id="d1", network_bindings=(binding,)),
        ),
    )
    r2 = TaskReport(seq=2, containers=(ContainerReport("web", ContainerStatus.PENDING),))
    r3 = TaskReport(
        seq=3,
        containers=(
            ContainerReport("web", ContainerStatus.STOPPED, exit_code=137, reason="OutOfMemoryError"),
        ),
    )
    for r in (r1, r2):
        t = merge_report(t, r, NOW).task
    [c] = t.containers
    assert (
        c.last_status is ContainerStatus.RUNNING and c.runtime_id == "d1" and c.network_bindings == (binding,)
    )
    t = merge_report(t, r3, NOW).task
    [c] = t.containers
    assert (c.last_status, c.exit_code, c.reason, c.runtime_id) == (
        ContainerStatus.STOPPED,
        137,
        "OutOfMemoryError",
        "d1",
    )
    # an unknown container (a pause container, say) is ignored
    unknown = TaskReport(seq=4, containers=(ContainerReport("pause", ContainerStatus.RUNNING),))
    assert merge_report(t, unknown, NOW).task.containers == t.containers


@pytest.mark.parametrize(
    "report",
    [
        TaskReport(
            seq=1,
            status=S.RUNNING,
            started_at=7.0,
            containers=(ContainerReport("web", ContainerStatus.RUNNING, runtime_id="d1"),),
        ),
        TaskReport(
            seq=1,
            status=S.STOPPED,
            containers=(ContainerReport("web", ContainerStatus.STOPPED, exit_code=1),),
        ),
        TaskReport(status=S.PENDING),  # unsequenced, changes nothing
        TaskReport(seq=1),
    ],
)
def test_a_merge_leaves_the_task_it_merged_into_as_it_was(report: TaskReport) -> None:
    # (the merge builds its result in place: the task it starts from is the cache's copy)
    t = task(S.PENDING)
    fields, containers = dict(vars(t)), [dict(vars(c)) for c in t.containers]
    merged = merge_report(t, report, NOW)
    assert vars(t) == fields and [vars(c) for c in t.containers] == containers
    assert merged.changed is (merged.task is not t)


def test_desired_set_membership():
    assert in_desired_set(task(S.PROVISIONING))
    assert in_desired_set(task(S.STOPPING, S.STOPPED))
    assert not in_desired_set(replace(task(S.STOPPED, S.STOPPED)))
