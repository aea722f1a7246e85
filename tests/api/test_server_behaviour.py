"""Server-level behaviour: concurrency, principals, retention, restarts."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from dockyard.api.credentials import KeyRing
from dockyard.store import open_store
from tests.conftest import start_server, wait_until


def test_32_concurrent_registrations_get_revisions_1_to_32(dockyard_server, unique):
    clients = [dockyard_server.client("ecs") for _ in range(8)]

    def register(i: int) -> int:
        out = clients[i % len(clients)].register_task_definition(
            family=unique,
            containerDefinitions=[
                {
                    "name": "c",
                    "image": "busybox",
                    "memory": 32,
                    "environment": [{"name": "I", "value": str(i)}],
                }
            ],
        )
        return int(out["taskDefinition"]["revision"])

    with ThreadPoolExecutor(max_workers=32) as pool:
        revisions = sorted(pool.map(register, range(32)))
    assert revisions == list(range(1, 33))
    arns = dockyard_server.client("ecs").list_task_definitions(familyPrefix=unique, maxResults=100)[
        "taskDefinitionArns"
    ]
    assert len(arns) == 32


def _add_agent_key(state_dir: Path, key_id: str, secret: str) -> None:
    async def add() -> None:
        store = open_store(f"sqlite:///{state_dir}/state.db")
        try:
            await KeyRing(store).put(
                key_id, secret, "agent", "arn:aws:ecs:us-east-1:000000000000:container-instance/x/1"
            )
        finally:
            await store.close()

    asyncio.run(add())


def test_agent_principal_may_not_call_user_operations(dockyard_server):
    import boto3

    key_id, secret = "AKIDAGENT00000000001", "agent-secret"
    _add_agent_key(dockyard_server.state_dir, key_id, secret)
    agent = boto3.client(
        "ecs",
        endpoint_url=dockyard_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )
    with pytest.raises(ClientError) as e:
        agent.create_cluster(clusterName="from-agent")
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "ecs:CreateCluster" in e.value.response["Error"]["Message"]


def test_retention_expires_inactive_clusters_and_deleted_task_definitions(tmp_path, unique):
    srv = start_server(tmp_path, "--retention-seconds", "0.5", "--retention-interval", "0.2")
    try:
        ecs = srv.client("ecs")
        ecs.create_cluster(clusterName=unique)
        ecs.delete_cluster(cluster=unique)
        ecs.register_task_definition(
            family=unique, containerDefinitions=[{"name": "c", "image": "i", "memory": 8}]
        )
        ecs.deregister_task_definition(taskDefinition=f"{unique}:1")
        ecs.delete_task_definitions(taskDefinitions=[f"{unique}:1"])

        def gone() -> bool:
            missing = ecs.describe_clusters(clusters=[unique])["failures"]
            try:
                ecs.describe_task_definition(taskDefinition=f"{unique}:1")
                return False
            except ClientError:
                return bool(missing)

        wait_until(gone, timeout=20, what="expiry of the INACTIVE cluster and the deleted revision")
        # revisions are never reused, even after the old one is gone
        out = ecs.register_task_definition(
            family=unique, containerDefinitions=[{"name": "c", "image": "i", "memory": 8}]
        )
        assert out["taskDefinition"]["revision"] == 2
    finally:
        srv.kill()


def test_state_survives_a_server_kill(fresh_server, unique):
    ecs = fresh_server.client("ecs")
    ecs.create_cluster(clusterName=unique)
    ecs.register_task_definition(
        family=unique, containerDefinitions=[{"name": "c", "image": "i", "memory": 8}]
    )
    fresh_server.kill()
    fresh_server.start()
    ecs = fresh_server.client("ecs")
    assert ecs.describe_clusters(clusters=[unique])["clusters"][0]["status"] == "ACTIVE"
    assert ecs.describe_task_definition(taskDefinition=unique)["taskDefinition"]["revision"] == 1
