"""One runner per task: the only owner of its ``TaskState``, reading one queue.

    queue --> apply(message) --> decide (transitions.next_step per container) --> act --> publish
               Desired            a step's action runs as an asyncio task whose outcome
               RuntimeEvent       comes back on the queue as ``ActionDone`` (a pull of an image
               ActionDone         known to be cached needs no task: done at once); Docker
               Resync             events (start, die, oom, health_status, destroy) move known
               ReportResult       statuses, never backwards

Before the first container: the unsupported-feature check, the dependency graph check, the task
cgroup (limits), host ports, the bridge network and volumes. After the last container stopped:
ports released, cgroup removed, the final report published; the containers stay (for
``dockyard logs``) until the engine's cleanup removes them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dockyard.agent import dependencies, task_spec
from dockyard.agent.cgroups import OOM_REASON, OomCounters, TaskCgroups, oom_verdict
from dockyard.agent.images import ImagePuller
from dockyard.agent.networking.pause import NetworkSetupError
from dockyard.agent.networking.rules import TaskNetworking
from dockyard.agent.ports import NoPortsAvailable, PortAllocator
from dockyard.agent.reporter import task_report
from dockyard.agent.runtime.base import (
    LABEL_CONTAINER_NAME,
    LABEL_INSTANCE,
    LABEL_TASK_ARN,
    ContainerRuntime,
    EventKind,
    ImageMissing,
    Observation,
    PortBinding,
    PullError,
    RuntimeError_,
    RuntimeEvent,
    State,
)
from dockyard.agent.runtime.docker_config import DOCKER_BRIDGE
from dockyard.agent.task_state import ContainerPhase, ContainerState, TaskState
from dockyard.agent.transitions import Action, next_step, stop_decision, task_health, task_status
from dockyard.domain.task_status import HealthStatus, StopCode, TaskStatus

log = logging.getLogger("dockyard.agent.runner")

VANISHED = "DockerContainerVanished: the container was removed while its task was running"
_HEALTH = {"healthy": HealthStatus.HEALTHY, "unhealthy": HealthStatus.UNHEALTHY}


@dataclass(frozen=True)
class Desired:
    status: TaskStatus
    reported_seq: int = 0


@dataclass(frozen=True)
class ActionDone:
    container: str
    action: Action
    error: str | None = None
    runtime_id: str | None = None
    observation: Observation | None = None


@dataclass(frozen=True)
class Resync:
    observations: tuple[Observation, ...]


@dataclass(frozen=True)
class ReportResult:
    seq: int
    accepted: bool


Message = Desired | ActionDone | Resync | ReportResult | RuntimeEvent


@dataclass
class RunnerContext:
    """What every runner shares (read-mostly; each runner only touches its own task's entries)."""

    runtime: ContainerRuntime
    puller: ImagePuller
    ports: PortAllocator
    cgroups: TaskCgroups | None
    instance_arn: str
    publish: Callable[[TaskState, dict[str, Any]], None]  # the task and its report (task_report)
    allow_privileged: bool = False
    networking: TaskNetworking | None = None  # awsvpc (agent/networking/); None: awsvpc tasks fail
    default_stop_timeout: int = task_spec.DEFAULT_STOP_TIMEOUT
    bridge_network: str = DOCKER_BRIDGE  # the Docker network of bridge-mode tasks
    now: Callable[[], float] = time.time


@dataclass
class _Flight:
    busy: set[str] = field(default_factory=set)  # containers with an action in flight
    stop_requested: set[str] = field(default_factory=set)
    oom_seen: set[str] = field(default_factory=set)
    oom_before: dict[str, OomCounters | None] = field(default_factory=dict)
    pulls_open: int = 0


class TaskRunner:
    def __init__(self, task: TaskState, ctx: RunnerContext, *, adopt: bool = False) -> None:
        self.task = task
        self.ctx = ctx
        self.adopt = adopt
        self._inbox: deque[Message] = deque()  # the runner's queue (``send``)
        self._wake: asyncio.Future[None] | None = None  # set while the runner waits for a message
        self._flight = _Flight()
        self._actions: set[asyncio.Task[None]] = set()
        self._plan: dict[str, list[PortBinding]] = {}
        self._volume_sources: dict[str, tuple[str, bool]] = {}
        self._cgroup_parent: str | None = None
        self._pause: str | None = None  # awsvpc: the container holding the task's namespace
        self._last_report: dict[str, object] | None = None
        self._resend = False
        self._desired: tuple[TaskStatus, int] | None = None  # the last desired state seen (desire)
        self._decided = False

    def send(self, message: Message) -> None:
        self._inbox.append(message)
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    def _message(self) -> asyncio.Future[None]:
        """Resolved by the next ``send`` (a future, awaited by the loop itself: no coroutine)."""
        self._wake = asyncio.get_running_loop().create_future()
        return self._wake

    def desire(self, status: TaskStatus, reported_seq: int = 0) -> None:
        """Hand over the server's desired state, unless it is the last one seen (every poll answer
        repeats the whole set) or would change nothing (``_no_news``: mostly the server
        acknowledging a report), and no rejected report waits for it."""
        if self._desired != (status, reported_seq) or self._resend:
            self._desired = (status, reported_seq)
            if self._resend or not self._no_news(status, reported_seq):
                self.send(Desired(status, reported_seq))

    def _no_news(self, status: TaskStatus, reported_seq: int) -> bool:
        """``Desired(status, reported_seq)`` would change nothing once applied (``_apply``), whatever
        is queued before it: a seq the task already reached (it only grows), no stop to request
        (desired STOPPED never turns back) and no rejected report waiting for the server's seq."""
        task = self.task
        return (
            reported_seq <= task.seq
            and (status is TaskStatus.RUNNING or task.desired is TaskStatus.STOPPED)
            and not self._resend
            and not (self._inbox and any(isinstance(m, ReportResult) for m in self._inbox))
        )

    def report_result(self, seq: int, accepted: bool) -> None:
        """What the server did with report ``seq``. Only a rejection asks anything of the runner
        (a resend once the server's seq is known); an acceptance is not worth a wake-up."""
        if not accepted:
            self.send(ReportResult(seq, accepted))

    @property
    def finished(self) -> bool:
        return self.task.known is TaskStatus.STOPPED

    @property
    def settled(self) -> bool:
        """Nothing left to do until something happens: it decided at least once, no action is in
        flight and no message waits (what it would report next depends on the outside world)."""
        return self._decided and not self._flight.busy and not self._inbox

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.adopt:
                await self._adopt()
            if not self.finished:
                await self._prepare()
            while True:
                self._decide()
                self._publish()
                if self.finished and not self._flight.busy:
                    break
                while True:  # until a message changes something (else the last decision stands)
                    if not self._inbox:
                        await self._message()
                    elif self._apply(self._inbox.popleft()):
                        break
            await self._teardown()
        finally:
            for t in self._actions:
                t.cancel()

    def _apply(self, msg: Message) -> bool:
        """Take in one message; False when it certainly changed nothing (no new decision needed)."""
        task = self.task
        if isinstance(msg, Desired):  # mostly the server acknowledging a report: no news
            changed = msg.reported_seq > task.seq
            task.seq = max(task.seq, msg.reported_seq)
            if self._resend and msg.reported_seq >= task.seq:
                self._last_report = None  # publish again with a seq above the server's
                self._resend = False
                changed = True
            if msg.status is not TaskStatus.RUNNING:
                changed |= task.request_stop(None, None)
            return changed
        elif isinstance(msg, ActionDone):
            self._done(msg)
        elif isinstance(msg, Resync):
            self._resync(msg.observations)
        elif isinstance(msg, ReportResult):
            if not msg.accepted and msg.seq == task.seq:
                self._resend = True
        else:
            return self._event(msg)
        return True

    def _decide(self) -> None:
        task = self.task
        changed = True
        while changed:
            changed = False
            decision = stop_decision(task)
            if decision is not None:
                task.request_stop(decision.stop_code, decision.reason)
            for c in task.containers.values():
                if c.name in self._flight.busy:
                    continue
                step = next_step(c, task.desired, task.containers)
                if step.action is Action.NONE:
                    if step.next is ContainerPhase.STOPPED:
                        changed |= c.observe(ContainerPhase.STOPPED)
                elif step.action is Action.ABORT:
                    c.reason = c.reason or step.reason
                    changed |= c.observe(ContainerPhase.STOPPED)
                else:
                    self._launch(c, step.action)
        task.known = task_status(task)
        task.health = task_health(task.containers.values())
        if task.known is TaskStatus.RUNNING and task.started_at is None:
            task.started_at = max((c.started_at or 0.0) for c in task.containers.values()) or self.ctx.now()
        if task.known is TaskStatus.STOPPED and task.execution_stopped_at is None:
            ends = [c.finished_at for c in task.containers.values() if c.finished_at]
            task.execution_stopped_at = max(ends) if ends else self.ctx.now()
            if task.stop_code is None and task.started_at is None and task.stopped_reason:
                task.stop_code = StopCode.TASK_FAILED_TO_START

    def _publish(self) -> None:
        self._decided = True
        body = task_report(self.task, with_seq=False)
        if body == self._last_report:
            return
        self.task.seq += 1
        self._last_report = body
        self.ctx.publish(self.task, {**body, "seq": self.task.seq})

    # -- preparing and finishing ---------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        self.task.request_stop(StopCode.TASK_FAILED_TO_START, reason)
        self.task.stop_code = self.task.stop_code or StopCode.TASK_FAILED_TO_START

    async def _prepare(self) -> None:
        task = self.task
        if task.desired is not TaskStatus.RUNNING:
            self._plan = {c.name: _bindings_of(c) for c in task.containers.values()}
            return
        reason = task_spec.unsupported(task, allow_privileged=self.ctx.allow_privileged)
        if reason is None:
            problem = dependencies.validate(c.definition for c in task.containers.values())
            reason = f"ResourceInitializationError: {problem}" if problem else None
        if reason is not None:
            self._fail(reason)
            return
        try:
            cgroups = self.ctx.cgroups
            if cgroups is not None and cgroups.available:
                cgroups.create(task.task_id, memory_mib=task.memory, cpu_units=task.cpu)
                self._cgroup_parent = cgroups.parent(task.task_id)
            held = {c.name: _bindings_of(c) for c in task.containers.values() if c.network_bindings}
            self._plan = task_spec.port_plan(task, self.ctx.ports, held)
            bridge = self.ctx.bridge_network
            if task.definition.effective_network_mode.value == "bridge" and bridge != DOCKER_BRIDGE:
                await self.ctx.runtime.ensure_network(bridge)  # Docker's own always exists
            needed, self._volume_sources = task_spec.volumes(task)
            for volume in needed:
                await self.ctx.runtime.ensure_volume(volume)
            if task.definition.effective_network_mode.value == "awsvpc":
                await self._attach_interface()
        except (OSError, NoPortsAvailable, RuntimeError_, NetworkSetupError) as e:
            self._fail(f"ResourceInitializationError: {e}")

    async def _attach_interface(self) -> None:
        """awsvpc: the task's namespace and address (PROVISIONING), before any container."""
        eni = self.task.wire.get("networkInterface")
        if self.ctx.networking is None or not eni:
            raise NetworkSetupError("this container instance cannot provide the awsvpc network mode")
        attached = await self.ctx.networking.setup(self.task.arn, eni, adopt=self.adopt)
        self._pause = attached.pause_id

    async def _adopt(self) -> None:
        """After a restart: what the runtime shows for this task's containers is the truth."""
        labels = {LABEL_TASK_ARN: self.task.arn, LABEL_INSTANCE: self.ctx.instance_arn}
        try:
            found = await self.ctx.runtime.list(labels)
        except RuntimeError_ as e:
            log.warning("task %s: could not list its containers: %s", self.task.arn, e)
            return
        self._resync(tuple(found))

    async def _teardown(self) -> None:
        self.ctx.ports.release(self.task.arn)
        if self.ctx.networking is not None:
            # DEPROVISIONING: the interface goes (a previous run's too, if this run never adopted it)
            self.ctx.networking.teardown(self.task.arn, self.task.wire.get("networkInterface"))
        if self.ctx.cgroups is not None and self.ctx.cgroups.available:
            await self.ctx.cgroups.remove(self.task.task_id)

    # -- actions -------------------------------------------------------------------------------

    def _launch(self, c: ContainerState, action: Action) -> None:
        self._flight.busy.add(c.name)
        if action is Action.PULL:
            self._flight.pulls_open += 1
            if self.task.pull_started_at is None:
                self.task.pull_started_at = self.ctx.now()
            if self.ctx.puller.cached(c.definition.image):  # done at once: no task to run it
                self.send(ActionDone(c.name, action))
                return
        elif action is Action.STOP:
            self._flight.stop_requested.add(c.name)
        elif action is Action.START and self.ctx.cgroups is not None:
            self._flight.oom_before[c.name] = self.ctx.cgroups.counters(self.task.task_id)
        job = asyncio.create_task(self._act(c, action))
        self._actions.add(job)
        job.add_done_callback(self._actions.discard)

    async def _act(self, c: ContainerState, action: Action) -> None:
        runtime = self.ctx.runtime
        try:
            if action is Action.PULL:
                await self.ctx.puller.ensure(c.definition.image)
                self.send(ActionDone(c.name, action))
            elif action is Action.CREATE:
                spec = task_spec.container_spec(
                    self.task,
                    c,
                    instance_arn=self.ctx.instance_arn,
                    cgroup_parent=self._cgroup_parent,
                    bindings=self._plan.get(c.name, []),
                    volume_sources=self._volume_sources,
                    default_stop_timeout=self.ctx.default_stop_timeout,
                    pause=self._pause,
                    bridge_network=self.ctx.bridge_network,
                )
                self.send(ActionDone(c.name, action, runtime_id=await runtime.create(spec)))
            elif action is Action.START:
                assert c.runtime_id is not None
                await runtime.start(c.runtime_id)
                self.send(ActionDone(c.name, action))
            elif action is Action.STOP:
                assert c.runtime_id is not None
                timeout = task_spec.stop_timeout(c, self.ctx.default_stop_timeout)
                await runtime.stop(c.runtime_id, timeout)
                self.send(ActionDone(c.name, action, observation=await runtime.inspect(c.runtime_id)))
        except PullError as e:
            self.send(ActionDone(c.name, action, error=f"CannotPullContainerError: {e}"))
        except ImageMissing as e:  # removed since it was checked: the next task checks again
            self.ctx.puller.forget(c.definition.image)
            self.send(ActionDone(c.name, action, error=f"CannotCreateContainerError: {e}"))
        except RuntimeError_ as e:
            prefix = {
                Action.CREATE: "CannotCreateContainerError",
                Action.START: "CannotStartContainerError",
                Action.STOP: "CannotStopContainerError",
            }.get(action, "ResourceInitializationError")
            self.send(ActionDone(c.name, action, error=f"{prefix}: {e}"))
        except Exception as e:  # an action must always answer, or its container stays busy forever
            log.exception("task %s container %s: %s failed", self.task.arn, c.name, action)
            self.send(ActionDone(c.name, action, error=f"{type(e).__name__}: {e}"))

    def _done(self, msg: ActionDone) -> None:
        c = self.task.containers[msg.container]
        self._flight.busy.discard(c.name)
        if msg.action is Action.PULL:
            self._flight.pulls_open -= 1
            if self._flight.pulls_open == 0:
                self.task.pull_stopped_at = self.ctx.now()
        if msg.error is not None:
            if msg.action is Action.STOP:
                log.warning("task %s: %s", self.task.arn, msg.error)
                self._flight.stop_requested.discard(c.name)  # tried again on the next decision
                return
            c.reason = c.reason or msg.error
            c.observe(ContainerPhase.STOPPED)
            return
        if msg.action is Action.PULL:
            c.observe(ContainerPhase.PULLED)
        elif msg.action is Action.CREATE:
            c.runtime_id = msg.runtime_id
            c.observe(ContainerPhase.CREATED)
        elif msg.action is Action.START:
            if c.observe(ContainerPhase.RUNNING):
                c.started_at = c.started_at or self.ctx.now()
                c.network_bindings = [b.to_wire() for b in self._plan.get(c.name, [])]
        elif msg.action is Action.STOP and msg.observation is not None:
            self._observed(c, msg.observation)

    # -- observations --------------------------------------------------------------------------

    def _container_for(self, runtime_id: str, labels: Mapping[str, str]) -> ContainerState | None:
        for c in self.task.containers.values():
            if c.runtime_id == runtime_id:
                return c
        named = self.task.containers.get(labels.get(LABEL_CONTAINER_NAME) or "")
        if named is not None and named.runtime_id is None:
            named.runtime_id = runtime_id
            return named
        return None

    def _event(self, ev: RuntimeEvent) -> bool:
        """Apply a runtime event; False when it changed nothing (a start already known: the
        START action's outcome usually comes first)."""
        known_id = any(c.runtime_id == ev.id for c in self.task.containers.values())
        c = self._container_for(ev.id, ev.labels)
        if c is None:
            return False
        if ev.kind is EventKind.START:
            if c.observe(ContainerPhase.RUNNING):
                c.started_at = ev.time or self.ctx.now()
                c.network_bindings = [b.to_wire() for b in self._plan.get(c.name, [])]
            elif known_id:
                return False
        elif ev.kind is EventKind.OOM:
            self._flight.oom_seen.add(c.name)
        elif ev.kind is EventKind.HEALTH:
            c.health = _HEALTH.get(ev.health or "", HealthStatus.UNKNOWN)
        elif ev.kind is EventKind.DIE:
            self._exited(c, ev.exit_code, oom_flag=False, finished_at=ev.time)
        elif ev.kind is EventKind.DESTROY and c.known < ContainerPhase.STOPPED:
            c.reason = c.reason or VANISHED
            c.observe(ContainerPhase.STOPPED)
        return True

    def _exited(
        self, c: ContainerState, exit_code: int | None, *, oom_flag: bool, finished_at: float | None
    ) -> None:
        if c.known is ContainerPhase.STOPPED:
            return
        c.started = c.started or c.runtime_id is not None
        c.exit_code = exit_code
        counters = self.ctx.cgroups.counters(self.task.task_id) if self.ctx.cgroups is not None else None
        if oom_verdict(
            exit_code,
            docker_oom_flag=oom_flag,
            oom_event_seen=c.name in self._flight.oom_seen,
            before=self._flight.oom_before.get(c.name),
            after=counters,
            stop_requested=c.name in self._flight.stop_requested,
        ):
            c.reason = OOM_REASON
        c.finished_at = finished_at or self.ctx.now()
        c.observe(ContainerPhase.STOPPED)

    def _observed(self, c: ContainerState, obs: Observation) -> None:
        c.runtime_id = obs.id
        if obs.health is not None:
            c.health = _HEALTH.get(obs.health, HealthStatus.UNKNOWN)
        if obs.state is State.RUNNING:
            if c.observe(ContainerPhase.RUNNING) or not c.network_bindings:
                c.started_at = c.started_at or obs.started_at
                bindings = self._plan.get(c.name) or list(obs.port_bindings)
                c.network_bindings = [b.to_wire() for b in bindings]
                for b in bindings:
                    self.ctx.ports.claim(self.task.arn, b.host_port, b.protocol)
        elif obs.state is State.CREATED:
            c.observe(ContainerPhase.CREATED)
            if obs.port_bindings and not c.network_bindings:  # keep the ports it was created with
                c.network_bindings = [b.to_wire() for b in obs.port_bindings]
        elif obs.state is State.EXITED:
            self._exited(c, obs.exit_code, oom_flag=obs.oom_killed, finished_at=obs.finished_at)

    def _resync(self, observations: tuple[Observation, ...]) -> None:
        by_id = {o.id: o for o in observations}
        by_name = {o.name: o for o in observations}
        for c in self.task.containers.values():
            if c.name in self._flight.busy:
                continue
            obs = by_id.get(c.runtime_id or "") or by_name.get(c.runtime_name)
            if obs is not None:
                self._observed(c, obs)
            elif c.runtime_id is not None and c.known < ContainerPhase.STOPPED:
                c.reason = c.reason or VANISHED
                c.observe(ContainerPhase.STOPPED)


def _bindings_of(c: ContainerState) -> list[PortBinding]:
    return [
        PortBinding(
            int(b["containerPort"]), int(b["hostPort"]), str(b.get("protocol") or "tcp"), str(b["bindIP"])
        )
        for b in c.network_bindings
    ]
