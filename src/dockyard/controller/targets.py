"""Service tasks behind load balancers: the control plane's ACTIVATING and DEACTIVATING steps, and
the targets' health that the (pure) reconciler takes as input.

A service with ``loadBalancers`` starts its tasks with the ``loadBalancers`` gate
(``task_lifecycle``), so an agent's RUNNING leaves them ACTIVATING and a stop leaves them
DEACTIVATING until this step has done its work. Each round, for each such service, over its tasks::

    ACTIVATING, desired RUNNING   lb.ecs.register_task (the container instance's ec2InstanceId and the
                                  task's host port) -> RUNNING (``activated``); while a host port is
                                  not reported yet: again on the next report, at the latest in 1 s
    DEACTIVATING                  lb.ecs.deregister_task: the load balancer stops sending it new
                                  requests at once and lets in-flight ones finish; when the drain
                                  (the deregistration delay) ends -> STOPPING (``deactivated``): only
                                  now is the agent told to stop it. Wakes the loop at the deadline
    STOPPED                       deregistered once (per process): a container the agent saw die, a
                                  task whose instance is gone. A host port another live task of the
                                  instance holds now is left alone (the port was taken again)
    RUNNING                       its targets' health (``TargetState``): reconcile counts the task as
                                  healthy only when every target is, replaces it when one fails
                                  past the grace period

Every write compares the task's revision; registering and deregistering are idempotent, so a
conflict or a second controller doing the same only repeats harmless work. The loop also watches
``/elb-health/`` (``lb.keys.HEALTH``) so a change of health wakes a round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from dockyard.clock import Clock
from dockyard.domain.container_instances import ContainerInstance
from dockyard.domain.elb_errors import ElbError
from dockyard.domain.services import Service
from dockyard.domain.task_lifecycle import Merged, activated, deactivated
from dockyard.domain.task_status import TaskStatus
from dockyard.domain.tasks import Task
from dockyard.lb.ecs import (
    ServiceLoadBalancer,
    deregister_task,
    group_states,
    register_task,
    task_health_in,
)
from dockyard.placement import keys
from dockyard.placement.cache import ClusterCache, Entry
from dockyard.placement.commit import encode
from dockyard.store.base import Compare, Put, StateStore

from .model import TARGET_INITIAL, TargetState

log = logging.getLogger("dockyard.controller.targets")


@dataclass
class TargetRound:
    tasks: list[Entry[Task]]  # the service's tasks, with the transitions this step wrote
    targets: dict[str, TargetState] = field(default_factory=dict)  # RUNNING gated tasks, by id
    wake_at: float | None = None
    wrote: int = 0


async def commit_task(
    store: StateStore, scope: keys.Scope, entry: Entry[Task], merged: Merged
) -> Entry[Task]:
    """Write ``merged.task`` if the task's document is still the one ``entry`` was read from."""
    if not merged.changed:
        return entry
    key = keys.task(scope, merged.task.id)
    result = await store.txn(
        [Compare.mod_revision(key, entry.mod_revision)], [Put(key, encode(merged.task.to_document()))]
    )
    return Entry(merged.task, result.revision, entry.version + 1)


def load_balancers_of(service: Service) -> list[ServiceLoadBalancer]:
    return [ServiceLoadBalancer.from_wire(w) for w in service.load_balancers]


class TargetSteps:
    def __init__(
        self, store: StateStore, cache: ClusterCache, clock: Clock, retry_seconds: float = 1.0
    ) -> None:
        self.store = store
        self.cache = cache
        self.clock = clock
        self.retry_seconds = retry_seconds
        self._released: dict[str, set[str]] = {}  # service key -> STOPPED task ids deregistered
        self._warned: set[str] = set()  # tasks whose registration failed (logged once)

    async def run(
        self, service_key: str, scope: keys.Scope, service: Service, tasks: list[Entry[Task]]
    ) -> TargetRound:
        lbs = load_balancers_of(service)
        if not lbs:
            return TargetRound(tasks)
        out = TargetRound([])
        wake: list[float] = []
        released = self._released.setdefault(service_key, set())
        stopped_ids: set[str] = set()
        for entry in tasks:
            task = entry.value
            if task.gates:
                if task.last_status is TaskStatus.STOPPED:
                    stopped_ids.add(task.id)
                entry = await self._step(scope, lbs, entry, released, wake, out)
            out.tasks.append(entry)
        released &= stopped_ids  # forget tasks the cache no longer holds
        running = [
            e.value
            for e in out.tasks
            if e.value.gates
            and e.value.last_status is TaskStatus.RUNNING
            and e.value.desired_status is TaskStatus.RUNNING
        ]
        if running:
            states = await group_states(self.store, self.clock, [lb.target_group_arn for lb in lbs])
            for task in running:
                instance = self._instance(scope, task)
                if instance is None:
                    out.targets[task.id] = TargetState(TARGET_INITIAL)
                    continue
                state, failing = task_health_in(lbs, task, instance, states)
                out.targets[task.id] = TargetState(state, failing)
        out.wake_at = min(wake) if wake else None
        return out

    async def _step(
        self,
        scope: keys.Scope,
        lbs: list[ServiceLoadBalancer],
        entry: Entry[Task],
        released: set[str],
        wake: list[float],
        out: TargetRound,
    ) -> Entry[Task]:
        task = entry.value
        instance = self._instance(scope, task)
        if task.last_status is TaskStatus.ACTIVATING and task.desired_status is TaskStatus.RUNNING:
            if instance is None:
                return entry  # its instance is gone: the reconciler stops the task
            try:
                registered = await register_task(self.store, self.clock, lbs, task, instance)
            except ElbError as e:
                if task.id not in self._warned:
                    self._warned.add(task.id)
                    log.warning("task %s: cannot register its targets (retrying): %s", task.id, e)
                registered = False
            if not registered:
                wake.append(self.clock.time() + self.retry_seconds)
                return entry
            out.wrote += 1
            self._warned.discard(task.id)
            return await commit_task(self.store, scope, entry, activated(task, self.clock.time()))
        if task.last_status is TaskStatus.DEACTIVATING:
            deadline = self.clock.time()
            if instance is not None:
                deadline = await self._deregister(lbs, task, instance)
            if self.clock.time() < deadline:
                wake.append(deadline)
                return entry
            out.wrote += 1
            return await commit_task(self.store, scope, entry, deactivated(task, self.clock.time()))
        if task.last_status is TaskStatus.STOPPED and task.id not in released:
            if instance is not None:
                await self._deregister(lbs, task, instance, keep=self._held(scope, task, instance, lbs))
            released.add(task.id)
        return entry

    async def _deregister(
        self,
        lbs: list[ServiceLoadBalancer],
        task: Task,
        instance: ContainerInstance,
        keep: frozenset[tuple[str, int]] = frozenset(),
    ) -> float:
        try:
            return await deregister_task(self.store, self.clock, lbs, task, instance, keep)
        except ElbError as e:  # the target group is gone: nothing left to drain
            log.info("task %s: nothing to deregister: %s", task.id, e)
            return self.clock.time()

    def _instance(self, scope: keys.Scope, task: Task) -> ContainerInstance | None:
        entry = self.cache.instance(scope, task.instance_id)
        return entry.value if entry is not None else None

    def _held(
        self, scope: keys.Scope, task: Task, instance: ContainerInstance, lbs: list[ServiceLoadBalancer]
    ) -> frozenset[tuple[str, int]]:
        """(ec2InstanceId, host port) pairs that other tasks of the instance, not stopped, hold now;
        awsvpc: (address, port) pairs of live tasks given the stopped task's address again."""
        if task.eni:
            address = task.eni.get("privateIPv4Address")
            reused = any(
                o.id != task.id and not o.stopped and o.eni and o.eni.get("privateIPv4Address") == address
                for o in self.cache.tasks(scope)
            )
            return frozenset((str(address), lb.container_port) for lb in lbs) if reused else frozenset()
        held: set[tuple[str, int]] = set()
        for other in self.cache.tasks_on(scope, task.instance_id):
            if other.id == task.id or other.stopped:
                continue
            for c in other.containers:
                for b in c.network_bindings:
                    if b.get("hostPort"):
                        held.add((instance.ec2_instance_id, int(b["hostPort"])))
        return frozenset(held)
