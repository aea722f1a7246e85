"""ELBv2 listeners and rules: CreateListener, DescribeListeners, DeleteListener, CreateRule,
DescribeRules, DeleteRule.

A listener claims its port (``/elb/listener-ports/...``) and a rule its priority
(``/elb/rule-priorities/...``) create-only, so two concurrent requests cannot both win. Every
listener or rule that forwards to a target group is recorded in that group's ``users`` in the same
transaction: that is how DescribeTargetGroups shows ``LoadBalancerArns``, how DeleteTargetGroup knows
the group is in use and how a group stays attached to one load balancer.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson

from dockyard.domain.elb_errors import (
    DuplicateListener,
    IncompatibleProtocols,
    ListenerNotFound,
    LoadBalancerNotFound,
    OperationNotPermitted,
    PriorityInUse,
    RuleNotFound,
    TargetGroupAssociationLimit,
    TargetGroupNotFound,
    TooManyRules,
    UnsupportedProtocol,
    ValidationError,
)
from dockyard.domain.load_balancers import (
    APPLICATION,
    LISTENER_PROTOCOLS,
    Action,
    Listener,
    LoadBalancer,
    Rule,
    default_rule_wire,
    listener_arn,
    parse_actions,
    parse_arn,
    parse_conditions,
    parse_tags,
    rule_arn,
)
from dockyard.domain.target_groups import TargetGroup
from dockyard.lb import keys, records
from dockyard.lb.records import encode
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.elb_common import exclusive, page, with_marker
from dockyard.services.elb_registry import elb_operation
from dockyard.services.retry import retry_on_conflict
from dockyard.store.base import Compare, Delete, KeyValue, Put

MAX_RULES = 100


async def _forward_targets(
    env: Env, lb: LoadBalancer, protocol: str, actions: Sequence[Action]
) -> list[tuple[TargetGroup, KeyValue]]:
    """The target groups ``actions`` forward to, checked to fit this load balancer and listener."""
    out = []
    for action in actions:
        tg, kv = await records.target_group(env.store, action.target_group_arn)
        if tg.protocol != protocol:
            raise IncompatibleProtocols(
                f"The {tg.protocol} target group '{tg.name}' cannot be used by a {protocol} listener"
            )
        others = set(tg.users.values()) - {lb.arn}
        if others:
            raise TargetGroupAssociationLimit(
                f"The target group '{tg.name}' is already associated with a different load balancer"
            )
        out.append((tg, kv))
    return out


def _using(
    groups: list[tuple[TargetGroup, KeyValue]], user: str, lb_arn: str
) -> tuple[list[Compare], list[Put]]:
    compares, puts = [], []
    for tg, kv in groups:
        compares.append(Compare.unchanged(kv, kv.key))
        updated = replace(tg, users={**tg.users, user: lb_arn})
        puts.append(Put(kv.key, encode(updated.to_document())))
    return compares, puts


async def _release(env: Env, user: str, target_group_arns: Sequence[str]) -> None:
    """Drop ``user`` from the groups it forwarded to (groups deleted meanwhile are skipped)."""
    for arn in dict.fromkeys(target_group_arns):

        async def attempt(arn: str = arn) -> None:
            try:
                tg, kv = await records.target_group(env.store, arn)
            except TargetGroupNotFound:
                return
            if user in tg.users:
                users = {k: v for k, v in tg.users.items() if k != user}
                await env.store.txn(
                    [Compare.unchanged(kv, kv.key)],
                    [Put(kv.key, encode(replace(tg, users=users).to_document()))],
                )

        await retry_on_conflict(attempt)


# ---- listeners -----------------------------------------------------------------------------------


@elb_operation("CreateListener")
async def create_listener(env: Env, ctx: RequestContext, req: Request) -> Response:
    actions = parse_actions(req["DefaultActions"])
    tags = parse_tags(req.get("Tags"))
    protocol, port = req.get("Protocol"), req.get("Port")
    if protocol is None or port is None:
        raise ValidationError("A listener protocol and port must be specified")

    async def attempt() -> Listener:
        lb, lb_kv = await records.load_balancer(env.store, req["LoadBalancerArn"])
        if lb.deleting:
            raise LoadBalancerNotFound(f"Load balancer '{lb.arn}' not found")
        if protocol not in LISTENER_PROTOCOLS[lb.type]:
            raise UnsupportedProtocol(
                f"Protocol '{protocol}' is not supported by Dockyard for {lb.type} load balancers; "
                f"use {' or '.join(LISTENER_PROTOCOLS[lb.type])}"
            )
        claim = keys.listener_port(ctx.account_id, ctx.region, lb.id, port)
        if await env.store.get(claim) is not None:
            raise DuplicateListener(f"A listener already exists on port {port} of '{lb.name}'")
        groups = await _forward_targets(env, lb, protocol, actions)
        listener_id = secrets.token_hex(8)
        listener = Listener(
            arn=listener_arn(ctx.region, ctx.account_id, lb.type, lb.name, lb.id, listener_id),
            load_balancer_arn=lb.arn,
            id=listener_id,
            port=port,
            protocol=protocol,
            default_actions=actions,
            default_rule_id=secrets.token_hex(8),
            tags=tags,
        )
        compares, puts = _using(groups, listener.arn, lb.arn)
        key = keys.listener(ctx.account_id, ctx.region, lb.id, listener_id)
        await env.store.txn(
            [Compare.unchanged(lb_kv, lb_kv.key), Compare.absent(claim), Compare.absent(key), *compares],
            [Put(key, encode(listener.to_document())), Put(claim, listener.arn.encode()), *puts],
        )
        return listener

    listener = await retry_on_conflict(attempt)
    return {"Listeners": [listener.to_wire()]}


@elb_operation("DescribeListeners")
async def describe_listeners(env: Env, ctx: RequestContext, req: Request) -> Response:
    exclusive(req, ("LoadBalancerArn", "ListenerArns"))
    if req.get("ListenerArns"):
        found = [(await records.listener(env.store, arn))[0] for arn in req["ListenerArns"]]
        return {"Listeners": [listener.to_wire() for listener in found]}
    if not req.get("LoadBalancerArn"):
        raise ValidationError("A load balancer ARN or listener ARNs must be specified")
    lb, _ = await records.load_balancer(env.store, req["LoadBalancerArn"])

    async def decode(kv: KeyValue) -> dict[str, Any]:
        return Listener.from_document(orjson.loads(kv.value)).to_wire()

    items, marker = await page(
        env.store, keys.listeners_prefix(ctx.account_id, ctx.region, lb.id), req, decode
    )
    items.sort(key=lambda x: x["Port"])
    return with_marker({"Listeners": items}, marker)


async def remove_listener(env: Env, ctx: RequestContext, key: str) -> None:
    """Delete a listener (its port claim, its default action's use of a group), then its rules.

    Once the listener is gone no rule can be added to it (CreateRule compares the listener), so the
    rules listed afterwards are all there are.
    """

    async def attempt() -> Listener | None:
        kv = await env.store.get(key)
        if kv is None:
            return None
        listener = Listener.from_document(orjson.loads(kv.value))
        lb_id = parse_arn(listener.arn, "listener").parts[2]
        await env.store.txn(
            [Compare.unchanged(kv, key)],
            deletes=[
                Delete(key),
                Delete(keys.listener_port(ctx.account_id, ctx.region, lb_id, listener.port)),
            ],
        )
        return listener

    listener = await retry_on_conflict(attempt)
    if listener is None:
        return
    await _release(env, listener.arn, listener.target_group_arns())
    for kv in await records.list_all(env.store, keys.rules_prefix(ctx.account_id, ctx.region, listener.id)):
        await _remove_rule(env, ctx, Rule.from_document(orjson.loads(kv.value)), kv)


@elb_operation("DeleteListener")
async def delete_listener(env: Env, ctx: RequestContext, req: Request) -> Response:
    _, kv = await records.listener(env.store, req["ListenerArn"])
    await remove_listener(env, ctx, kv.key)
    return {}


# ---- rules ---------------------------------------------------------------------------------------


@elb_operation("CreateRule")
async def create_rule(env: Env, ctx: RequestContext, req: Request) -> Response:
    conditions = parse_conditions(req["Conditions"])
    actions = parse_actions(req["Actions"])
    tags = parse_tags(req.get("Tags"))
    priority = int(req["Priority"])
    if req.get("Transforms"):
        raise ValidationError("Rule transforms are not supported by Dockyard")

    async def attempt() -> Rule:
        listener, listener_kv = await records.listener(env.store, req["ListenerArn"])
        lb, _ = await records.load_balancer(env.store, listener.load_balancer_arn)
        if lb.type != APPLICATION:
            raise ValidationError("Rules can be added only to the listeners of application load balancers")
        claim = keys.rule_priority(ctx.account_id, ctx.region, listener.id, priority)
        if await env.store.get(claim) is not None:
            raise PriorityInUse(f"Priority '{priority}' is currently in use")
        prefix = keys.rules_prefix(ctx.account_id, ctx.region, listener.id)
        if await env.store.count(prefix) >= MAX_RULES:
            raise TooManyRules(f"A listener can have at most {MAX_RULES} rules")
        groups = await _forward_targets(env, lb, listener.protocol, actions)
        rule_id = secrets.token_hex(8)
        rule = Rule(
            arn=rule_arn(ctx.region, ctx.account_id, lb.type, lb.name, lb.id, listener.id, rule_id),
            listener_arn=listener.arn,
            id=rule_id,
            priority=priority,
            conditions=conditions,
            actions=actions,
            tags=tags,
        )
        compares, puts = _using(groups, rule.arn, lb.arn)
        key = keys.rule(ctx.account_id, ctx.region, listener.id, rule_id)
        await env.store.txn(
            [Compare.unchanged(listener_kv, listener_kv.key), Compare.absent(claim), *compares],
            [Put(key, encode(rule.to_document())), Put(claim, rule.arn.encode()), *puts],
        )
        return rule

    rule = await retry_on_conflict(attempt)
    return {"Rules": [rule.to_wire()]}


async def _rule_or_default(env: Env, arn: str) -> tuple[Rule | None, Listener, KeyValue | None]:
    parsed = parse_arn(arn, "listener-rule")
    _, lb_name, lb_id, listener_id, rule_id = parsed.parts
    lst_arn = listener_arn(parsed.region, parsed.account, parsed.lb_type, lb_name, lb_id, listener_id)
    try:
        listener, _ = await records.listener(env.store, lst_arn)
    except ListenerNotFound:
        raise RuleNotFound(f"Rule '{arn}' not found") from None
    if rule_id == listener.default_rule_id:
        return None, listener, None
    rule, kv = await records.rule(env.store, arn)
    return rule, listener, kv


@elb_operation("DescribeRules")
async def describe_rules(env: Env, ctx: RequestContext, req: Request) -> Response:
    exclusive(req, ("ListenerArn", "RuleArns"))
    if req.get("RuleArns"):
        out = []
        for arn in req["RuleArns"]:
            rule, listener, _ = await _rule_or_default(env, arn)
            out.append(default_rule_wire(listener) if rule is None else rule.to_wire())
        return {"Rules": out}
    if not req.get("ListenerArn"):
        raise ValidationError("A listener ARN or rule ARNs must be specified")
    listener, _ = await records.listener(env.store, req["ListenerArn"])
    kvs = await records.list_all(env.store, keys.rules_prefix(ctx.account_id, ctx.region, listener.id))
    rules = sorted((Rule.from_document(orjson.loads(kv.value)) for kv in kvs), key=lambda r: r.priority)
    return {"Rules": [r.to_wire() for r in rules] + [default_rule_wire(listener)]}


async def _remove_rule(env: Env, ctx: RequestContext, rule: Rule, kv: KeyValue) -> None:
    listener_id = parse_arn(rule.listener_arn, "listener").parts[3]
    claim = keys.rule_priority(ctx.account_id, ctx.region, listener_id, rule.priority)

    async def attempt() -> None:
        current = await env.store.get(kv.key)
        if current is None:
            return
        await env.store.txn([Compare.unchanged(current, kv.key)], deletes=[Delete(kv.key), Delete(claim)])

    await retry_on_conflict(attempt)
    await _release(env, rule.arn, rule.target_group_arns())


@elb_operation("DeleteRule")
async def delete_rule(env: Env, ctx: RequestContext, req: Request) -> Response:
    rule, _, kv = await _rule_or_default(env, req["RuleArn"])
    if rule is None or kv is None:
        raise OperationNotPermitted("The default rule of a listener cannot be deleted")
    await _remove_rule(env, ctx, rule, kv)
    return {}
