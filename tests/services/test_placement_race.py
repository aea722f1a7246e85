"""The race and the crash, through the real server over HTTP.

- Race: 16 concurrent clients ask for more than there is room for (exactly N tasks by memory, then
  one static host port per instance): exactly N are placed, every other task fails with
  RESOURCE:*, no instance is over-committed. (tests/placement/test_race.py runs the same race
  in-process over many seeds and strategies.)
- Crash: the server is killed with -9 again and again while clients run RunTask with a
  clientToken, retrying the same token until they get an answer: no acknowledged task is lost, no
  token makes two sets of tasks, and after the last restart no instance is over-committed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from tests.conftest import ServerProcess, start_server
from tests.services.agent_client import TestAgent
from tests.services.conftest import register_td, resources

CLIENTS = 16


def together(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i < n on n threads released at once."""
    start = threading.Barrier(n)

    def run(i: int) -> Any:
        start.wait(timeout=30)
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def instance_totals(ecs: Any, cluster: str) -> dict[str, tuple[int, int]]:
    """registered - remaining (cpu, memory) per instance, asserting nothing is over-committed."""
    arns = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    out = {}
    for ci in ecs.describe_container_instances(cluster=cluster, containerInstances=arns)[
        "containerInstances"
    ]:
        left, total = resources(ci), resources(ci, "registeredResources")
        assert left["CPU"] >= 0 and left["MEMORY"] >= 0, ci["containerInstanceArn"]
        out[ci["containerInstanceArn"]] = (total["CPU"] - left["CPU"], total["MEMORY"] - left["MEMORY"])
    return out


@pytest.mark.parametrize("seed", range(3))
def test_sixteen_clients_get_exactly_the_room_there_is(dockyard_server, ecs, cluster, agents, unique, seed):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    made = [agents(cluster, memory=300) for _ in range(4)]  # room for 12 tasks of 100 MiB
    register_td(ecs, unique, memory=100)
    clients = [dockyard_server.client("ecs") for _ in range(CLIENTS)]
    strategy = rng.choice(
        [[], [{"type": "binpack", "field": "memory"}], [{"type": "spread", "field": "instanceId"}]]
    )

    def run(i: int) -> dict[str, Any]:
        return clients[i].run_task(cluster=cluster, taskDefinition=unique, placementStrategy=strategy)  # type: ignore[no-any-return]

    answers = together(CLIENTS, run)
    placed = [t for a in answers for t in a["tasks"]]
    assert len(placed) == 12
    assert all(f["reason"] == "RESOURCE:MEMORY" for a in answers if not a["tasks"] for f in a["failures"])
    assert all(a["failures"] for a in answers if not a["tasks"])
    assert all(memory <= 300 for _, memory in instance_totals(ecs, cluster).values())

    # one static host port per instance: three more instances, 16 clients, 3 tasks
    ports_family = unique + "-port"
    for _ in range(3):
        agents(cluster, memory=4096)
    register_td(ecs, ports_family, memory=10, portMappings=[{"containerPort": 80, "hostPort": 8080}])
    answers = together(
        CLIENTS,
        lambda i: clients[i].run_task(
            cluster=cluster, taskDefinition=ports_family, placementStrategy=strategy
        ),
    )
    on_port = [t["containerInstanceArn"] for a in answers for t in a["tasks"]]
    assert len(on_port) == len(set(on_port)) == 3
    assert not set(on_port) & {m.instance_arn for m in made}  # those are full by memory
    reasons = {f["reason"] for a in answers if not a["tasks"] for f in a["failures"]}
    assert reasons <= {"RESOURCE:PORTS", "RESOURCE:MEMORY"} and "RESOURCE:PORTS" in reasons


@pytest.fixture
def crashing_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own; agents stay connected however long the test takes."""
    server = start_server(tmp_path, "--agent-timeout", "600")
    try:
        yield server
    finally:
        server.kill()


def test_kill_9_during_concurrent_run_task_loses_nothing_and_doubles_nothing(crashing_server: ServerProcess):
    server = crashing_server
    ecs = server.client("ecs")
    ecs.create_cluster(clusterName="crash")
    for _ in range(3):
        TestAgent(server, "crash", memory=2000).register()  # room for 60 tasks of 100 MiB
    register_td(ecs, "crash", memory=100)
    acknowledged: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    killed = threading.Event()  # set once the killer has done its restarts
    restarts = 0

    def client(i: int) -> None:
        ecs_i = server.client("ecs")
        n = 0
        while not killed.is_set() or n < 3:  # keep calling until the last restart is behind us
            token = f"client-{i}-call-{n}"
            n += 1
            deadline = time.monotonic() + 120
            while True:
                try:
                    out = ecs_i.run_task(cluster="crash", taskDefinition="crash", count=2, clientToken=token)
                    break
                except (BotoCoreError, ClientError) as e:
                    if isinstance(e, ClientError) and e.response["Error"]["Code"] != "ServerException":
                        raise
                    assert time.monotonic() < deadline, f"no answer for {token}"
                    time.sleep(0.05)
            with lock:
                acknowledged[token] = out

    def killer() -> None:
        nonlocal restarts
        rng = random.Random(7)
        while restarts < 4:
            time.sleep(rng.uniform(0.1, 0.5))  # while the clients hammer RunTask
            server.kill()  # SIGKILL to the process group
            server.start()
            restarts += 1
        killed.set()

    with ThreadPoolExecutor(9) as pool:
        killing = pool.submit(killer)
        workers = [pool.submit(client, i) for i in range(8)]
        for w in workers:
            w.result(timeout=300)
        killing.result(timeout=120)

    ecs = server.client("ecs")
    for token, out in acknowledged.items():  # a replayed token answers the same tasks, no new ones
        again = ecs.run_task(cluster="crash", taskDefinition="crash", count=2, clientToken=token)
        assert sorted(t["taskArn"] for t in again["tasks"]) == sorted(t["taskArn"] for t in out["tasks"]), (
            token
        )
    answered = [t["taskArn"] for out in acknowledged.values() for t in out["tasks"]]
    assert len(answered) == len(set(answered)) <= 60
    if any(out["failures"] for out in acknowledged.values()):
        assert len(answered) == 60  # only a full cluster refuses
    stored: list[str] = []
    for page in ecs.get_paginator("list_tasks").paginate(cluster="crash"):
        stored += page["taskArns"]
    assert sorted(stored) == sorted(answered)  # nothing lost, nothing made twice
    described = []
    for start in range(0, len(stored), 100):
        described += ecs.describe_tasks(cluster="crash", tasks=stored[start : start + 100])["tasks"]
    per_instance: dict[str, int] = {}
    for t in described:
        per_instance[t["containerInstanceArn"]] = per_instance.get(t["containerInstanceArn"], 0) + 100
    for arn, (_, reserved) in instance_totals(ecs, "crash").items():
        assert reserved == per_instance.get(arn, 0) <= 2000
