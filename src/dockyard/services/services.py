"""Service use cases: CreateService, UpdateService, DeleteService, DescribeServices, ListServices.

Each one validates, reads the service document, decides the next value with ``domain.services``
and commits it with compare-and-swap; the service controller (``controller/``) does the rest:
starting, replacing and stopping tasks, rolling deployments, writing events.

- CreateService compares the cluster document too and rewrites it unchanged, so a DeleteCluster that
  counted no services before this one conflicts and counts again. It is idempotent as ECS's is: the
  same request (same ``clientToken``, or none) for a service that exists answers with that service;
  a different one fails with "Creation of service was not idempotent.".
- UpdateService makes a new PRIMARY deployment when the task definition changes or
  ``forceNewDeployment`` is set; the other members apply to the service (new tasks, the next checks).
- DeleteService makes the service DRAINING (``force`` scales it to 0 first); the controller stops its
  tasks and makes it INACTIVE, which stays describable for the retention period.
- runningCount and pendingCount (of the service and each deployment) come from the task cache.

- ``loadBalancers`` (target groups by ARN: type ``instance``, or ``ip`` for awsvpc) are checked by
  CreateService (``lb.ecs.check_service_load_balancers``: the container and port exist in the task
  definition, the target group exists, a load balancer forwards to it and its type fits the network
  mode) and kept on the service; the controller
  registers each task with them while ACTIVATING and drains it while DEACTIVATING. A new task
  definition must still have the container and port. Changing ``loadBalancers`` with UpdateService is
  refused (not supported yet).

- ``networkConfiguration`` (task definitions in awsvpc mode) is checked as RunTask checks it
  (``task_networking.service_network``: ECS's messages; subnets and groups exist and share a VPC;
  ``assignPublicIp`` DISABLED for EC2; the VPC's default group when none is named) and kept on the
  service and on each deployment; the controller gives each task it places an address in one of
  its deployment's subnets, in its deployment's groups (``placement.addresses``). UpdateService may
  change it (or a task definition that changes the network mode needs it): a new deployment that
  carries it, while the older deployments' tasks keep theirs, as in ECS. Load balancers of such a
  service are target groups of type ``ip`` (the task's address and container port).

What Dockyard does not provide yet (service registries, Service Connect, other launch types and
deployment controllers) is refused with ``InvalidParameterException`` naming the member, never
silently ignored.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson

from dockyard.domain import arns
from dockyard.domain.container_instances import InstanceStatus
from dockyard.domain.deployments import deployment_id
from dockyard.domain.errors import (
    ClientError,
    InvalidParameter,
    ServiceNotActive,
    ServiceNotFound,
    UnsupportedFeature,
)
from dockyard.domain.services import (
    MAX_CLIENT_TOKEN,
    PropagateTags,
    SchedulingStrategy,
    Service,
    ServiceCounts,
    ServiceStatus,
    check_desired_count,
    check_grace_period,
    check_service_name,
    draining,
    new_service,
    parse_deployment_configuration,
    scaled,
    with_new_deployment,
)
from dockyard.domain.tags import parse_tags
from dockyard.domain.task_definitions import NetworkMode, TaskDefinition, TaskDefinitionStatus
from dockyard.domain.task_status import TaskStatus
from dockyard.lb.ecs import check_service_load_balancers
from dockyard.scheduler import parse_constraints, parse_strategies
from dockyard.scheduler.expression import compile as compile_expression
from dockyard.services import keys, refs
from dockyard.services.cluster_state import cluster_cache, scope_of
from dockyard.services.clusters import decode_token, require_active_cluster
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.operations import operation
from dockyard.services.retry import retry_on_conflict
from dockyard.services.task_definitions import resolve_task_definition
from dockyard.services.task_networking import service_network
from dockyard.store.base import Compare, Conflict, Delete, KeyValue, Put

MAX_DESCRIBE = 10
DEFAULT_LIST = 10
MAX_LIST = 100
EC2 = "EC2"
PENDING = frozenset({TaskStatus.PROVISIONING, TaskStatus.PENDING, TaskStatus.ACTIVATING})
NOT_IDEMPOTENT = "Creation of service was not idempotent."

MAX_LOAD_BALANCERS = 5  # target groups per service (ECS's limit)

# members whose features come with later issues: refused when given a value
_LATER = {
    "serviceRegistries": "service registries (service discovery)",
    "serviceConnectConfiguration": "Service Connect",
    "volumeConfigurations": "volumeConfigurations (EBS volumes)",
    "vpcLatticeConfigurations": "VPC Lattice",
    "capacityProviderStrategy": "capacity provider strategies",
}


def _encode(service: Service) -> bytes:
    return orjson.dumps(service.to_document())


def _refuse_later(req: Request) -> None:
    for member, what in _LATER.items():
        if req.get(member):
            raise UnsupportedFeature(f"Dockyard does not support {what} in services yet ({member}).")
    if req.get("enableExecuteCommand"):
        raise UnsupportedFeature("Dockyard does not support ECS Exec (enableExecuteCommand) yet.")
    controller = (req.get("deploymentController") or {}).get("type")
    if controller not in (None, "ECS"):
        raise UnsupportedFeature(f"Dockyard supports only the ECS deployment controller, not {controller}.")
    if req.get("availabilityZoneRebalancing") == "ENABLED":
        raise UnsupportedFeature("Dockyard does not rebalance services across Availability Zones yet.")


def _strategy(req: Request) -> SchedulingStrategy:
    value = req.get("schedulingStrategy") or "REPLICA"
    try:
        return SchedulingStrategy(value)
    except ValueError:
        shown = str(value)[:50]
        raise InvalidParameter(f"Invalid schedulingStrategy '{shown}': use REPLICA or DAEMON.") from None


def _propagate(value: str | None) -> PropagateTags:
    try:
        return PropagateTags(value or "NONE")
    except ValueError:
        raise InvalidParameter(f"Invalid propagateTags '{str(value)[:50]}'.") from None


async def _runnable(env: Env, ctx: RequestContext, ref: str) -> TaskDefinition:
    td = await resolve_task_definition(env, ctx, ref)
    if td is None:
        raise ClientError("Unable to find task definition.")
    if td.status is not TaskDefinitionStatus.ACTIVE:
        raise ClientError(f"TaskDefinition is inactive ({td.family_revision}).")
    return td


def _placement(req: Request, strategy: SchedulingStrategy) -> dict[str, Any]:
    """placementStrategy and placementConstraints as given, validated by the scheduler's parsers."""
    out: dict[str, Any] = {}
    if "placementStrategy" in req and req["placementStrategy"] is not None:
        parsed = parse_strategies(req["placementStrategy"])
        if parsed and strategy is SchedulingStrategy.DAEMON:
            raise InvalidParameter("Placement strategies are not supported for DAEMON services.")
        out["placement_strategy"] = tuple(s.to_wire() for s in parsed)
    if "placementConstraints" in req and req["placementConstraints"] is not None:
        constraints = parse_constraints(req["placementConstraints"])
        out["placement_constraints"] = tuple(c.to_wire() for c in constraints)
    return out


def _fingerprint(req: Request) -> str:
    return hashlib.sha256(orjson.dumps(req, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _new_deployment_id() -> str:
    return deployment_id(random.randrange(10**19))


def counts(env: Env, ctx: RequestContext, service: Service, cache: Any) -> ServiceCounts:
    """runningCount and pendingCount of the service and each deployment, from the task cache."""
    running: Counter[str] = Counter()
    pending: Counter[str] = Counter()
    for t in cache.tasks(scope_of(ctx, service.cluster)):
        if t.service != service.name:
            continue
        if t.last_status is TaskStatus.RUNNING:
            running[t.started_by or ""] += 1
        elif t.last_status in PENDING:
            pending[t.started_by or ""] += 1
    by_dep = {d.id: (running[d.id], pending[d.id]) for d in service.deployments}
    return ServiceCounts(sum(running.values()), sum(pending.values()), by_dep)


async def _wire(env: Env, ctx: RequestContext, service: Service, include_tags: bool = True) -> dict[str, Any]:
    cache = await cluster_cache(env)
    return service.to_wire(counts(env, ctx, service, cache), include_tags=include_tags)


async def read_service(
    env: Env, ctx: RequestContext, cluster: str, ref: str
) -> tuple[Service, KeyValue] | None:
    """The service ``ref`` (name or ARN) names in ``cluster``; None if absent or of another one."""
    try:
        parsed = arns.parse_service(ref)
    except InvalidParameter:
        return None
    if parsed.arn is not None and (parsed.arn.region, parsed.arn.account) != (ctx.region, ctx.account_id):
        return None
    if parsed.cluster is not None and parsed.cluster != cluster:
        return None
    if not parsed.id or "/" in parsed.id:
        return None
    kv = await env.store.get(keys.service(ctx.account_id, ctx.region, cluster, parsed.id))
    if kv is None:
        return None
    return Service.from_document(orjson.loads(kv.value)), kv


async def _active_service(env: Env, ctx: RequestContext, cluster: str, ref: str) -> tuple[Service, KeyValue]:
    found = await read_service(env, ctx, cluster, ref)
    if found is None:
        raise ServiceNotFound("Service not found.")
    if found[0].status is not ServiceStatus.ACTIVE:
        raise ServiceNotActive("Service was not ACTIVE.")
    return found


async def _daemon_count(
    env: Env, ctx: RequestContext, cluster: str, constraints: Sequence[Mapping[str, str]], td: TaskDefinition
) -> int:
    """A new DAEMON service's desiredCount: the ACTIVE instances that meet its memberOf constraints
    (the controller keeps it current as instances come and go)."""
    cache = await cluster_cache(env)
    scope = scope_of(ctx, cluster)
    wanted = parse_constraints(constraints, td.wire.get("placementConstraints") or ())
    tests = [compile_expression(c.expression) for c in wanted if c.expression is not None]
    count = 0
    for entry in cache.instances(scope):
        if entry.value.status is not InstanceStatus.ACTIVE:
            continue
        view = cache.view(scope, entry.value.id) if tests else None
        if not tests or (view is not None and all(t.matches(view) for t in tests)):
            count += 1
    return count


async def _load_balancers(
    env: Env, td: TaskDefinition, wire: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], ...]:
    """``loadBalancers`` checked against ``td`` and the target groups, normalised for the service."""
    if len(wire) > MAX_LOAD_BALANCERS:
        raise InvalidParameter(f"loadBalancers can have at most {MAX_LOAD_BALANCERS} entries.")
    checked = await check_service_load_balancers(env.store, td, wire)
    seen = set()
    for lb in checked:
        if lb.target_group_arn in seen:
            raise InvalidParameter(f"Target group {lb.target_group_arn} is listed more than once.")
        seen.add(lb.target_group_arn)
    return tuple(lb.to_wire() for lb in checked)


# ---- CreateService ----------------------------------------------------------------------------------


@operation("CreateService")
async def create_service(env: Env, ctx: RequestContext, req: Request) -> Response:
    name = check_service_name(req.get("serviceName") or "")
    strategy = _strategy(req)
    _refuse_later(req)
    launch_type = req.get("launchType") or EC2
    if launch_type != EC2:
        raise UnsupportedFeature(
            f"Dockyard does not provide the {launch_type} launch type yet; use launchType EC2 with "
            "registered container instances."
        )
    if req.get("platformVersion"):
        raise InvalidParameter("The platform version must be null when specifying an EC2 launch type.")
    desired = check_desired_count(req.get("desiredCount"))
    if strategy is SchedulingStrategy.REPLICA and desired is None:
        raise InvalidParameter("desiredCount is required for a service with the REPLICA scheduling strategy.")
    if not req.get("taskDefinition"):
        raise InvalidParameter("taskDefinition is required.")
    token = req.get("clientToken")
    if token is not None and not 1 <= len(token) <= MAX_CLIENT_TOKEN:
        raise InvalidParameter(f"clientToken must be 1 to {MAX_CLIENT_TOKEN} characters.")
    configuration = parse_deployment_configuration(req.get("deploymentConfiguration"), strategy)
    placement = _placement(req, strategy)
    options: dict[str, Any] = {
        "launch_type": EC2,
        "created_by": f"arn:aws:iam::{ctx.account_id}:root",
        "role_arn": req.get("role"),
        "health_check_grace_period": check_grace_period(req.get("healthCheckGracePeriodSeconds")),
        "tags": parse_tags(req.get("tags")),
        "enable_ecs_managed_tags": bool(req.get("enableECSManagedTags")),
        "propagate_tags": _propagate(req.get("propagateTags")),
        "client_token": token,
        "fingerprint": _fingerprint(req),
        **placement,
    }
    td = await _runnable(env, ctx, req["taskDefinition"])
    options["network_configuration"] = await service_network(env, ctx, td, req.get("networkConfiguration"))
    options["load_balancers"] = await _load_balancers(env, td, req.get("loadBalancers") or [])

    async def attempt() -> Service:
        cluster, cluster_kv = await require_active_cluster(env, ctx, req.get("cluster"))
        key = keys.service(ctx.account_id, ctx.region, cluster.name, name)
        kv = await env.store.get(key)
        if kv is not None:
            existing = Service.from_document(orjson.loads(kv.value))
            if existing.status is ServiceStatus.ACTIVE:
                if existing.fingerprint == options["fingerprint"]:
                    return existing
                raise InvalidParameter(NOT_IDEMPOTENT)
            if existing.status is ServiceStatus.DRAINING:
                raise InvalidParameter("Unable to Start a service that is still Draining.")
        if strategy is SchedulingStrategy.DAEMON:
            desired_now = await _daemon_count(
                env, ctx, cluster.name, options.get("placement_constraints", ()), td
            )
        else:
            desired_now = desired or 0
        service = new_service(
            arn=arns.service_arn(ctx.region, ctx.account_id, cluster.name, name),
            name=name,
            cluster=cluster.name,
            cluster_arn=cluster.arn,
            td=td,
            strategy=strategy,
            desired_count=desired_now,
            configuration=configuration,
            deployment_id=_new_deployment_id(),
            now=env.clock.time(),
            **options,
        )
        await env.store.txn(
            [Compare.unchanged(kv, key), Compare.unchanged(cluster_kv, cluster_kv.key)],
            [Put(key, _encode(service)), Put(cluster_kv.key, cluster_kv.value)],
        )
        return service

    service = await retry_on_conflict(attempt)
    return {"service": await _wire(env, ctx, service)}


# ---- UpdateService ----------------------------------------------------------------------------------


@operation("UpdateService")
async def update_service(env: Env, ctx: RequestContext, req: Request) -> Response:
    _refuse_later(req)
    if req.get("loadBalancers") is not None:
        raise UnsupportedFeature(
            "Dockyard does not support changing a service's loadBalancers yet; create a new service."
        )
    if req.get("platformVersion"):
        raise InvalidParameter("The platform version must be null when specifying an EC2 launch type.")
    desired = check_desired_count(req.get("desiredCount"))
    grace = check_grace_period(req.get("healthCheckGracePeriodSeconds"))
    td = await _runnable(env, ctx, req["taskDefinition"]) if req.get("taskDefinition") else None

    async def attempt() -> Service:
        cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
        service, kv = await _active_service(env, ctx, cluster.name, req["service"])
        now = env.clock.time()
        strategy = service.scheduling_strategy
        nxt = service
        if desired is not None:
            if strategy is SchedulingStrategy.DAEMON:
                raise InvalidParameter("desiredCount cannot be set for a DAEMON service.")
            nxt = scaled(nxt, desired, now)
        if req.get("deploymentConfiguration"):
            config = parse_deployment_configuration(
                req["deploymentConfiguration"], strategy, nxt.deployment_configuration
            )
            nxt = replace(nxt, deployment_configuration=config)
        nxt = replace(nxt, **_placement(req, strategy))
        if grace is not None:
            nxt = replace(nxt, health_check_grace_period=grace)
        if req.get("propagateTags") is not None:
            nxt = replace(nxt, propagate_tags=_propagate(req["propagateTags"]))
        if req.get("enableECSManagedTags") is not None:
            nxt = replace(nxt, enable_ecs_managed_tags=bool(req["enableECSManagedTags"]))
        primary = nxt.primary
        changed_td = td is not None and (primary is None or primary.task_definition_arn != td.arn)
        given_network = req.get("networkConfiguration")
        network = nxt.network_configuration
        if changed_td or req.get("forceNewDeployment") or given_network:
            chosen = td if td is not None else (primary.task_definition if primary is not None else None)
            if chosen is None:
                raise InvalidParameter("taskDefinition is required.")
            if changed_td:
                await _load_balancers(env, chosen, nxt.load_balancers)
            if changed_td or given_network:
                kept = (
                    nxt.network_configuration if chosen.effective_network_mode is NetworkMode.AWSVPC else None
                )
                network = await service_network(env, ctx, chosen, given_network or kept)
        if changed_td or network != nxt.network_configuration or req.get("forceNewDeployment"):
            assert chosen is not None
            # the new deployment carries ``network``; older ones keep the configuration they had
            nxt = with_new_deployment(nxt, chosen, _new_deployment_id(), now, network)
        if nxt != service:
            await env.store.txn([Compare.unchanged(kv, kv.key)], [Put(kv.key, _encode(nxt))])
        return nxt

    service = await retry_on_conflict(attempt)
    return {"service": await _wire(env, ctx, service)}


# ---- DeleteService ----------------------------------------------------------------------------------


@operation("DeleteService")
async def delete_service(env: Env, ctx: RequestContext, req: Request) -> Response:
    force = bool(req.get("force"))

    async def attempt() -> Service:
        cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
        found = await read_service(env, ctx, cluster.name, req["service"])
        if found is None:
            raise ServiceNotFound("Service not found.")
        service, kv = found
        if service.status is ServiceStatus.DRAINING:
            return service
        if service.status is ServiceStatus.INACTIVE:
            raise ServiceNotActive("Service was not ACTIVE.")
        replica = service.scheduling_strategy is SchedulingStrategy.REPLICA
        if replica and service.desired_count > 0 and not force:
            raise InvalidParameter("The service cannot be stopped while it is scaled above 0.")
        gone = draining(service, env.clock.time())
        await env.store.txn([Compare.unchanged(kv, kv.key)], [Put(kv.key, _encode(gone))])
        return gone

    service = await retry_on_conflict(attempt)
    return {"service": await _wire(env, ctx, service)}


# ---- DescribeServices and ListServices ---------------------------------------------------------------


@operation("DescribeServices")
async def describe_services(env: Env, ctx: RequestContext, req: Request) -> Response:
    wanted = req.get("services") or []
    if not 1 <= len(wanted) <= MAX_DESCRIBE:
        raise InvalidParameter(f"services must list 1 to {MAX_DESCRIBE} services.")
    include = list(req.get("include") or ())
    for item in include:
        if item != "TAGS":
            raise InvalidParameter(f"Invalid value '{item}' for include; valid values: TAGS.")
    cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
    cache = await cluster_cache(env)
    found: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for ref in wanted:
        hit = await read_service(env, ctx, cluster.name, ref)
        if hit is None:
            arn = ref if arns.is_arn(ref) else arns.service_arn(ctx.region, ctx.account_id, cluster.name, ref)
            failures.append({"arn": arn, "reason": "MISSING"})
            continue
        service = hit[0]
        found.append(service.to_wire(counts(env, ctx, service, cache), include_tags="TAGS" in include))
    return {"services": found, "failures": failures}


@operation("ListServices")
async def list_services(env: Env, ctx: RequestContext, req: Request) -> Response:
    limit = req.get("maxResults") or DEFAULT_LIST
    if not 1 <= limit <= MAX_LIST:
        raise InvalidParameter(f"maxResults must be between 1 and {MAX_LIST}; got {limit}.")
    after = decode_token(req.get("nextToken"))
    launch_type = req.get("launchType")
    strategy = req.get("schedulingStrategy")
    if req.get("resourceManagementType") not in (None, "CUSTOMER"):
        return {"serviceArns": []}  # every Dockyard service is customer-managed
    cluster, _ = await require_active_cluster(env, ctx, req.get("cluster"))
    prefix = keys.services_prefix(ctx.account_id, ctx.region, cluster.name)
    arns_out: list[str] = []
    cursor = prefix + after if after else None
    while True:
        page = await env.store.list(prefix, start_after=cursor, limit=200)
        for kv in page.kvs:
            cursor = kv.key
            doc = orjson.loads(kv.value)
            if doc.get("status") == ServiceStatus.INACTIVE.value:
                continue
            if launch_type and doc.get("launchType") != launch_type:
                continue
            if strategy and doc.get("schedulingStrategy") != strategy:
                continue
            arns_out.append(doc["serviceArn"])
            if len(arns_out) > limit:
                page_arns = arns_out[:limit]
                token = refs.encode_token(page_arns[-1].rsplit("/", 1)[-1])
                return {"serviceArns": page_arns, "nextToken": token}
        if not page.more or not page.kvs:
            return {"serviceArns": arns_out}


# ---- retention --------------------------------------------------------------------------


async def expire_services(env: Env, older_than: float) -> int:
    """Remove services that became INACTIVE before ``older_than``."""
    removed = 0
    start_after: str | None = None
    while True:
        page = await env.store.list(keys.services_prefix(), start_after=start_after, limit=200)
        for kv in page.kvs:
            doc = orjson.loads(kv.value)
            since = doc.get("inactiveSince")
            if doc.get("status") == ServiceStatus.INACTIVE.value and since is not None and since < older_than:
                try:
                    await env.store.txn([Compare.unchanged(kv, kv.key)], deletes=[Delete(kv.key)])
                    removed += 1
                except Conflict:  # re-created meanwhile
                    pass
        if not page.more or not page.kvs:
            return removed
        start_after = page.kvs[-1].key
