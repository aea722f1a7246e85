"""EC2 security groups: CreateSecurityGroup, DescribeSecurityGroups, DeleteSecurityGroup,
AuthorizeSecurityGroupIngress, RevokeSecurityGroupIngress. Rule changes are compare-and-swap
writes of the group document; agents pick them up through ``DockyardAgentV1.NetworkRules``."""

from __future__ import annotations

from dataclasses import replace

import orjson

from dockyard.domain.ec2 import (
    DEFAULT_GROUP_NAME,
    CannotDelete,
    DependencyViolation,
    InvalidGroupDuplicate,
    InvalidGroupNotFound,
    InvalidParameterValue,
    InvalidPermissionDuplicate,
    InvalidPermissionNotFound,
    MissingParameter,
    Rule,
    SecurityGroup,
    parse_permissions,
)
from dockyard.services import ec2_store as store
from dockyard.services.context import Env, Request, RequestContext, Response
from dockyard.services.ec2_enis import group_users
from dockyard.services.ec2_registry import ec2_operation, matches
from dockyard.services.retry import retry_on_conflict
from dockyard.store.base import Compare, Conflict, Delete, Put

_FILTERS = {"group-id": "GroupId", "group-name": "GroupName", "vpc-id": "VpcId", "description": "Description"}


async def create_default_group(env: Env, ctx: RequestContext, vpc_id: str) -> SecurityGroup:
    gid = store.short_id("sg", ctx.account_id, ctx.region, vpc_id)
    group = SecurityGroup(
        gid,
        DEFAULT_GROUP_NAME,
        "default VPC security group",
        vpc_id,
        ctx.account_id,
        (Rule("-1", 0, 65535, group_id=gid),),
    )
    await _insert(env, ctx, group)
    return group


async def _insert(env: Env, ctx: RequestContext, group: SecurityGroup) -> None:
    name_key = store.group_name_key(ctx, group.vpc_id, group.name)
    try:
        await env.store.txn(
            [Compare.absent(name_key)],
            [
                Put(name_key, group.id.encode()),
                Put(store.group_key(ctx, group.id), orjson.dumps(group.to_doc())),
            ],
        )
    except Conflict:
        raise InvalidGroupDuplicate(
            f"The security group '{group.name}' already exists for VPC '{group.vpc_id}'"
        ) from None


@ec2_operation("CreateSecurityGroup")
async def create_security_group(env: Env, ctx: RequestContext, req: Request) -> Response:
    name = str(req.get("GroupName") or "")
    description = str(req.get("Description") or "")
    if not name or not description:
        raise MissingParameter("The request must contain the parameters GroupName and GroupDescription.")
    if name.startswith("sg-") or name == DEFAULT_GROUP_NAME or len(name) > 255:
        raise InvalidParameterValue(f"Value ({name}) for parameter GroupName is invalid.")
    vpc_id = req.get("VpcId") or next(v.id for v in await store.vpcs(env, ctx) if v.is_default)
    await store.vpc(env, ctx, vpc_id)
    tags = tuple(
        (str(t.get("Key")), str(t.get("Value") or ""))
        for spec in req.get("TagSpecifications") or ()
        for t in spec.get("Tags") or ()
    )
    group = SecurityGroup(
        store.short_id("sg", ctx.request_id), name, description, vpc_id, ctx.account_id, tags=tags
    )
    await _insert(env, ctx, group)
    arn = f"arn:aws:ec2:{ctx.region}:{ctx.account_id}:security-group/{group.id}"
    return {"GroupId": group.id, "SecurityGroupArn": arn, "Tags": [{"Key": k, "Value": v} for k, v in tags]}


async def _by_request(env: Env, ctx: RequestContext, req: Request) -> tuple[SecurityGroup, int]:
    gid = req.get("GroupId")
    if gid:
        return await store.group(env, ctx, str(gid))
    name = req.get("GroupName")
    if not name:
        raise MissingParameter("The request must contain the parameter GroupId or GroupName.")
    default_vpc = next(v.id for v in await store.vpcs(env, ctx) if v.is_default)
    kv = await env.store.get(store.group_name_key(ctx, default_vpc, str(name)))
    if kv is None:
        raise InvalidGroupNotFound(
            f"The security group '{name}' does not exist in default VPC '{default_vpc}'"
        )
    return await store.group(env, ctx, kv.value.decode())


@ec2_operation("DescribeSecurityGroups")
async def describe_security_groups(env: Env, ctx: RequestContext, req: Request) -> Response:
    ids = set(req.get("GroupIds") or ())
    names = set(req.get("GroupNames") or ())
    found = [
        g for g in await store.groups(env, ctx) if (not ids or g.id in ids) and (not names or g.name in names)
    ]
    missing = ids - {g.id for g in found}
    if missing:
        raise InvalidGroupNotFound(f"The security group '{sorted(missing)[0]}' does not exist")
    missing_names = names - {g.name for g in found}
    if missing_names:
        raise InvalidGroupNotFound(f"The security group '{sorted(missing_names)[0]}' does not exist")
    wire = [g.to_wire(ctx.region) for g in found]
    return {"SecurityGroups": [w for w in wire if matches(w, req.get("Filters") or (), _FILTERS)]}


@ec2_operation("DeleteSecurityGroup")
async def delete_security_group(env: Env, ctx: RequestContext, req: Request) -> Response:
    group, revision = await _by_request(env, ctx, req)
    if group.name == DEFAULT_GROUP_NAME:
        raise CannotDelete(f'the specified group: "{group.id}" name: "default" cannot be deleted by a user')
    users = await group_users(env, ctx, group.id)
    if users:
        raise DependencyViolation(f"resource {group.id} has a dependent object ({users[0]})")
    await env.store.txn(
        [Compare.mod_revision(store.group_key(ctx, group.id), revision)],
        [],
        [Delete(store.group_key(ctx, group.id)), Delete(store.group_name_key(ctx, group.vpc_id, group.name))],
    )
    return {"Return": True, "GroupId": group.id}


def _rules(req: Request) -> list[Rule]:
    perms = list(req.get("IpPermissions") or ())
    if req.get("IpProtocol") or req.get("CidrIp"):  # the old flat form
        perm = {
            "IpProtocol": req.get("IpProtocol") or "-1",
            "FromPort": req.get("FromPort"),
            "ToPort": req.get("ToPort"),
            "IpRanges": [{"CidrIp": req["CidrIp"]}] if req.get("CidrIp") else [],
        }
        perms.append(perm)
    if not perms:
        raise MissingParameter("The request must contain the parameter IpPermissions.")
    return parse_permissions(perms)


async def _change(env: Env, ctx: RequestContext, req: Request, *, add: bool) -> Response:
    rules = _rules(req)

    async def attempt() -> Response:
        group, revision = await _by_request(env, ctx, req)
        current = {r.identity: r for r in group.ingress}
        for r in rules:
            if r.group_id is not None:
                await store.group(env, ctx, r.group_id)  # InvalidGroup.NotFound
            if add and r.identity in current:
                raise InvalidPermissionDuplicate(
                    f'the specified rule "peer: {r.cidr or r.group_id}, {r.protocol.upper()}, from port: '
                    f'{r.from_port}, to port: {r.to_port}, ALLOW" already exists'
                )
            if not add and r.identity not in current:
                raise InvalidPermissionNotFound("The specified rule does not exist in this security group.")
        if add:
            ingress = (*group.ingress, *rules)
        else:
            gone = {r.identity for r in rules}
            ingress = tuple(r for r in group.ingress if r.identity not in gone)
        changed = replace(group, ingress=ingress)
        key = store.group_key(ctx, group.id)
        await env.store.txn([Compare.mod_revision(key, revision)], [Put(key, orjson.dumps(changed.to_doc()))])
        out: Response = {"Return": True}
        if add:
            out["SecurityGroupRules"] = [
                {
                    "SecurityGroupRuleId": store.short_id("sgr", group.id, *map(str, r.identity)),
                    "GroupId": group.id,
                    "GroupOwnerId": group.owner,
                    "IsEgress": False,
                    "IpProtocol": r.protocol,
                    "FromPort": r.from_port,
                    "ToPort": r.to_port,
                    **({"CidrIpv4": r.cidr} if r.cidr else {}),
                    **({"ReferencedGroupInfo": {"GroupId": r.group_id}} if r.group_id else {}),
                }
                for r in rules
            ]
        return out

    return await retry_on_conflict(attempt)


@ec2_operation("AuthorizeSecurityGroupIngress")
async def authorize_ingress(env: Env, ctx: RequestContext, req: Request) -> Response:
    return await _change(env, ctx, req, add=True)


@ec2_operation("RevokeSecurityGroupIngress")
async def revoke_ingress(env: Env, ctx: RequestContext, req: Request) -> Response:
    return await _change(env, ctx, req, add=False)
