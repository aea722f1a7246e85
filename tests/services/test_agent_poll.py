"""The Poll use case in-process (no HTTP): long-polls end when the server stops; AgentTasks are
serialized once per stored version of the task, task definitions once per revision (one that is
gone is never kept)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from dockyard.agent.registration import HostFacts
from dockyard.api.credentials import KeyRing
from dockyard.clock import SystemClock
from dockyard.services import agent_protocol
from dockyard.services.context import CREDENTIALS, Env, Principal, RequestContext, Settings
from dockyard.services.operations import load_all
from dockyard.services.task_definitions import expire_task_definitions
from dockyard.store.memory import MemoryStore

OPS = load_all()
ADMIN = RequestContext("000000000000", "us-east-1", Principal("admin", "AKIDADMIN"), "r")


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    store = MemoryStore()
    env = Env(store=store, clock=SystemClock(), settings=Settings(agent_timeout_seconds=60))
    env.extras[CREDENTIALS] = KeyRing(store)
    await OPS["CreateCluster"](env, ADMIN, {"clusterName": "c"})
    await OPS["RegisterTaskDefinition"](
        env,
        ADMIN,
        {"family": "f", "containerDefinitions": [{"name": "web", "image": "busybox", "memory": 64}]},
    )
    yield env
    env.stopping.set()
    await store.close()


async def register(env: Env, n: int) -> RequestContext:
    facts = HostFacts(
        cluster="c", instance_id=f"i-{n:017x}", region="us-east-1", cpu_units=1024, memory_mib=1024
    )
    out = await OPS["RegisterContainerInstance"](env, ADMIN, facts.request(None))
    arn = out["containerInstance"]["containerInstanceArn"]
    return RequestContext("000000000000", "us-east-1", Principal("agent", "AKIDAGENT", arn), "r")


async def poll(
    env: Env, agent: RequestContext, known: int, wait: float = 0.0, **extra: Any
) -> dict[str, Any]:
    body = {"cluster": "c", "containerInstanceArn": agent.principal.instance_arn, "knownRevision": known}
    out = await OPS["DockyardAgentV1.Poll"](env, agent, {**body, "waitSeconds": wait, **extra})
    return dict(orjson.loads(orjson.dumps(out)))  # as the api layer sends it


async def test_waiting_polls_answer_when_the_server_stops(env: Env) -> None:
    agents = [await register(env, n) for n in range(3)]
    known = [(await poll(env, a, 0))["revision"] for a in agents]
    waiting = [asyncio.create_task(poll(env, a, k, 20.0)) for a, k in zip(agents, known, strict=True)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiting)
    started = time.monotonic()
    env.stopping.set()
    answers = await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert time.monotonic() - started < 1 and [a["revision"] for a in answers] == known
    assert (await poll(env, agents[0], known[0], 20.0))["revision"] == known[0]  # at once from now on


async def test_agent_tasks_are_serialized_once_per_version(env: Env) -> None:
    agent = await register(env, 0)
    run = await OPS["RunTask"](env, ADMIN, {"cluster": "c", "taskDefinition": "f", "count": 2})
    arns = sorted(t["taskArn"] for t in run["tasks"])
    first = await poll(env, agent, 0)
    raw = await OPS["DockyardAgentV1.Poll"](
        env, agent, {"cluster": "c", "containerInstanceArn": agent.principal.instance_arn, "knownRevision": 0}
    )
    again = await OPS["DockyardAgentV1.Poll"](
        env, agent, {"cluster": "c", "containerInstanceArn": agent.principal.instance_arn, "knownRevision": 0}
    )
    assert all(a is b for a, b in zip(raw["tasks"], again["tasks"], strict=True))  # the same bytes
    assert sorted(t["taskArn"] for t in first["tasks"]) == arns
    [definition] = {t["taskDefinitionArn"] for t in first["tasks"]}
    assert "taskDefinition" not in first["tasks"][0] and first["taskDefinitions"][definition]["family"] == "f"
    assert raw["taskDefinitions"][definition] is again["taskDefinitions"][definition]  # serialized once
    reports = [{"taskArn": arns[0], "seq": 1, "status": "RUNNING"}]
    answer = await poll(env, agent, first["revision"], 0.0, reports=reports)
    assert answer["results"] == [{"taskArn": arns[0], "accepted": True}]
    assert answer["revision"] == first["revision"]  # its own report is no news ...
    by_arn = {t["taskArn"]: t for t in answer["tasks"]}
    assert by_arn[arns[0]]["reportedSeq"] == 1 and by_arn[arns[1]]["reportedSeq"] == 0  # ... but shown


async def test_answers_follow_the_set_between_revisions(env: Env) -> None:
    """An answer reuses what the last one built for the instance only while it still holds: a task
    the agent's own report stopped leaves at the same revision, a new task joins at a new one, and
    the tasks that did not change keep their bytes."""
    agent = await register(env, 0)
    run = await OPS["RunTask"](env, ADMIN, {"cluster": "c", "taskDefinition": "f", "count": 3})
    arns = sorted(t["taskArn"] for t in run["tasks"])
    body = {"cluster": "c", "containerInstanceArn": agent.principal.instance_arn, "knownRevision": 0}
    first = await OPS["DockyardAgentV1.Poll"](env, agent, body)
    assert [orjson.loads(bytes(orjson.dumps(t)))["taskArn"] for t in first["tasks"]] == arns  # sorted
    stop = [{"taskArn": arns[1], "seq": 1, "status": "STOPPED"}]
    after = await OPS["DockyardAgentV1.Poll"](env, agent, {**body, "reports": stop})
    assert after["revision"] == first["revision"]
    assert after["tasks"] == [first["tasks"][0], first["tasks"][2]]
    assert after["tasks"][0] is first["tasks"][0] and after["tasks"][1] is first["tasks"][2]
    more = await OPS["RunTask"](env, ADMIN, {"cluster": "c", "taskDefinition": "f"})
    grown = await OPS["DockyardAgentV1.Poll"](env, agent, body)
    assert grown["revision"] > first["revision"]
    shown = [orjson.loads(bytes(orjson.dumps(t)))["taskArn"] for t in grown["tasks"]]
    assert shown == sorted([arns[0], arns[2], more["tasks"][0]["taskArn"]])
    kept = {first["tasks"][0], first["tasks"][2]}
    assert sum(1 for t in grown["tasks"] if any(t is k for k in kept)) == 2  # not serialized again


async def test_a_task_definition_that_is_gone_is_null_and_never_kept(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revision deleted (and expired) while its tasks run is ``null`` in ``taskDefinitions``, and
    that is asked again by every answer, while one that exists is read once; the tasks' own bytes
    are kept either way."""
    container = {"name": "web", "image": "busybox", "memory": 64}
    await OPS["RegisterTaskDefinition"](env, ADMIN, {"family": "g", "containerDefinitions": [container]})
    agent = await register(env, 0)
    run = await OPS["RunTask"](env, ADMIN, {"cluster": "c", "taskDefinition": "g", "count": 2})
    more = await OPS["RunTask"](env, ADMIN, {"cluster": "c", "taskDefinition": "f"})
    gone, kept = run["tasks"][0]["taskDefinitionArn"], more["tasks"][0]["taskDefinitionArn"]
    await OPS["DeregisterTaskDefinition"](env, ADMIN, {"taskDefinition": "g:1"})
    await OPS["DeleteTaskDefinitions"](env, ADMIN, {"taskDefinitions": ["g:1"]})
    assert await expire_task_definitions(env, time.time() + 60) == 1
    resolved: list[str] = []
    resolve = agent_protocol.resolve_task_definition

    async def counted(env: Env, ctx: RequestContext, ref: str) -> Any:
        resolved.append(ref)
        return await resolve(env, ctx, ref)

    monkeypatch.setattr(agent_protocol, "resolve_task_definition", counted)
    body = {"cluster": "c", "containerInstanceArn": agent.principal.instance_arn, "knownRevision": 0}
    raw = await OPS["DockyardAgentV1.Poll"](env, agent, body)
    again = await OPS["DockyardAgentV1.Poll"](env, agent, body)
    assert sorted(resolved) == sorted([gone, gone, kept])
    assert again["taskDefinitions"][gone] is None and again["taskDefinitions"][kept] is not None
    assert all(a is b for a, b in zip(raw["tasks"], again["tasks"], strict=True))
    answer = await poll(env, agent, 0)
    by_definition = sorted(t["taskDefinitionArn"] for t in answer["tasks"])
    assert by_definition == sorted([gone, gone, kept]) and set(answer["taskDefinitions"]) == {gone, kept}
