"""Hand validation of the agent protocol's requests (docs/agent-protocol.md)."""

from __future__ import annotations

import pytest

from dockyard.domain.errors import InvalidParameter
from dockyard.domain.task_status import ContainerStatus, HealthStatus, TaskStatus
from dockyard.services.agent_wire import from_container_state_change, parse_poll, parse_reports

ARN = "arn:aws:ecs:us-east-1:000000000000:task/c/t"


def test_a_full_report_parses():
    [(arn, r)] = parse_reports(
        {
            "reports": [
                {
                    "taskArn": ARN,
                    "seq": 8,
                    "status": "STOPPED",
                    "reason": "exited",
                    "stopCode": "EssentialContainerExited",
                    "pullStartedAt": 1,
                    "executionStoppedAt": 4.5,
                    "healthStatus": "HEALTHY",
                    "containers": [
                        {
                            "name": "web",
                            "runtimeId": "d",
                            "status": "STOPPED",
                            "exitCode": -1,
                            "networkBindings": [
                                {"bindIP": "127.0.0.1", "containerPort": 80, "hostPort": 49153}
                            ],
                        }
                    ],
                }
            ]
        }
    )
    assert (
        arn == ARN
        and r.seq == 8
        and r.status is TaskStatus.STOPPED
        and r.health_status is HealthStatus.HEALTHY
    )
    assert r.pull_started_at == 1.0 and r.execution_stopped_at == 4.5
    [c] = r.containers
    assert c.status is ContainerStatus.STOPPED and c.exit_code == -1
    assert c.network_bindings == (
        {"bindIP": "127.0.0.1", "containerPort": 80, "hostPort": 49153, "protocol": "tcp"},
    )


@pytest.mark.parametrize(
    ("report", "path"),
    [
        ({"taskArn": ARN, "seq": 0}, "reports[0].seq"),
        ({"taskArn": ARN, "seq": True}, "reports[0].seq"),
        ({"seq": 1}, "reports[0].taskArn"),
        ({"taskArn": ARN, "seq": 1, "status": "DEPROVISIONING"}, "reports[0].status"),
        ({"taskArn": ARN, "seq": 1, "stopCode": "Whatever"}, "reports[0].stopCode"),
        ({"taskArn": ARN, "seq": 1, "startedAt": -1}, "reports[0].startedAt"),
        ({"taskArn": ARN, "seq": 1, "containers": [{"status": "RUNNING"}]}, "reports[0].containers[0].name"),
        (
            {
                "taskArn": ARN,
                "seq": 1,
                "containers": [{"name": "w", "networkBindings": [{"hostPort": 70000}]}],
            },
            "reports[0].containers[0].networkBindings[0].hostPort",
        ),
        (
            {
                "taskArn": ARN,
                "seq": 1,
                "containers": [{"name": "w", "networkBindings": [{"protocol": "sctp"}]}],
            },
            "reports[0].containers[0].networkBindings[0].protocol",
        ),
    ],
)
def test_bad_reports_name_the_field(report, path):
    with pytest.raises(InvalidParameter) as e:
        parse_reports({"reports": [report]})
    assert path in e.value.message


def test_limits_and_poll_defaults():
    with pytest.raises(InvalidParameter):
        parse_reports({"reports": [{"taskArn": ARN, "seq": 1}] * 257})
    with pytest.raises(InvalidParameter):
        parse_reports({})
    assert parse_poll({}).known_revision == 0 and parse_poll({"waitSeconds": 999}).wait_seconds == 20.0
    with pytest.raises(InvalidParameter):
        parse_poll({"knownRevision": "7"})


def test_ecs_container_state_change_becomes_an_unsequenced_report():
    r = from_container_state_change(
        {"task": ARN, "containerName": "web", "status": "RUNNING", "runtimeId": "x"}
    )
    assert r.seq is None and r.status is None
    assert r.containers[0].name == "web" and r.containers[0].status is ContainerStatus.RUNNING
