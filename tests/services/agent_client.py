"""A small in-test agent: registers, polls and reports through real signed HTTP (no Docker).

It speaks docs/agent-protocol.md exactly as the real agent does, so the control plane's side can
be tested without containers: ``register()`` returns the agent credentials, ``poll()`` and
``report()`` use them, ``ecs()`` is a boto3 client signed with them.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import orjson

from tests.api.signing import signed_request
from tests.conftest import ServerProcess, start_server

AGENT_PREFIX = "DockyardAgentV1."
ECS_PREFIX = "AmazonEC2ContainerServiceV20141113."

# what a real agent advertises (placement checks task definitions' requiresAttributes against it)
CAPABILITIES = [
    *(f"com.amazonaws.ecs.capability.docker-remote-api.1.{n}" for n in range(17, 45)),
    "com.amazonaws.ecs.capability.logging-driver.json-file",
    "com.amazonaws.ecs.capability.logging-driver.awslogs",
    "com.amazonaws.ecs.capability.privileged-container",
    "com.amazonaws.ecs.capability.task-iam-role",
    "com.amazonaws.ecs.capability.task-iam-role-network-host",
    "ecs.capability.container-health-check",
    "ecs.capability.container-ordering",
    "ecs.capability.task-eni",
]


class AgentError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.code = str(body.get("__type", ""))
        self.message = str(body.get("message", ""))


@dataclass
class TestAgent:
    server: ServerProcess
    cluster: str
    cpu: int = 1024
    memory: int = 2048
    ports: list[str] | None = None
    attributes: dict[str, str | None] = field(default_factory=dict)
    instance_arn: str = ""
    access_key: str = ""
    secret_key: str = ""
    revision: int = 0
    _seq: dict[str, itertools.count[int]] = field(default_factory=dict)
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    __test__ = False  # not a pytest test class

    # ---- wire ---------------------------------------------------------------------------------

    def call(
        self, target: str, body: dict[str, Any], *, as_admin: bool = False, timeout: float = 30.0
    ) -> dict[str, Any]:
        key, secret = (
            (self.server.access_key, self.server.secret_key)
            if as_admin
            else (self.access_key, self.secret_key)
        )
        request = signed_request(
            self.server.endpoint, "", body, access_key=key, secret_key=secret, target=target
        )
        response = self._http.send(request)
        doc = orjson.loads(response.content) if response.content else {}
        if response.status_code != 200:
            raise AgentError(response.status_code, doc)
        return dict(doc)

    def close(self) -> None:
        self._http.close()

    # ---- registration -------------------------------------------------------------------------

    def registration_body(self, **extra: Any) -> dict[str, Any]:
        attributes = [{"name": n} for n in CAPABILITIES]
        attributes += [{"name": "ecs.os-type", "value": "linux"}]
        attributes += [
            {"name": k, "value": v} if v is not None else {"name": k} for k, v in self.attributes.items()
        ]
        body: dict[str, Any] = {
            "cluster": self.cluster,
            "totalResources": [
                {"name": "CPU", "type": "INTEGER", "integerValue": self.cpu},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": self.memory},
                {
                    "name": "PORTS",
                    "type": "STRINGSET",
                    "stringSetValue": self.ports if self.ports is not None else ["22", "2375", "2376"],
                },
                {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
            ],
            "versionInfo": {"agentVersion": "0.1.0", "agentHash": "test", "dockerVersion": "20.10"},
            "attributes": attributes,
            "instanceIdentityDocument": orjson.dumps(
                {
                    "instanceId": "i-0123456789abcdef0",
                    "privateIp": "127.0.0.1",
                    "availabilityZone": "local-1a",
                }
            ).decode(),
        }
        body.update(extra)
        return body

    def register(self, **extra: Any) -> dict[str, Any]:
        out = self.call(
            ECS_PREFIX + "RegisterContainerInstance", self.registration_body(**extra), as_admin=True
        )
        self.instance_arn = out["containerInstance"]["containerInstanceArn"]
        self.access_key = out["agentCredentials"]["accessKeyId"]
        self.secret_key = out["agentCredentials"]["secretAccessKey"]
        return out

    def ecs(self) -> Any:
        """A boto3 ECS client signed with this agent's credentials."""
        return boto3.client(
            "ecs",
            endpoint_url=self.server.endpoint,
            region_name=self.server.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    # ---- protocol -----------------------------------------------------------------------------

    def poll(self, known: int | None = None, wait: float = 0.0, **extra: Any) -> dict[str, Any]:
        body = {
            "cluster": self.cluster,
            "containerInstanceArn": self.instance_arn,
            "knownRevision": self.revision if known is None else known,
            "waitSeconds": wait,
            **extra,
        }
        out = self.call(AGENT_PREFIX + "Poll", body, timeout=wait + 30)
        self.revision = out["revision"]
        return out

    def next_seq(self, task_arn: str) -> int:
        return next(self._seq.setdefault(task_arn, itertools.count(1)))

    def report(self, *reports: dict[str, Any], instance_arn: str | None = None) -> list[dict[str, Any]]:
        body = {
            "cluster": self.cluster,
            "containerInstanceArn": instance_arn or self.instance_arn,
            "reports": list(reports),
        }
        return list(self.call(AGENT_PREFIX + "Report", body)["results"])

    def say(self, task_arn: str, status: str, **fields: Any) -> dict[str, Any]:
        """Report one task's status with the next sequence number; the result."""
        [result] = self.report(
            {"taskArn": task_arn, "seq": self.next_seq(task_arn), "status": status, **fields}
        )
        return result


@contextlib.contextmanager
def own_server_with_agent(
    tmp: Path, cluster: str, *server_args: str
) -> Iterator[tuple[ServerProcess, Any, TestAgent]]:
    """A server of the test's own (started with ``server_args``), a cluster and one registered
    ``TestAgent`` in it: (server, admin ECS client, agent); both stopped at the end."""
    srv = start_server(tmp, *server_args)
    agent: TestAgent | None = None
    try:
        ecs = srv.client("ecs")
        ecs.create_cluster(clusterName=cluster)
        agent = TestAgent(srv, cluster)
        agent.register()
        yield srv, ecs, agent
    finally:
        if agent is not None:
            agent.close()
        srv.stop()
