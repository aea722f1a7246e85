"""Agent sessions (docs/agent-protocol.md section 8): Poll and Report over one signed WebSocket,
against a real server process, with the agent's own client and with raw messages."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from dockyard.agent.hollow import HollowAgents
from dockyard.client.ecs import AGENT_PREFIX, ECS_PREFIX, ApiError, EcsClient, TransportError
from dockyard.client.session import PATH
from dockyard.client.sigv4 import Credentials, sign
from tests.agent.fake_server import FakeControlPlane
from tests.agent.harness import settings, until
from tests.conftest import ServerProcess, start_server
from tests.services.agent_client import TestAgent

POLL, REPORT = AGENT_PREFIX + "Poll", AGENT_PREFIX + "Report"


def _agent_on(server: ServerProcess, cluster: str) -> TestAgent:
    server.client("ecs").create_cluster(clusterName=cluster)  # type: ignore[attr-defined]
    agent = TestAgent(server, cluster)
    agent.register()
    return agent


def _client(server: ServerProcess, agent: TestAgent) -> EcsClient:
    return EcsClient(server.endpoint, Credentials(agent.access_key, agent.secret_key), server.region)


def _poll_body(agent: TestAgent, known: int, wait: float, **extra: Any) -> dict[str, Any]:
    return {
        "cluster": agent.cluster,
        "containerInstanceArn": agent.instance_arn,
        "knownRevision": known,
        "waitSeconds": wait,
        **extra,
    }


def _run_task(server: ServerProcess, cluster: str, family: str) -> str:
    ecs: Any = server.client("ecs")
    ecs.register_task_definition(
        family=family,
        containerDefinitions=[{"name": "web", "image": "busybox", "memory": 64, "essential": True}],
    )
    out = ecs.run_task(cluster=cluster, taskDefinition=family)
    assert not out["failures"], out
    return str(out["tasks"][0]["taskArn"])


async def test_poll_and_report_over_one_session(dockyard_server: ServerProcess, unique: str) -> None:
    agent = _agent_on(dockyard_server, unique)
    client = _client(dockyard_server, agent)
    try:
        first = await client.poll(_poll_body(agent, 0, 0), 0)
        session = client._agent
        assert session is not None and session._conn is not None  # the call went over a session
        socket = session._conn.ws

        # a Poll that waits, and a Report answered meanwhile on the same session
        waiting = asyncio.create_task(client.poll(_poll_body(agent, first["revision"], 15), 15))
        await asyncio.sleep(0)
        task_arn = await asyncio.to_thread(_run_task, dockyard_server, unique, unique)
        answer = await asyncio.wait_for(waiting, 20)
        assert [t["taskArn"] for t in answer["tasks"]] == [task_arn]

        waiting = asyncio.create_task(client.poll(_poll_body(agent, answer["revision"], 15), 15))
        report = {"taskArn": task_arn, "seq": 1, "status": "RUNNING"}
        results = await client.report(
            {"cluster": unique, "containerInstanceArn": agent.instance_arn, "reports": [report]}
        )
        assert results["results"] == [{"taskArn": task_arn, "accepted": True}], results
        assert not waiting.done()  # the agent's own report is no news for its long-poll
        ecs: Any = dockyard_server.client("ecs")
        described = ecs.describe_tasks(cluster=unique, tasks=[task_arn])["tasks"][0]
        assert described["lastStatus"] == "RUNNING"
        assert session._conn is not None and session._conn.ws is socket  # still the one session
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    finally:
        await client.close()
        agent.close()


async def test_session_errors_are_aws_errors(dockyard_server: ServerProcess, unique: str) -> None:
    agent = _agent_on(dockyard_server, unique)
    client = _client(dockyard_server, agent)
    other = _agent_on(dockyard_server, unique + "-b")
    try:
        with pytest.raises(ApiError) as denied:
            await client.poll(_poll_body(other, 0, 0), 0)  # another instance's desired set
        assert denied.value.code == "AccessDeniedException" and denied.value.status == 400
        with pytest.raises(ApiError) as unknown:
            await client.agent_call(AGENT_PREFIX + "Nope", {})
        assert unknown.value.code == "UnknownOperationException"
        with pytest.raises(ApiError) as invalid:
            await client.poll({"containerInstanceArn": agent.instance_arn, "knownRevision": "x"}, 0)
        assert invalid.value.code in ("InvalidParameterException", "ClientException")
        assert (await client.poll(_poll_body(agent, 0, 0), 0))["instanceStatus"] == "ACTIVE"
    finally:
        await client.close()
        agent.close()
        other.close()


def _signed(server: ServerProcess, key: str, secret: str) -> dict[str, str]:
    headers = sign(
        method="GET",
        host=f"127.0.0.1:{server.port}",
        path=PATH,
        headers={},
        body=b"",
        credentials=Credentials(key, secret),
        region=server.region,
        service="ecs",
    )
    headers.pop("Host", None)
    return headers


async def test_malformed_messages_get_serialization_errors(
    dockyard_server: ServerProcess, unique: str
) -> None:
    agent = _agent_on(dockyard_server, unique)
    url = f"ws://127.0.0.1:{dockyard_server.port}{PATH}"
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(url, headers=_signed(dockyard_server, agent.access_key, agent.secret_key)) as ws,
        ):
            answers = []
            for message in (b"not json", b"[1, 2]", orjson.dumps({"id": 5, "target": 3, "body": {}})):
                await ws.send_bytes(message)
                answers.append(orjson.loads((await ws.receive(timeout=10)).data))
            assert [a["error"]["__type"] for a in answers] == ["SerializationException"] * 3, answers
            assert [a["status"] for a in answers] == [400] * 3
            assert [a["id"] for a in answers] == [None, None, 5]
            assert all(a["requestId"] for a in answers)
            await ws.send_str(
                orjson.dumps({"id": 6, "target": POLL, "body": _poll_body(agent, 0, 0)}).decode()
            )
            good = orjson.loads((await ws.receive(timeout=10)).data)
            assert good["id"] == 6 and good["result"]["instanceStatus"] == "ACTIVE", good
    finally:
        agent.close()


@pytest.mark.parametrize(
    ("who", "code"),
    [
        ("unsigned", "MissingAuthenticationTokenException"),
        ("unknown key", "UnrecognizedClientException"),
        ("wrong secret", "InvalidSignatureException"),
    ],
)
async def test_refused_upgrade_is_an_aws_error(dockyard_server: ServerProcess, who: str, code: str) -> None:
    headers = {
        "unsigned": {},
        "unknown key": _signed(dockyard_server, "AKIDNOBODY0000000000", "x"),
        "wrong secret": _signed(dockyard_server, dockyard_server.access_key, "not-the-secret"),
    }[who]
    url = f"ws://127.0.0.1:{dockyard_server.port}{PATH}"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, headers=headers)
        assert refused.value.status == 403
        assert refused.value.headers is not None
        assert refused.value.headers.get("x-amzn-ErrorType") == code
        assert "without completing handshake" not in dockyard_server.log()


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (404, None),  # no such path (aiohttp, most servers)
        (400, "UnknownOperationException"),  # a Dockyard server from before sessions
        (403, None),  # Starlette without a websocket route
        (502, None),  # a proxy that does not pass WebSockets
    ],
)
async def test_client_falls_back_to_http_without_sessions(status: int, error_type: str | None) -> None:
    fake = FakeControlPlane()
    upgrades = 0

    async def no_sessions(_: web.Request) -> web.Response:
        nonlocal upgrades
        upgrades += 1
        headers = {"x-amzn-ErrorType": error_type} if error_type else {}
        return web.json_response(
            {"__type": error_type or "", "message": "no"}, status=status, headers=headers
        )

    await fake.start(extra_routes=[web.get(PATH, no_sessions)] if status != 404 else [])
    client = EcsClient(fake.endpoint, Credentials("AKIDFAKE", "secret"), "us-east-1")
    body = {"cluster": "test", "containerInstanceArn": "arn", "knownRevision": 0, "waitSeconds": 0}
    try:
        for _ in range(3):
            assert "revision" in await client.poll(body, 0)
        assert fake.polls == 3  # every call went as POST /
        assert upgrades == (1 if status != 404 else 0)  # and the upgrade was not tried again each time
    finally:
        await client.close()
        await fake.close()


async def test_opening_a_session_keeps_to_the_call_timeout() -> None:
    """A server that accepts the connection and never answers the upgrade: the call fails in time."""
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    client = EcsClient(f"http://127.0.0.1:{port}", Credentials("AKIDFAKE", "secret"), "us-east-1")
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TransportError):
            await asyncio.wait_for(client.agent_call(POLL, {}, timeout=1.0), 30)
        assert loop.time() - started < 25  # bounded by the call's timeout, not aiohttp's 300 s
    finally:
        await client.close()
        silent.close()


async def test_replayed_upgrade_and_other_operations_are_refused(
    dockyard_server: ServerProcess, unique: str
) -> None:
    agent = _agent_on(dockyard_server, unique)
    url = f"ws://127.0.0.1:{dockyard_server.port}{PATH}"
    headers = _signed(dockyard_server, agent.access_key, agent.secret_key)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.send_bytes(
                    orjson.dumps({"id": 1, "target": ECS_PREFIX + "ListClusters", "body": {}})
                )
                answer = orjson.loads((await ws.receive(timeout=10)).data)
                assert answer["error"]["__type"] == "UnknownOperationException", answer
            with pytest.raises(aiohttp.WSServerHandshakeError) as replayed:
                await http.ws_connect(url, headers=headers)  # the same signature again
            assert replayed.value.status == 403
            assert replayed.value.headers is not None
            assert replayed.value.headers.get("x-amzn-ErrorType") == "InvalidSignatureException"
    finally:
        agent.close()


async def test_sessions_rotate_and_follow_new_credentials(
    dockyard_server: ServerProcess, unique: str
) -> None:
    agent = _agent_on(dockyard_server, unique)
    client = _client(dockyard_server, agent)
    session = client._agent
    assert session is not None
    try:
        first = await client.poll(_poll_body(agent, 0, 0), 0)
        assert session._conn is not None
        old = session._conn
        waiting = asyncio.create_task(client.poll(_poll_body(agent, first["revision"], 3), 3))
        await asyncio.sleep(0.1)
        session.rotate_after = 0.0  # every new call now wants a new session
        await client.poll(_poll_body(agent, 0, 0), 0)
        assert session._conn is not None and session._conn is not old
        assert not old.ws.closed  # the long-poll in flight on the old session finishes there
        assert (await asyncio.wait_for(waiting, 20))["revision"] == first["revision"]
        await asyncio.sleep(0)
        assert old.closer is not None
        await old.closer
        assert old.ws.closed
        session.rotate_after = 900.0

        agent.register()  # registered again: new credentials, the old session is left
        client.credentials = Credentials(agent.access_key, agent.secret_key)
        before = session._conn
        assert (await client.poll(_poll_body(agent, 0, 0), 0))["instanceStatus"] == "ACTIVE"
        assert session._conn is not before and before.ws.closed
    finally:
        await client.close()
        agent.close()


async def test_session_survives_a_server_restart(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    cluster = "restart-" + uuid.uuid4().hex[:8]
    agent = _agent_on(server, cluster)
    client = _client(server, agent)
    try:
        first = await client.poll(_poll_body(agent, 0, 0), 0)
        waiting = asyncio.create_task(client.poll(_poll_body(agent, first["revision"], 15), 15))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(server.kill)
        with pytest.raises(TransportError):
            await asyncio.wait_for(waiting, 10)  # the session ended: the call fails, not hangs
        await asyncio.to_thread(server.start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:  # the first calls may still meet the old, closing session
            try:
                answer = await client.poll(_poll_body(agent, 0, 0), 0)
                break
            except (TransportError, ApiError) as e:
                if loop.time() > deadline:
                    raise AssertionError(f"no poll answered on a new session: {e}") from e
                await asyncio.sleep(0.2)
        assert answer["instanceStatus"] == "ACTIVE"
    finally:
        await client.close()
        agent.close()
        server.kill()


@pytest.mark.parametrize("session", [True, False])
async def test_hollow_agents_follow_the_session_setting(tmp_path: Path, session: bool) -> None:
    """``dockyard agent --no-session`` (AgentSettings.session) reaches hollow instances too."""
    fake = FakeControlPlane()
    upgrades = 0

    async def no_sessions(_: web.Request) -> web.Response:
        nonlocal upgrades
        upgrades += 1
        return web.Response(status=404)

    await fake.start(extra_routes=[web.get(PATH, no_sessions)])
    hollow = HollowAgents(settings(fake.endpoint, tmp_path / "hollow", session=session), 2)
    job = asyncio.create_task(hollow.run())
    try:
        await until(lambda: fake.polls >= 2, what="both instances polled")
        assert (upgrades > 0) is session
    finally:
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        await fake.close()
