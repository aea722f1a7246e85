"""The agent's engine: desired tasks (from the server) against known containers (from the runtime).

    register (retry until the server and cluster answer; then sign with the agent's own key pair)
      |
      +-- poll loop:    Poll(knownRevision, pending reports) -> desired set -> one TaskRunner per
      |                 task (runner.py); after a new desired set it waits the report window, so the
      |                 reports of what it just started ride the next Poll
      +-- event pump:   runtime events (our label only) -> the task's runner queue; RESYNC -> re-list
      +-- reporter:     batched, sequenced reports; a Report of their own while a long-poll is out
      +-- checkpoint:   coalesced writes of every task's state (checkpoint.py)
      +-- cleanup:      stopped tasks' containers and task volumes removed after --task-cleanup-wait

Restart: the checkpoint and the runtime's containers labelled with this instance are reconciled
against the first desired set. A task still desired is re-adopted (its containers inspected, never
created twice: names are fixed); one that is no longer desired is stopped; a container that vanished
is STOPPED. Tasks that finished are never started again, even if the server still lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.agent import task_spec
from dockyard.agent.cgroups import TaskCgroups
from dockyard.agent.checkpoint import Checkpoint, CheckpointWriter, load_task
from dockyard.agent.images import ImagePuller
from dockyard.agent.networking.rules import start_networking
from dockyard.agent.ports import PortAllocator
from dockyard.agent.registration import HostFacts
from dockyard.agent.reporter import DEFAULT_WINDOW, Reporter, ReportStats, task_report
from dockyard.agent.runner import Resync, RunnerContext, TaskRunner
from dockyard.agent.runtime.base import (
    LABEL_INSTANCE,
    LABEL_STOP_TIMEOUT,
    LABEL_TASK_ARN,
    ContainerRuntime,
    EventKind,
    Observation,
    PullBehavior,
    RuntimeError_,
    State,
)
from dockyard.agent.runtime.docker_config import DOCKER_BRIDGE
from dockyard.agent.task_state import TaskState
from dockyard.client.ecs import ApiError, ClientError, EcsClient
from dockyard.client.sigv4 import Credentials
from dockyard.domain.task_status import TaskStatus

log = logging.getLogger("dockyard.agent")

_REREGISTER = frozenset(
    {
        "UnrecognizedClientException",
        "AccessDeniedException",
        "InvalidSignatureException",
        "ClusterNotFoundException",
    }
)


@dataclass
class AgentSettings:
    server: str
    cluster: str
    state_dir: Path
    region: str
    credentials: Credentials
    cpu_units: int | None = None
    memory_mib: int | None = None
    memory_reserve_mib: int = 256
    awsvpc_tasks: int | None = None  # the ENI resource: awsvpc tasks this instance takes
    attributes: dict[str, str] = field(default_factory=dict)
    availability_zone: str | None = None
    allow_privileged: bool = False
    pull_behavior: PullBehavior = PullBehavior.DEFAULT
    port_range: tuple[int, int] = (61000, 65535)
    bind_address: str = "127.0.0.1"
    bridge_network: str = DOCKER_BRIDGE  # bridge-mode tasks' Docker network
    default_stop_timeout: int = task_spec.DEFAULT_STOP_TIMEOUT
    task_cleanup_wait: float = 3600.0
    poll_wait: float = 20.0
    cgroup_root: Path | None = Path("/sys/fs/cgroup")
    report_window: float = DEFAULT_WINDOW  # seconds reports gather before they are sent
    report_at_once: bool = False  # a Report leaves at once when none left within the window
    poll_interval: float = 0.0  # at least this long between two desired sets acted on (0: none)
    reports_on_poll: bool = True  # pending reports ride the next Poll (docs/agent-protocol.md s. 3)
    session: bool = True  # Poll and Report over one WebSocket (docs/agent-protocol.md s. 8)
    checkpoint_tasks: bool = True  # False (hollow agents): only the instance's identity is saved
    checkpoint_sync: bool = True  # fsync each checkpoint write


@dataclass
class _Finished:
    seq: int
    cleanup_at: float
    report: dict[str, Any] | None
    acked: bool = False
    rejected: bool = False
    task: TaskState | None = None


class Engine:
    def __init__(
        self,
        settings: AgentSettings,
        runtime: ContainerRuntime,
        client: EcsClient | None = None,
        *,
        stats: ReportStats | None = None,
        registration_gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.client = client or EcsClient(
            settings.server, settings.credentials, settings.region, agent_session=settings.session
        )
        self.stats = stats if stats is not None else ReportStats()
        self._gate = registration_gate
        self.checkpoint = Checkpoint.load(settings.state_dir, sync=settings.checkpoint_sync)
        self.writer = CheckpointWriter(self.checkpoint, tasks=settings.checkpoint_tasks)
        self.instance_arn: str = ""
        self.cluster_arn: str = ""
        self.revision = 0
        self.runners: dict[str, TaskRunner] = {}
        self.finished: dict[str, _Finished] = {}
        self.registered = asyncio.Event()
        self._connected = asyncio.Event()
        self._at_start: dict[str, list[Observation]] = {}
        self._first_set = True
        self._jobs: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.reporter: Reporter | None = None
        self.ctx: RunnerContext | None = None
        self._poll_now: asyncio.Future[None] | None = None  # resolved: end the report window early

    @property
    def instance_id(self) -> str:
        return str(self.checkpoint.instance["instanceId"])

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled, or until the instance is deregistered and its tasks stopped."""
        background: list[asyncio.Task[Any]] = [asyncio.create_task(self.writer.run())]
        try:
            await self.register()
            self.reporter = Reporter(
                self.client,
                cluster_arn=self.cluster_arn,
                instance_arn=self.instance_arn,
                on_result=self._report_result,
                on_revision=self._server_revision,
                window=self.settings.report_window,
                stats=self.stats,
                at_once=self.settings.report_at_once,
            )
            self.ctx = self._context()
            self.ctx.networking = await start_networking(  # awsvpc (agent/networking/)
                self.runtime,
                self.client,
                self.cluster_arn,
                self.instance_arn,
                warm=self.settings.awsvpc_tasks != 0,  # the warm pause-container pool fills now
            )
            if self.ctx.networking is not None:
                background.append(asyncio.create_task(self.ctx.networking.run()))
            background.append(asyncio.create_task(self.reporter.run()))
            background.append(asyncio.create_task(self._pump_events()))
            await self._connected.wait()
            await self._list_at_start()
            self._load_finished()
            background.append(asyncio.create_task(self._cleanup_loop()))
            await self._poll_loop()
            await asyncio.wait_for(self.reporter.drained(), timeout=10)
        finally:
            for job in [*background, *self._jobs]:
                job.cancel()
            await asyncio.gather(*background, *self._jobs, return_exceptions=True)
            self.writer.flush()

    def _context(self) -> RunnerContext:
        s = self.settings
        cgroups = TaskCgroups(s.cgroup_root) if s.cgroup_root is not None else None
        return RunnerContext(
            runtime=self.runtime,
            puller=ImagePuller(self.runtime, s.pull_behavior, self.checkpoint.pulled_images),
            ports=PortAllocator(s.port_range[0], s.port_range[1], s.bind_address),
            cgroups=cgroups,
            instance_arn=self.instance_arn,
            publish=self._publish,
            allow_privileged=s.allow_privileged,
            default_stop_timeout=s.default_stop_timeout,
            bridge_network=s.bridge_network,
        )

    async def register(self) -> None:
        s = self.settings
        try:
            docker_version = await self.runtime.version()
        except Exception as e:  # the runtime may come up later; registration must not wait for it
            log.warning("container runtime version unknown: %s", e)
            docker_version = ""
        api_version = "1.41"
        facts = HostFacts(
            cluster=s.cluster,
            instance_id=self.instance_id,
            region=s.region,
            cpu_units=s.cpu_units,
            memory_mib=s.memory_mib,
            memory_reserve_mib=s.memory_reserve_mib,
            awsvpc_tasks=s.awsvpc_tasks,
            availability_zone=s.availability_zone,
            attributes=s.attributes,
            address=s.bind_address,
            docker_version=docker_version,
            docker_api_version=api_version,
        )
        self.client.credentials = s.credentials
        delay = 0.2
        while True:
            try:
                async with self._gate or contextlib.nullcontext():
                    answer = await self.client.register_container_instance(
                        facts.request(self.checkpoint.instance.get("containerInstanceArn"))
                    )
                break
            except ClientError as e:
                log.warning("registration with %s failed (retrying in %.1fs): %s", s.server, delay, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        instance = answer.get("containerInstance") or {}
        self.instance_arn = str(instance["containerInstanceArn"])
        prefix, _, rest = self.instance_arn.partition(":container-instance/")
        self.cluster_arn = f"{prefix}:cluster/{rest.split('/', 1)[0]}" if "/" in rest else s.cluster
        creds = answer.get("agentCredentials") or {}
        if creds.get("accessKeyId"):
            self.client.credentials = Credentials(creds["accessKeyId"], creds["secretAccessKey"])
        self.checkpoint.instance.update(
            containerInstanceArn=self.instance_arn, clusterArn=self.cluster_arn, cluster=s.cluster
        )
        self.writer.flush()
        if self.ctx is not None:
            self.ctx.instance_arn = self.instance_arn
        if self.reporter is not None:
            self.reporter.instance_arn, self.reporter.cluster_arn = self.instance_arn, self.cluster_arn
        self.registered.set()
        log.info("registered %s (%s) in %s", self.instance_arn, self.instance_id, self.cluster_arn)

    # -- the desired set -------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        assert self.reporter is not None
        reporter = self.reporter
        loop = asyncio.get_running_loop()
        delay = 0.2
        carry = self.settings.reports_on_poll
        while True:
            body: dict[str, Any] = {
                "cluster": self.cluster_arn,
                "containerInstanceArn": self.instance_arn,
                "knownRevision": self.revision,
                "waitSeconds": self.settings.poll_wait,
            }
            reports = reporter.take() if carry else []
            if reports:
                body["reports"] = reports
            try:
                answer = await self.client.poll(body, self.settings.poll_wait)
                delay = 0.2
            except ClientError as e:
                self.stats.errors += 1
                reporter.settle(reports, None)
                carry = False  # the next poll goes bare: a report the server refuses never blocks polls
                if isinstance(e, ApiError) and e.code in _REREGISTER:
                    log.warning("poll refused: %s", e)
                    await self.register()
                    self.revision = 0
                else:
                    log.warning("poll failed (retrying in %.1fs): %s", delay, e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                continue
            carry = self.settings.reports_on_poll
            answered = loop.time()
            self.stats.polls += 1
            reporter.settle(reports, answer, by_poll=True)
            revision = int(answer.get("revision") or 0)
            news = revision != self.revision
            self.revision = revision
            self.apply(answer)
            del answer  # applied: freed now, not when the next answer replaces it (a long-poll later)
            if self._stopping and not self.runners:
                log.info("instance deregistered; all tasks stopped")
                return
            if not news:
                continue
            if carry and (self.settings.report_window > 0 or self.settings.poll_interval > 0):
                reporter.hold()  # until the next poll takes them: what the runners publish meanwhile rides it
            if carry and self.settings.report_window > 0:
                await self._window()
            if self.settings.poll_interval > 0:
                await asyncio.sleep(max(0.0, answered + self.settings.poll_interval - loop.time()))

    async def _window(self) -> None:
        """After a new desired set: wait until every runner settled (so the next poll carries what
        they report), at most the report window; a Report answer showing news ends it too."""
        if self._settled():
            return
        loop = asyncio.get_running_loop()
        self._poll_now = wake = loop.create_future()
        timer = loop.call_later(self.settings.report_window, _resolve, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._poll_now = None

    def _server_revision(self, revision: int) -> None:
        """A Report answer's desired-set revision: newer than ours means the server has news."""
        if revision > self.revision and self._poll_now is not None:
            _resolve(self._poll_now)

    def apply(self, answer: dict[str, Any]) -> None:
        """Apply one desired set (docs/agent-protocol.md, section 2)."""
        seen: set[str] = set()
        inactive = answer.get("instanceStatus") == "INACTIVE"
        definitions = answer.get("taskDefinitions") or {}
        for wire in answer.get("tasks") or ():
            arn = str(wire["taskArn"])
            seen.add(arn)
            running = wire.get("desiredStatus") == "RUNNING" and not inactive
            desired = TaskStatus.RUNNING if running else TaskStatus.STOPPED
            reported = int(wire.get("reportedSeq") or 0)
            runner = self.runners.get(arn)
            if runner is not None:
                runner.desire(desired, reported)  # (a no-op when unchanged, as it mostly is)
            elif arn in self.finished:
                self._resend_final(arn, reported)
            else:
                self._start_runner(wire, definitions, desired, reported)
        for arn, runner in self.runners.items():
            if arn not in seen:
                runner.desire(TaskStatus.STOPPED)
        if inactive:
            self._stopping = True
            for runner in self.runners.values():
                runner.desire(TaskStatus.STOPPED)
        if self._first_set:
            self._first_set = False
            self._stop_strays(seen)
            if self.ctx is not None and self.ctx.networking is not None:  # awsvpc: leftovers go
                self.ctx.networking.keep_only(answer.get("tasks") or ())

    def _start_runner(
        self, wire: dict[str, Any], definitions: dict[str, Any], desired: TaskStatus, reported_seq: int
    ) -> None:
        """A runner for a task new to this run: from its checkpoint if it has one, else from the
        answer, its task definition (``definitions``: the answer's, by ARN) embedded again, so that
        the task's state and its checkpoint hold the ``AgentTask`` in one piece."""
        assert self.ctx is not None
        arn = str(wire["taskArn"])
        doc = self.checkpoint.tasks.get(arn)
        if not doc and "taskDefinitionArn" in wire:  # (else a server that still embeds it)
            wire = {**wire, "taskDefinition": definitions.get(wire["taskDefinitionArn"])}
        task = load_task(doc) if doc else task_spec.task_from_wire(wire)
        task.seq = max(task.seq, reported_seq)
        if desired is not TaskStatus.RUNNING:
            task.request_stop(None, None)
        adopt = doc is not None or arn in self._at_start
        self._spawn(TaskRunner(task, self.ctx, adopt=adopt))

    def _spawn(self, runner: TaskRunner) -> None:
        arn = runner.task.arn
        self.runners[arn] = runner
        job = asyncio.create_task(self._supervise(runner))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _supervise(self, runner: TaskRunner) -> None:
        arn = runner.task.arn
        try:
            await runner.run()
        except Exception:
            log.exception("runner of task %s failed", arn)
            raise
        finally:
            self.runners.pop(arn, None)
        task = runner.task
        cleanup_at = time.time() + self.settings.task_cleanup_wait
        self.writer.put_task(task, cleanup_at)
        self.finished[arn] = _Finished(
            seq=task.seq, cleanup_at=cleanup_at, report=task_report(task), task=task
        )

    def _stop_strays(self, desired: set[str]) -> None:
        """After a restart: containers and checkpointed tasks the server no longer wants."""
        assert self.ctx is not None
        for arn, doc in list(self.checkpoint.tasks.items()):
            if arn in desired or arn in self.runners or arn in self.finished:
                continue
            task = load_task(doc)
            task.request_stop(None, None)
            self._spawn(TaskRunner(task, self.ctx, adopt=True))
        for arn, found in self._at_start.items():
            if not arn or arn in desired or arn in self.runners or arn in self.finished:
                continue
            job = asyncio.create_task(self._stop_orphans(arn, found))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)

    async def _stop_orphans(self, arn: str, found: list[Observation]) -> None:
        """Containers of a task this agent has no record of: stop them, remove them later."""
        log.info("stopping %d container(s) of task %s, which is no longer desired", len(found), arn)

        async def stop(o: Observation) -> None:
            if o.state is State.RUNNING:
                timeout = int(o.labels.get(LABEL_STOP_TIMEOUT) or self.settings.default_stop_timeout)
                with contextlib.suppress(RuntimeError_):
                    await self.runtime.stop(o.id, timeout)

        await asyncio.gather(*(stop(o) for o in found))
        if self.ctx is not None and self.ctx.cgroups is not None:
            await self.ctx.cgroups.remove(arn.rsplit("/", 1)[-1])
        self.finished[arn] = _Finished(
            seq=0, cleanup_at=time.time() + self.settings.task_cleanup_wait, report=None, acked=True
        )

    # -- reports -----------------------------------------------------------------------------------

    def _publish(self, task: TaskState, report: dict[str, Any]) -> None:
        assert self.reporter is not None
        self.reporter.submit(report)
        self.writer.put_task(task)
        if self._poll_now is not None and self._settled(self.runners.get(task.arn)):
            _resolve(self._poll_now)

    def _settled(self, first: TaskRunner | None = None) -> bool:
        """Every runner settled. The likeliest not to be are asked first: ``first`` (the one that
        just published), then the newest."""
        if first is not None and not first.settled:
            return False
        return all(r.settled for r in reversed(self.runners.values()))

    def _report_result(self, arn: str, seq: int, accepted: bool) -> None:
        runner = self.runners.get(arn)
        if runner is not None:
            runner.report_result(seq, accepted)
            return
        fin = self.finished.get(arn)
        if fin is not None and seq >= fin.seq:
            fin.acked = True
            fin.rejected = not accepted

    def _resend_final(self, arn: str, reported_seq: int) -> None:
        """The server still lists a task that finished here: make sure it has the final report."""
        fin = self.finished[arn]
        if fin.report is None or self.reporter is None:
            return
        if reported_seq < fin.seq and fin.acked:
            fin.acked = False
            self.reporter.submit(fin.report)
        elif fin.rejected and reported_seq >= fin.seq:
            fin.seq = reported_seq + 1
            fin.report = {**fin.report, "seq": fin.seq}
            fin.rejected = fin.acked = False
            self.reporter.submit(fin.report)

    # -- runtime events ----------------------------------------------------------------------------

    async def _pump_events(self) -> None:
        first = True
        async for ev in self.runtime.events({LABEL_INSTANCE: self.instance_arn}):
            if ev.kind is EventKind.RESYNC:
                if first:
                    first = False
                    self._connected.set()
                else:
                    await self._resync_all()
                continue
            runner = self.runners.get(ev.labels.get(LABEL_TASK_ARN, ""))
            if runner is not None:
                runner.send(ev)

    async def _list_at_start(self) -> None:
        for o in await self.runtime.list({LABEL_INSTANCE: self.instance_arn}):
            self._at_start.setdefault(o.labels.get(LABEL_TASK_ARN, ""), []).append(o)

    async def _resync_all(self) -> None:
        try:
            found = await self.runtime.list({LABEL_INSTANCE: self.instance_arn})
        except RuntimeError_ as e:
            log.warning("re-listing containers failed: %s", e)
            return
        grouped: dict[str, list[Observation]] = {}
        for o in found:
            grouped.setdefault(o.labels.get(LABEL_TASK_ARN, ""), []).append(o)
        for arn, runner in self.runners.items():
            runner.send(Resync(tuple(grouped.get(arn, ()))))

    # -- cleanup -----------------------------------------------------------------------------------

    def _load_finished(self) -> None:
        for arn, doc in self.checkpoint.tasks.items():
            if doc.get("knownStatus") == "STOPPED":
                task = load_task(doc)
                self.finished[arn] = _Finished(
                    seq=task.seq,
                    cleanup_at=float(doc.get("cleanupAt") or time.time()),
                    report=task_report(task),
                    acked=True,
                    task=task,
                )

    async def _cleanup_loop(self) -> None:
        interval = max(0.5, min(30.0, self.settings.task_cleanup_wait / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.time()
            for arn, fin in list(self.finished.items()):
                if fin.cleanup_at <= now and fin.acked:
                    await self._remove_task(arn, fin)

    async def _remove_task(self, arn: str, fin: _Finished) -> None:
        try:
            for o in await self.runtime.list({LABEL_TASK_ARN: arn, LABEL_INSTANCE: self.instance_arn}):
                await self.runtime.remove(o.id)
            if fin.task is not None:
                needed, _ = task_spec.volumes(fin.task)
                for volume in needed:
                    if volume.name.startswith(f"dockyard-{fin.task.task_id}-"):  # task-scoped
                        await self.runtime.remove_volume(volume.name)
        except RuntimeError_ as e:
            log.warning("cleanup of task %s failed (will retry): %s", arn, e)
            return
        self.finished.pop(arn, None)
        self.writer.forget(arn)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
