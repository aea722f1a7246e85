"""A stand-in for the server side of docs/agent-protocol.md, in-process (aiohttp), for engine tests.

It keeps the desired set and merges reports like the protocol says (seq must grow; statuses never
move backwards; reports may ride a Poll; the agent's own reports are no news; each task definition
once per answer, in ``taskDefinitions``), without placement, signatures or a store. With
``embed_definitions`` it answers as a server before ``taskDefinitions`` did: the definition in
every task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dockyard.domain.task_status import TaskStatus

REGION, ACCOUNT = "us-east-1", "000000000000"


@dataclass
class FakeTask:
    wire: dict[str, Any]
    desired: str = "RUNNING"
    last: str = "PROVISIONING"
    seq: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)


class FakeControlPlane:
    def __init__(self, cluster: str = "test") -> None:
        self.cluster = cluster
        self.cluster_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}"
        self.instances: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, FakeTask] = {}
        self.revision = 1
        self.changed = asyncio.Condition()
        self.polls = 0
        self.polls_with_reports = 0
        self.poll_times: list[float] = []
        self.report_calls = 0
        self.report_batches: list[int] = []  # reports per call (Report or Poll)
        self.reports: list[dict[str, Any]] = []
        self.instance_status = "ACTIVE"
        self.fail_reports = False
        self.embed_definitions = False
        self._runner: web.AppRunner | None = None
        self.endpoint = ""

    async def start(self, extra_routes: list[web.RouteDef] | None = None) -> None:
        app = web.Application()
        app.router.add_post("/", self.handle)
        app.router.add_routes(extra_routes or [])
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.endpoint = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        await self.bump()  # answer the long-polls still waiting
        if self._runner is not None:
            await self._runner.cleanup()

    async def bump(self) -> None:
        async with self.changed:
            self.revision += 1
            self.changed.notify_all()

    # -- what a test does ----------------------------------------------------------------------

    async def run_task(self, definition: dict[str, Any], instance_arn: str, **extra: Any) -> str:
        task_id = uuid.uuid4().hex
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{self.cluster}/{task_id}"
        definition = {"family": "fam", "revision": 1, "taskDefinitionArn": f"td/{task_id}", **definition}
        wire = {
            "taskArn": arn,
            "clusterArn": self.cluster_arn,
            "desiredStatus": "RUNNING",
            "taskDefinition": definition,
            "overrides": extra.pop("overrides", {}),
            "cpu": definition.get("cpu"),
            "memory": definition.get("memory"),
            "containers": [{"name": c["name"]} for c in definition["containerDefinitions"]],
            "createdAt": 0.0,
            "reportedSeq": 0,
            "instance": instance_arn,
            **extra,
        }
        self.tasks[arn] = FakeTask(wire)
        await self.bump()
        return arn

    async def stop_task(self, arn: str) -> None:
        self.tasks[arn].desired = "STOPPED"
        await self.bump()

    def status(self, arn: str) -> str:
        return self.tasks[arn].last

    def container(self, arn: str, name: str) -> dict[str, Any]:
        for c in self.tasks[arn].report.get("containers") or ():
            if c["name"] == name:
                return dict(c)
        return {}

    # -- the protocol --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        body = json.loads(await request.read() or b"{}")
        op = target.rsplit(".", 1)[-1]
        handler = {"RegisterContainerInstance": self.register, "Poll": self.poll, "Report": self.report}.get(
            op
        )
        if handler is None:
            return web.json_response({"__type": "UnknownOperationException", "message": op}, status=400)
        if self.fail_reports and (op == "Report" or (op == "Poll" and body.get("reports"))):
            return web.json_response({"__type": "ServerException", "message": "down"}, status=500)
        if op == "Report":
            self.report_calls += 1
        return web.json_response(await handler(body))

    async def register(self, body: dict[str, Any]) -> dict[str, Any]:
        doc = json.loads(body["instanceIdentityDocument"])
        arn = body.get("containerInstanceArn") or (
            f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{self.cluster}/{uuid.uuid4().hex}"
        )
        self.instances[arn] = {**body, "ec2InstanceId": doc["instanceId"]}
        return {
            "containerInstance": {"containerInstanceArn": arn, "ec2InstanceId": doc["instanceId"]},
            "agentCredentials": {"accessKeyId": "AKIDAGENT", "secretAccessKey": "agent-secret"},
        }

    def desired_set(self, instance: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The instance's ``AgentTask``s and the task definitions they use, by ARN."""
        out, definitions = [], {}
        for t in self.tasks.values():
            if t.wire["instance"] != instance:
                continue
            if t.desired == "RUNNING" or t.last != "STOPPED":
                wire = {**t.wire, "desiredStatus": t.desired, "reportedSeq": t.seq}
                if not self.embed_definitions:
                    definition = wire.pop("taskDefinition")
                    wire["taskDefinitionArn"] = definition["taskDefinitionArn"]
                    definitions[definition["taskDefinitionArn"]] = definition
                out.append(wire)
        return out, definitions

    async def poll(self, body: dict[str, Any]) -> dict[str, Any]:
        self.polls += 1
        self.poll_times.append(asyncio.get_running_loop().time())
        results = None
        if body.get("reports"):  # reports riding the poll: applied first, results in the answer
            self.polls_with_reports += 1
            results = (await self.report(body))["results"]
        known = int(body.get("knownRevision") or 0)
        async with self.changed:
            if self.revision <= known:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), timeout=min(float(body["waitSeconds"]), 2.0))
        tasks, definitions = self.desired_set(body["containerInstanceArn"])
        answer: dict[str, Any] = {"revision": self.revision, "instanceStatus": self.instance_status}
        answer["tasks"] = tasks
        if not self.embed_definitions:
            answer["taskDefinitions"] = definitions
        if results is not None:
            answer["results"] = results
        return answer

    async def report(self, body: dict[str, Any]) -> dict[str, Any]:
        results = []
        for r in body["reports"]:
            t = self.tasks.get(r["taskArn"])
            if t is None or r["seq"] <= t.seq:
                results.append({"taskArn": r["taskArn"], "accepted": False})
                continue
            self.reports.append(r)
            t.seq = r["seq"]
            t.report = r
            if TaskStatus[r["status"]] > TaskStatus[t.last]:
                t.last = r["status"]
                t.history.append(r["status"])
            if r["status"] == "STOPPED" and t.desired != "STOPPED":
                t.desired = "STOPPED"  # leaves the set: the agent knows, no news (its revision stays)
            results.append({"taskArn": r["taskArn"], "accepted": True})
        self.report_batches.append(len(body["reports"]))
        return {"results": results, "revision": self.revision}
