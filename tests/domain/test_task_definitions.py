"""Pure tests of task definitions: sizes, rules, derived fields, wire round trips, and ARNs."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.domain import arns
from dockyard.domain.errors import ClientError, InvalidParameter
from dockyard.domain.task_definition_capabilities import FARGATE_SIZES, fargate_size_ok
from dockyard.domain.task_definition_rules import draft, parse_task_cpu, parse_task_memory
from dockyard.domain.task_definitions import (
    ContainerDefinition,
    TaskDefinition,
    TaskDefinitionFamily,
    TaskDefinitionStatus,
    delete_requested,
    deregistered,
    registered,
)


def container(name: str = "web", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "memory": 128, **fields}


def request(*containers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"family": "app", "containerDefinitions": list(containers) or [container()], **fields}


def fargate(*containers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A Fargate request (256 CPU, 512 MiB); ``fields`` override, None removes a field."""
    settings = {
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
    }
    settings.update(fields)
    return request(*(containers or (container(memory=None),)), **settings)


def without_none(req: dict[str, Any]) -> dict[str, Any]:
    req = copy.deepcopy(req)
    for c in req["containerDefinitions"]:
        for k in [k for k, v in c.items() if v is None]:
            del c[k]
    return req


# ---- task size -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("1024", 1024),
        ("128", 128),
        ("196608", 196608),
        ("1 vCPU", 1024),
        ("1 vcpu", 1024),
        ("2vCPU", 2048),
        ("0.5 vCPU", 512),
        (".25 vcpu", 256),
        ("0.125 VCPU", 128),
        (" 4 vCPU ", 4096),
    ],
)
def test_task_cpu_accepts_units_and_vcpus(text: str, units: int) -> None:
    assert parse_task_cpu(text) == units


@pytest.mark.parametrize(
    "text", ["", "abc", "127", "196609", "1.5", "0.3 vCPU", "-1", "1 core", "1e3", "1 vCPU x"]
)
def test_task_cpu_rejects(text: str) -> None:
    with pytest.raises(ClientError, match="Invalid 'cpu' setting for task"):
        parse_task_cpu(text)


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("2048", 2048),
        ("6", 6),
        ("2 GB", 2048),
        ("2GB", 2048),
        ("2 gb", 2048),
        ("0.5GB", 512),
        ("120 GB", 122880),
    ],
)
def test_task_memory_accepts_mib_and_gb(text: str, mib: int) -> None:
    assert parse_task_memory(text) == mib


@pytest.mark.parametrize("text", ["", "5", "1.5", "1 TB", "512 MB", "x", "0.0001 GB"])
def test_task_memory_rejects(text: str) -> None:
    with pytest.raises(ClientError, match="Invalid 'memory' setting for task"):
        parse_task_memory(text)


@given(st.integers(min_value=128, max_value=196608))
def test_task_cpu_integer_round_trip(units: int) -> None:
    assert parse_task_cpu(str(units)) == units


@given(st.integers(min_value=1, max_value=1536))  # eighths of a vCPU: 0.125 .. 192
def test_task_cpu_vcpu_eighths(eighths: int) -> None:
    assert parse_task_cpu(f"{eighths / 8} vCPU") == eighths * 128


@given(st.integers(min_value=1, max_value=4096))
def test_task_memory_gb_is_1024_mib(gb: int) -> None:
    assert parse_task_memory(f"{gb} GB") == gb * 1024 == parse_task_memory(str(gb * 1024))


@pytest.mark.parametrize(
    ("cpu", "memory", "ok"),
    [
        (256, 512, True),
        (256, 2048, True),
        (256, 3072, False),
        (512, 1024, True),
        (512, 4096, True),
        (512, 512, False),
        (1024, 2048, True),
        (1024, 8192, True),
        (1024, 9216, False),
        (2048, 16384, True),
        (4096, 30720, True),
        (4096, 31744, False),
        (8192, 16384, True),
        (8192, 20480, True),
        (8192, 18432, False),  # 4 GiB steps
        (8192, 61440, True),
        (16384, 32768, True),
        (16384, 40960, True),
        (16384, 36864, False),  # 8 GiB steps
        (16384, 122880, True),
        (128, 512, False),
        (3000, 8192, False),
    ],
)
def test_fargate_sizes(cpu: int, memory: int, ok: bool) -> None:
    assert fargate_size_ok(cpu, memory) is ok


@given(st.sampled_from(sorted((c, m) for c, ms in FARGATE_SIZES.items() for m in ms)))
def test_every_fargate_size_registers_as_fargate(size: tuple[int, int]) -> None:
    cpu, memory = size
    td = draft(without_none(fargate(cpu=str(cpu), memory=str(memory))))
    assert "FARGATE" in td.compatibilities


# ---- what a draft is -----------------------------------------------------------------------------


def test_draft_normalises_and_fills_ecs_defaults() -> None:
    td = draft(
        request(
            container("web", portMappings=[{"containerPort": 80}], environment=[{"name": "A", "value": "1"}]),
            cpu="1 vCPU",
            memory="1 GB",
            volumes=[{"name": "data"}],
            pidMode="host",
        )
    )
    wire = td.to_wire()
    assert (td.cpu, td.memory) == (1024, 1024)
    assert (wire["cpu"], wire["memory"]) == ("1024", "1024")
    assert wire["status"] == "ACTIVE"
    assert wire["pidMode"] == "host" and wire["volumes"] == [{"name": "data"}]
    c = wire["containerDefinitions"][0]
    assert c["cpu"] == 0 and c["essential"] is True
    assert c["portMappings"] == [{"containerPort": 80, "protocol": "tcp"}]  # bridge: dynamic host port
    assert c["environment"] == [{"name": "A", "value": "1"}]
    assert c["mountPoints"] == [] and c["volumesFrom"] == []
    assert "networkMode" not in wire and td.effective_network_mode == "bridge"
    assert wire["compatibilities"] == ["EC2", "EXTERNAL"]
    assert "requiresCompatibilities" not in wire
    assert "revision" not in wire and "taskDefinitionArn" not in wire


def test_awsvpc_host_port_defaults_to_container_port() -> None:
    td = draft(
        request(container(portMappings=[{"containerPort": 8080, "protocol": "udp"}]), networkMode="awsvpc")
    )
    assert td.to_wire()["containerDefinitions"][0]["portMappings"] == [
        {"containerPort": 8080, "hostPort": 8080, "protocol": "udp"}
    ]


def test_health_check_defaults_are_filled() -> None:
    td = draft(request(container(healthCheck={"command": ["CMD-SHELL", "true"]})))
    assert td.to_wire()["containerDefinitions"][0]["healthCheck"] == {
        "command": ["CMD-SHELL", "true"],
        "interval": 30,
        "timeout": 5,
        "retries": 3,
        "startPeriod": 0,
    }


def test_unknown_fields_round_trip_untouched() -> None:
    extra = {
        "linuxParameters": {"initProcessEnabled": True},
        "ulimits": [{"name": "nofile", "softLimit": 1, "hardLimit": 2}],
    }
    td = draft(request(container(**extra), runtimePlatform={"cpuArchitecture": "ARM64"}))
    wire = td.to_wire()
    assert wire["runtimePlatform"] == {"cpuArchitecture": "ARM64"}
    for k, v in extra.items():
        assert wire["containerDefinitions"][0][k] == v


def test_document_round_trip_and_lifecycle() -> None:
    td = draft(request(tags=[{"key": "team", "value": "a"}]))
    td = registered(td, arn="arn:aws:ecs:r:1:task-definition/app:3", revision=3, now=10.5, registered_by="me")
    doc = td.to_document()
    assert doc["tags"] == [{"key": "team", "value": "a"}] and "tags" not in td.to_wire()
    again = TaskDefinition.from_wire(doc)
    assert again.to_document() == doc
    assert (again.revision, again.registered_at, again.tags) == (3, 10.5, (("team", "a"),))

    inactive = deregistered(again, 20.0)
    assert inactive.status is TaskDefinitionStatus.INACTIVE and inactive.to_wire()["deregisteredAt"] == 20.0
    assert deregistered(inactive, 30.0) == inactive
    deleting = delete_requested(inactive, 40.0)
    assert (
        deleting.to_wire()["status"] == "DELETE_IN_PROGRESS"
        and deleting.to_wire()["deleteRequestedAt"] == 40.0
    )
    assert delete_requested(deleting, 50.0) == deleting
    assert TaskDefinition.from_wire(deleting.to_document()).to_document() == deleting.to_document()


def test_family_record_counts_and_latest_active() -> None:
    family, revisions = TaskDefinitionFamily("web").registered(3)
    assert list(revisions) == [1, 2, 3]
    assert family == TaskDefinitionFamily("web", last_revision=3, active=3, stored=3, latest_active=3)
    assert family.every_revision_active and family.all_active and family.listed("ACTIVE")
    assert family.needs_new_latest(3) and not family.needs_new_latest(2)
    family = family.deregistered(2)  # not the latest: it stays
    assert (family.active, family.latest_active, family.every_revision_active) == (2, 3, False)
    family = family.deregistered(3, next_latest=1)
    assert (family.active, family.latest_active, family.all_active) == (1, 1, False)
    assert not family.needs_new_latest(1)  # the last ACTIVE one: nothing left to find
    family = family.deregistered(1)
    assert (family.active, family.latest_active) == (0, None)
    assert family.listed("INACTIVE") and family.listed("ALL") and not family.listed("ACTIVE")
    for _ in range(3):
        family = family.removed()
    assert family.stored == 0 and not family.listed("ALL") and not family.listed("INACTIVE")
    family, revisions = family.registered(2)
    assert list(revisions) == [4, 5] and family.latest_active == 5  # revisions are never reused
    assert family.registered(0) == (family, range(6, 6))


def test_family_record_documents() -> None:
    family = TaskDefinitionFamily("web", last_revision=9, active=2, stored=4, latest_active=7)
    assert TaskDefinitionFamily.from_document(family.to_document(), "web") == family
    assert TaskDefinitionFamily.from_document({}, "api") == TaskDefinitionFamily("api")
    legacy = {"family": "web", "lastRevision": 9, "activeRevisions": [3, 7], "storedRevisions": 4}
    assert TaskDefinitionFamily.from_document(legacy, "web") == family


def test_reserved_memory_prefers_the_reservation() -> None:
    assert ContainerDefinition("a", "i", memory=256, memory_reservation=128).reserved_memory == 128
    assert ContainerDefinition("a", "i", memory=256).reserved_memory == 256
    assert ContainerDefinition("a", "i").reserved_memory is None


# ---- rules ---------------------------------------------------------------------------------------

HEALTHY = {"command": ["CMD", "true"]}

REJECTED: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("bad family", request(family="a b"), ClientError, "Invalid family"),
    ("no containers", request(containerDefinitions=[]), ClientError, "Container list cannot be empty"),
    ("no name", request({"image": "busybox", "memory": 64}), ClientError, "Container.name"),
    ("bad name", request(container("we/b")), ClientError, "Invalid container name 'we/b'"),
    ("no image", request({"name": "web", "memory": 64}), ClientError, "Container.image .*'web'"),
    ("duplicate names", request(container("a"), container("a")), ClientError, "unique.*'a'"),
    (
        "no memory",
        request({"name": "web", "image": "x"}),
        ClientError,
        "'web'.*'memory' or 'memoryReservation'",
    ),
    ("tiny memory", request(container(memory=5)), ClientError, "'memory' setting for container 'web'.*6 MiB"),
    (
        "tiny reservation",
        request(container(memory=None, memoryReservation=4)),
        ClientError,
        "'memoryReservation' setting for container 'web'",
    ),
    (
        "reservation not below memory",
        request(container(memory=128, memoryReservation=128)),
        ClientError,
        "'memoryReservation' \\(128\\) must be less than 'memory' \\(128\\)",
    ),
    ("negative cpu", request(container(cpu=-1)), ClientError, "'cpu' setting for container 'web'"),
    (
        "container cpu over task",
        request(container(cpu=512), cpu="256"),
        ClientError,
        "512 exceeds the task's cpu",
    ),
    (
        "container cpu sum over task",
        request(container("a", cpu=200), container("b", cpu=200), cpu="256"),
        ClientError,
        "sum of the containers' cpu \\(400\\)",
    ),
    (
        "container memory over task",
        request(container(memory=1024), memory="512"),
        ClientError,
        "'memory' setting for container 'web'.*exceeds the task's memory",
    ),
    (
        "reservation over task",
        request(container(memory=None, memoryReservation=1024), memory="512"),
        ClientError,
        "'memoryReservation' setting for container 'web'",
    ),
    (
        "memory sum over task",
        request(container("a", memory=300), container("b", memory=None, memoryReservation=300), memory="512"),
        ClientError,
        "sum of the containers' memory reservations \\(600 MiB",
    ),
    ("no essential", request(container(essential=False)), ClientError, "at least one essential container"),
    (
        "depends on unknown",
        request(container(dependsOn=[{"containerName": "db", "condition": "START"}])),
        ClientError,
        "'web' cannot depend on container 'db'",
    ),
    (
        "depends on itself",
        request(container(dependsOn=[{"containerName": "web", "condition": "START"}])),
        ClientError,
        "'web' cannot depend on itself",
    ),
    (
        "SUCCESS of essential",
        request(container("a", dependsOn=[{"containerName": "b", "condition": "SUCCESS"}]), container("b")),
        ClientError,
        "'a' depends on 'b' with condition SUCCESS.*essential",
    ),
    (
        "COMPLETE of essential",
        request(container("a", dependsOn=[{"containerName": "b", "condition": "COMPLETE"}]), container("b")),
        ClientError,
        "condition COMPLETE",
    ),
    (
        "HEALTHY without health check",
        request(container("a", dependsOn=[{"containerName": "b", "condition": "HEALTHY"}]), container("b")),
        ClientError,
        "'b' has no healthCheck",
    ),
    (
        "dependency cycle",
        request(
            container("a", dependsOn=[{"containerName": "b", "condition": "START"}]),
            container("b", dependsOn=[{"containerName": "a", "condition": "START"}]),
        ),
        ClientError,
        "cycle: a -> b -> a",
    ),
    (
        "bad condition",
        request(container("a", dependsOn=[{"containerName": "b", "condition": "READY"}]), container("b")),
        InvalidParameter,
        "dependsOn.condition",
    ),
    ("bad network mode", request(networkMode="overlay"), InvalidParameter, "networkMode"),
    (
        "bad compatibility",
        request(requiresCompatibilities=["LAMBDA"]),
        InvalidParameter,
        "requiresCompatibilities",
    ),
    (
        "awsvpc host port differs",
        request(container(portMappings=[{"containerPort": 80, "hostPort": 8080}]), networkMode="awsvpc"),
        ClientError,
        "networkMode=awsvpc, the host ports and container ports .* must match.*'web'",
    ),
    (
        "host host port differs",
        request(container(portMappings=[{"containerPort": 80, "hostPort": 81}]), networkMode="host"),
        ClientError,
        "networkMode=host",
    ),
    (
        "ports in none mode",
        request(container(portMappings=[{"containerPort": 80}]), networkMode="none"),
        ClientError,
        "'none' network mode",
    ),
    (
        "container port out of range",
        request(container(portMappings=[{"containerPort": 70000}])),
        ClientError,
        "containerPort 70000",
    ),
    (
        "no container port",
        request(container(portMappings=[{"hostPort": 80}])),
        ClientError,
        "needs a 'containerPort'",
    ),
    (
        "bad protocol",
        request(container(portMappings=[{"containerPort": 80, "protocol": "sctp"}])),
        InvalidParameter,
        "protocol",
    ),
    (
        "links in awsvpc",
        request(container("a", links=["b"]), container("b"), networkMode="awsvpc"),
        ClientError,
        "'links' of container 'a'.*awsvpc",
    ),
    (
        "link to unknown",
        request(container("a", links=["db:database"])),
        ClientError,
        "links to an invalid container 'db'",
    ),
    (
        "unknown volume",
        request(container(mountPoints=[{"sourceVolume": "data", "containerPath": "/d"}])),
        ClientError,
        "mounts volume 'data'",
    ),
    (
        "volumesFrom unknown",
        request(container(volumesFrom=[{"sourceContainer": "other"}])),
        ClientError,
        "volumesFrom an invalid container 'other'",
    ),
    (
        "duplicate volumes",
        request(volumes=[{"name": "v"}, {"name": "v"}]),
        ClientError,
        "Volume names must be unique",
    ),
    (
        "health check command",
        request(container(healthCheck={"command": ["curl", "x"]})),
        ClientError,
        "healthCheck command for container 'web'",
    ),
    (
        "health check interval",
        request(container(healthCheck={"command": ["CMD", "true"], "interval": 1})),
        ClientError,
        "healthCheck interval 1",
    ),
    ("bad task cpu", request(cpu="lots"), ClientError, "Invalid 'cpu' setting for task"),
    ("bad task memory", request(memory="1 TB"), ClientError, "Invalid 'memory' setting for task"),
    (
        "fargate bridge",
        fargate(networkMode="bridge"),
        ClientError,
        "launch_type FARGATE: Fargate only supports network mode 'awsvpc'",
    ),
    ("fargate no cpu", fargate(cpu=None), ClientError, "'cpu' be defined at the task level"),
    (
        "fargate no memory",
        fargate(container(), memory=None),
        ClientError,
        "'memory' be defined at the task level",
    ),
    (
        "fargate bad size",
        fargate(cpu="256", memory="4096"),
        ClientError,
        "No Fargate configuration exists for given values: 256 CPU, 4096 memory",
    ),
    (
        "fargate privileged",
        fargate(container(memory=None, privileged=True)),
        ClientError,
        "'privileged' of container",
    ),
    (
        "fargate awslogs without execution role",
        fargate(container(memory=None, logConfiguration={"logDriver": "awslogs"})),
        ClientError,
        "execution role ARN to support log driver awslogs",
    ),
    (
        "fargate json-file",
        fargate(container(memory=None, logConfiguration={"logDriver": "json-file"})),
        ClientError,
        "Log driver json-file",
    ),
    (
        "fargate host volume",
        fargate(volumes=[{"name": "v", "host": {"sourcePath": "/srv"}}]),
        ClientError,
        "Volume 'v'",
    ),
    (
        "external awsvpc",
        request(networkMode="awsvpc", requiresCompatibilities=["EXTERNAL"]),
        ClientError,
        "EXTERNAL",
    ),
]


@pytest.mark.parametrize(("case", "req", "error", "message"), REJECTED, ids=[c[0] for c in REJECTED])
def test_rejected(case: str, req: dict[str, Any], error: type[Exception], message: str) -> None:
    req = {k: v for k, v in without_none(req).items() if v is not None}
    with pytest.raises(error, match=message):
        draft(req)


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("memory from the task", request({"name": "web", "image": "x"}, memory="512")),
    ("reservation only", request(container(memory=None, memoryReservation=64))),
    ("reservation below memory", request(container(memory=128, memoryReservation=64))),
    (
        "sums fit exactly",
        request(
            container("a", cpu=128, memory=256), container("b", cpu=128, memory=256), cpu="256", memory="512"
        ),
    ),
    (
        "COMPLETE of a non-essential",
        request(
            container("a", dependsOn=[{"containerName": "b", "condition": "COMPLETE"}]),
            container("b", essential=False),
        ),
    ),
    (
        "HEALTHY of a checked container",
        request(
            container("a", dependsOn=[{"containerName": "b", "condition": "HEALTHY"}]),
            container("b", healthCheck=HEALTHY),
        ),
    ),
    (
        "bridge static and dynamic ports",
        request(
            container(
                portMappings=[{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 0}]
            )
        ),
    ),
    (
        "awsvpc equal ports",
        request(container(portMappings=[{"containerPort": 80, "hostPort": 80}]), networkMode="awsvpc"),
    ),
    (
        "port range",
        request(container(portMappings=[{"containerPortRange": "8000-8010"}]), networkMode="awsvpc"),
    ),
    ("links in bridge", request(container("a", links=["b:db"]), container("b"))),
    (
        "volumes and mounts",
        request(
            container(mountPoints=[{"sourceVolume": "v", "containerPath": "/v"}]), volumes=[{"name": "v"}]
        ),
    ),
    ("fargate", fargate()),
    ("fargate and EC2", fargate(requiresCompatibilities=["FARGATE", "EC2"])),
    ("fargate vcpu and GB", fargate(cpu="0.5 vCPU", memory="1 GB")),
    (
        "fargate awslogs with role",
        fargate(
            container(memory=None, logConfiguration={"logDriver": "awslogs"}),
            executionRoleArn="arn:aws:iam::1:role/x",
        ),
    ),
    ("external bridge", request(requiresCompatibilities=["EXTERNAL"])),
]


@pytest.mark.parametrize(("case", "req"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted(case: str, req: dict[str, Any]) -> None:
    td = draft(without_none(req))
    assert td.status is TaskDefinitionStatus.ACTIVE
    for required in td.requires_compatibilities:
        assert required in td.compatibilities


@pytest.mark.parametrize(
    ("req", "compatibilities"),
    [
        (request(), ["EC2", "EXTERNAL"]),
        (request(networkMode="host"), ["EC2", "EXTERNAL"]),
        (request(networkMode="awsvpc"), ["EC2"]),  # no task size: not Fargate
        (without_none(fargate()), ["EC2", "FARGATE"]),
        (
            without_none(fargate(requiresCompatibilities=None)),
            ["EC2", "FARGATE"],
        ),  # derived, not only required
        (request(networkMode="awsvpc", cpu="256", memory="3072"), ["EC2"]),  # not a Fargate size
        (request(volumes=[{"name": "v", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}]), ["EC2"]),
        (request(requiresCompatibilities=["MANAGED_INSTANCES"]), ["EC2", "EXTERNAL", "MANAGED_INSTANCES"]),
    ],
)
def test_compatibilities(req: dict[str, Any], compatibilities: list[str]) -> None:
    req = {k: v for k, v in req.items() if v is not None}
    assert list(draft(req).compatibilities) == compatibilities


R = "com.amazonaws.ecs.capability."


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (request(), set()),
        (request(networkMode="awsvpc"), {"ecs.capability.task-eni"}),
        (request(taskRoleArn="arn:aws:iam::1:role/r"), {R + "task-iam-role"}),
        (
            request(taskRoleArn="arn:aws:iam::1:role/r", networkMode="host"),
            {R + "task-iam-role", R + "task-iam-role-network-host"},
        ),
        (
            request(
                container(logConfiguration={"logDriver": "awslogs"}), executionRoleArn="arn:aws:iam::1:role/e"
            ),
            {
                R + "logging-driver.awslogs",
                R + "docker-remote-api.1.18",
                R + "docker-remote-api.1.19",
                "ecs.capability.execution-role-awslogs",
            },
        ),
        (
            request(container(logConfiguration={"logDriver": "json-file"})),
            {R + "logging-driver.json-file", R + "docker-remote-api.1.18"},
        ),
        (request(container(memory=None, memoryReservation=64)), {R + "docker-remote-api.1.21"}),
        (
            request(container(healthCheck=HEALTHY)),
            {"ecs.capability.container-health-check", R + "docker-remote-api.1.24"},
        ),
        (
            request(container("a", dependsOn=[{"containerName": "b", "condition": "START"}]), container("b")),
            {"ecs.capability.container-ordering"},
        ),
        (request(container(privileged=True)), {R + "privileged-container"}),
        (
            request(
                container(
                    secrets=[
                        {"name": "A", "valueFrom": "arn:aws:secretsmanager:r:1:secret:s"},
                        {"name": "B", "valueFrom": "p"},
                    ]
                )
            ),
            {
                "ecs.capability.secrets.asm.environment-variables",
                "ecs.capability.secrets.ssm.environment-variables",
            },
        ),
        (
            request(
                volumes=[
                    {
                        "name": "v",
                        "efsVolumeConfiguration": {
                            "fileSystemId": "fs",
                            "authorizationConfig": {"iam": "ENABLED"},
                        },
                    }
                ]
            ),
            {"ecs.capability.efs", "ecs.capability.efsAuth"},
        ),
        (
            request(volumes=[{"name": "v", "dockerVolumeConfiguration": {"driver": "rexray"}}]),
            {"ecs.capability.docker-plugin.rexray"},
        ),
    ],
)
def test_requires_attributes(req: dict[str, Any], expected: set[str]) -> None:
    td = draft(req)
    assert set(td.requires_attributes) == expected
    assert list(td.requires_attributes) == sorted(expected)
    assert td.to_wire()["requiresAttributes"] == [{"name": n} for n in sorted(expected)]


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=512), st.integers(min_value=6, max_value=1024)),
        min_size=1,
        max_size=6,
    ),
    st.integers(min_value=128, max_value=2048),
    st.integers(min_value=6, max_value=4096),
)
def test_task_limits_property(sizes: list[tuple[int, int]], task_cpu: int, task_memory: int) -> None:
    """Accepted exactly when every container fits and the sums fit."""
    req = request(
        *(container(f"c{i}", cpu=cpu, memory=mem) for i, (cpu, mem) in enumerate(sizes)),
        cpu=str(task_cpu),
        memory=str(task_memory),
    )
    fits = sum(c for c, _ in sizes) <= task_cpu and sum(m for _, m in sizes) <= task_memory
    if fits:
        assert draft(req).memory == task_memory
    else:
        with pytest.raises(ClientError):
            draft(req)


# ---- ARNs ----------------------------------------------------------------------------------------


def test_arn_formats() -> None:
    assert arns.cluster_arn("us-east-1", "123", "c") == "arn:aws:ecs:us-east-1:123:cluster/c"
    assert arns.task_definition_arn("r", "1", "f", 7) == "arn:aws:ecs:r:1:task-definition/f:7"
    assert arns.task_arn("r", "1", "c", "abc") == "arn:aws:ecs:r:1:task/c/abc"
    assert arns.container_instance_arn("r", "1", "c", "i") == "arn:aws:ecs:r:1:container-instance/c/i"
    assert arns.service_arn("r", "1", "c", "s") == "arn:aws:ecs:r:1:service/c/s"


def test_parse_names_and_arns() -> None:
    assert arns.cluster_name("c") == "c"
    assert arns.cluster_name("arn:aws:ecs:r:1:cluster/c") == "c"
    task = arns.parse_task("arn:aws:ecs:r:1:task/c/abc")
    assert (task.cluster, task.id, task.arn and task.arn.region) == ("c", "abc", "r")
    assert arns.parse_task("abc") == arns.ClusterScoped(None, "abc")
    assert arns.parse_task("arn:aws:ecs:r:1:task/abc").cluster is None  # old short format
    assert arns.parse_service("arn:aws:ecs:r:1:service/c/s").id == "s"
    assert arns.parse_container_instance("arn:aws:ecs:r:1:container-instance/c/i").cluster == "c"
    parsed = arns.parse_arn("arn:aws:ecs:us-east-1:123:task/c/abc")
    assert (parsed.resource_type, parsed.resource_id, str(parsed)) == (
        "task",
        "c/abc",
        "arn:aws:ecs:us-east-1:123:task/c/abc",
    )


@pytest.mark.parametrize(
    ("ref", "family", "revision"),
    [
        ("app", "app", None),
        ("app:3", "app", 3),
        ("arn:aws:ecs:r:1:task-definition/app:12", "app", 12),
        ("arn:aws:ecs:r:1:task-definition/app", "app", None),
    ],
)
def test_parse_task_definition(ref: str, family: str, revision: int | None) -> None:
    parsed = arns.parse_task_definition(ref)
    assert (parsed.family, parsed.revision) == (family, revision)


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        ("app:x", ClientError),
        ("app:0", ClientError),
        ("app:-1", ClientError),
        ("a b", ClientError),
        ("arn:aws:ecs:r:1:cluster/app", InvalidParameter),
        ("arn:aws:s3:r:1:task-definition/app:1", InvalidParameter),
        ("arn:aws", InvalidParameter),
    ],
)
def test_parse_task_definition_rejects(ref: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        arns.parse_task_definition(ref)


@pytest.mark.parametrize(
    "ref", ["arn:aws:ecs:r:1:task/c/a/b", "arn:aws:ecs:r:1:service/c/", "arn:aws:ecs:r:1:task/"]
)
def test_parse_cluster_scoped_rejects(ref: str) -> None:
    with pytest.raises(InvalidParameter):
        arns.parse_task(ref) if "task" in ref else arns.parse_service(ref)


@given(st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True), st.integers(min_value=1, max_value=10**6))
def test_task_definition_arn_round_trip(family: str, revision: int) -> None:
    parsed = arns.parse_task_definition(
        arns.task_definition_arn("eu-west-1", "000000000000", family, revision)
    )
    assert (parsed.family, parsed.revision) == (family, revision)
    assert parsed.arn is not None and (parsed.arn.region, parsed.arn.account) == ("eu-west-1", "000000000000")
