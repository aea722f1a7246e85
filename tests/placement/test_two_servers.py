"""Two real ``dockyard server`` processes on one SQLite file, 16 concurrent boto3 clients split
across them, RunTask into room for exactly N tasks plus one static host port (hollow instances):
exactly N (and one port task) placed, the rest fail with RESOURCE:*, no instance over-committed,
the port given once. Each server places against its own watch-fed cache; the store's
compare-and-swap on the instances' allocation records is what keeps them apart."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.agent.agent_process import AgentProcess
from tests.conftest import ServerProcess, start_server, wait_until

CLUSTER = "shared"
CLIENTS = 16
BIG_INSTANCES = 2
BIG_MEMORY = 512
TASK_MEMORY = 128
TASK_CPU = 256  # more than the port instance has: no memory task fits there
N = BIG_INSTANCES * (BIG_MEMORY // TASK_MEMORY)  # 8 memory tasks fit
PORT = 8080
PORT_INSTANCE_CPU = 128
PORT_INSTANCE_MEMORY = 2048
PORT_TASK_MEMORY = 600  # more than a big instance has: the port instance only (room for 3 but one port)
MEM_ASKS_PER_CLIENT = 2  # 32 asks for 8 places
PORT_ASKS_PER_CLIENT = 1  # 16 asks for one port


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_server(tmp_path / "a", "--store", store)
    try:
        second = start_server(tmp_path / "b", "--store", store)
        try:
            yield first, second
        finally:
            second.kill()
    finally:
        first.kill()


def _hollow(server: ServerProcess, tmp: Path, name: str, *extra: str) -> AgentProcess:
    return AgentProcess(
        server,
        CLUSTER,
        tmp / f"agent-{name}",
        tmp / f"agent-{name}.log",
        extra=["--runtime", "simulated", "--log-level", "info", *extra],
    ).start()


def _instances(ecs: Any) -> list[dict[str, Any]]:
    arns = ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"]
    if not arns:
        return []
    out: list[dict[str, Any]] = ecs.describe_container_instances(cluster=CLUSTER, containerInstances=arns)[
        "containerInstances"
    ]
    return out


def _remaining(instance: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in instance["remainingResources"]:
        out[r["name"]] = r["integerValue"] if r["type"] == "INTEGER" else set(r["stringSetValue"])
    return out


def _is_ports_instance(instance: dict[str, Any]) -> bool:
    return any(a["name"] == "role" and a.get("value") == "ports" for a in instance["attributes"])


def test_two_servers_never_over_commit(
    two_servers: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    first, second = two_servers
    admin: Any = first.client("ecs")
    admin.create_cluster(clusterName=CLUSTER)
    agents = [
        _hollow(
            first,
            tmp_path,
            "big",
            "--instances",
            str(BIG_INSTANCES),
            "--cpu-units",
            "1024",
            "--memory-mib",
            str(BIG_MEMORY),
        ),
        _hollow(
            second,
            tmp_path,
            "ports",
            "--cpu-units",
            str(PORT_INSTANCE_CPU),
            "--memory-mib",
            str(PORT_INSTANCE_MEMORY),
            "--attribute",
            "role=ports",
        ),
    ]
    try:
        _race(first, second, admin)
    finally:
        for agent in agents:
            agent.kill()


def _race(first: ServerProcess, second: ServerProcess, admin: Any) -> None:
    # both servers see all three instances connected before the race starts
    for server in (first, second):
        ecs: Any = server.client("ecs")
        wait_until(
            lambda ecs=ecs: (
                len(found := _instances(ecs)) == BIG_INSTANCES + 1 and all(i["agentConnected"] for i in found)
            ),
            timeout=20,
            what="three connected instances on both servers",
        )
    memory_td = admin.register_task_definition(
        family="memory",
        containerDefinitions=[{"name": "main", "image": "busybox", "cpu": TASK_CPU, "memory": TASK_MEMORY}],
    )["taskDefinition"]["taskDefinitionArn"]
    port_td = admin.register_task_definition(
        family="port",
        networkMode="bridge",
        containerDefinitions=[
            {
                "name": "main",
                "image": "busybox",
                "memory": PORT_TASK_MEMORY,
                "portMappings": [{"containerPort": 80, "hostPort": PORT, "protocol": "tcp"}],
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]

    clients = [(first if n % 2 == 0 else second).client("ecs") for n in range(CLIENTS)]
    start = threading.Barrier(CLIENTS)

    def client_run(n: int) -> list[tuple[str, dict[str, Any]]]:
        ecs: Any = clients[n]
        asks = [memory_td] * MEM_ASKS_PER_CLIENT + [port_td] * PORT_ASKS_PER_CLIENT
        if n % 2:
            asks.reverse()
        start.wait(timeout=30)
        return [(td, ecs.run_task(cluster=CLUSTER, taskDefinition=td, count=1)) for td in asks]

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        answers = [a for per_client in pool.map(client_run, range(CLIENTS)) for a in per_client]

    placed: dict[str, list[dict[str, Any]]] = {memory_td: [], port_td: []}
    for td, out in answers:
        assert len(out["tasks"]) + bool(out["failures"]) == 1, out
        placed[td] += out["tasks"]
        for failure in out["failures"]:
            assert failure["reason"].startswith("RESOURCE:"), failure
        if out["failures"] and td == port_td:
            assert any(f["reason"] == "RESOURCE:PORTS" for f in out["failures"]), out["failures"]
    assert len(placed[memory_td]) == N
    assert len(placed[port_td]) == 1

    instances = {i["containerInstanceArn"]: i for i in _instances(admin)}
    ports_instance = next(arn for arn, i in instances.items() if _is_ports_instance(i))
    (port_task,) = placed[port_td]
    assert port_task["containerInstanceArn"] == ports_instance
    per_instance = Counter(t["containerInstanceArn"] for t in placed[memory_td])
    assert ports_instance not in per_instance
    assert sorted(per_instance.values()) == [BIG_MEMORY // TASK_MEMORY] * BIG_INSTANCES

    # every server's view: the same tasks, and every instance's reservations within its resources
    all_arns = sorted(t["taskArn"] for ts in placed.values() for t in ts)
    for server in (first, second):
        ecs = server.client("ecs")
        wait_until(
            lambda ecs=ecs: sorted(ecs.list_tasks(cluster=CLUSTER)["taskArns"]) == all_arns,
            timeout=20,
            what="both servers to list the placed tasks",
        )
        for arn, instance in ((i["containerInstanceArn"], i) for i in _instances(ecs)):
            left = _remaining(instance)
            assert left["CPU"] >= 0 and left["MEMORY"] >= 0, (arn, left)
            if arn != ports_instance:
                assert left["CPU"] == 1024 - TASK_CPU * per_instance[arn]
            if arn == ports_instance:
                assert left["MEMORY"] == PORT_INSTANCE_MEMORY - PORT_TASK_MEMORY
                assert str(PORT) in left["PORTS"]
            else:
                assert left["MEMORY"] == BIG_MEMORY - TASK_MEMORY * per_instance[arn]
                assert str(PORT) not in left["PORTS"]
