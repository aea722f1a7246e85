"""Container instances: hosts running the agent, their registration and their allocation record.

Three documents describe one instance (see ``placement.keys``), kept apart so unrelated writes
never conflict (ARCHITECTURE.md, "Optimistic concurrency"):

- the **registration** (``ContainerInstance``): ARN, ``ec2InstanceId``, registered resources,
  attributes, versionInfo, status; written by registration, status changes and deregistration;
- the **allocation record** (``Allocation``): what placement reserved on the instance, per task, and
  the status placement must respect (mirrored from the registration in the same transaction). It is
  the only document placement compares, so heartbeats and attribute changes never conflict with it;
- the **liveness** key, leased; present while the agent keeps polling (``agentConnected``).

Status: ACTIVE -> DRAINING (no new tasks) -> ACTIVE, and ACTIVE/DRAINING -> INACTIVE
(deregistered; shown for a while, then removed by the retention sweep).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import orjson

from dockyard.domain.errors import InvalidParameter
from dockyard.domain.resources import NONE, Resources, remaining, total
from dockyard.domain.tags import Tag

AVAILABILITY_ZONE = "ecs.availability-zone"
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_./-]{1,128}$")
_EC2_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_ATTRIBUTES = 500


class InstanceStatus(StrEnum):
    ACTIVE = "ACTIVE"
    DRAINING = "DRAINING"
    INACTIVE = "INACTIVE"


Attribute = tuple[str, str | None]


@dataclass(frozen=True)
class ContainerInstance:
    arn: str
    id: str
    cluster: str
    ec2_instance_id: str
    registered: Resources
    status: InstanceStatus = InstanceStatus.ACTIVE
    attributes: tuple[Attribute, ...] = ()
    version_info: Mapping[str, Any] = field(default_factory=dict)
    registered_at: float = 0.0
    deregistered_at: float | None = None
    private_ip: str | None = None
    tags: tuple[Tag, ...] = ()

    def attribute_map(self) -> dict[str, str | None]:
        return dict(self.attributes)

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "containerInstanceArn": self.arn,
            "id": self.id,
            "cluster": self.cluster,
            "ec2InstanceId": self.ec2_instance_id,
            "registered": self.registered.to_document(),
            "status": self.status.value,
            "attributes": _attributes_wire(self.attributes),
            "versionInfo": dict(self.version_info),
            "registeredAt": self.registered_at,
            "tags": [{"key": k, "value": v} for k, v in self.tags],
        }
        if self.deregistered_at is not None:
            doc["deregisteredAt"] = self.deregistered_at
        if self.private_ip is not None:
            doc["privateIp"] = self.private_ip
        return doc

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> ContainerInstance:
        return ContainerInstance(
            arn=doc["containerInstanceArn"],
            id=doc["id"],
            cluster=doc["cluster"],
            ec2_instance_id=doc["ec2InstanceId"],
            registered=Resources.from_document(doc["registered"]),
            status=InstanceStatus(doc.get("status", "ACTIVE")),
            attributes=tuple((a["name"], a.get("value")) for a in doc.get("attributes", ())),
            version_info=doc.get("versionInfo") or {},
            registered_at=float(doc.get("registeredAt", 0.0)),
            deregistered_at=doc.get("deregisteredAt"),
            private_ip=doc.get("privateIp"),
            tags=tuple((t["key"], t.get("value", "")) for t in doc.get("tags", ())),
        )

    def to_wire(
        self,
        *,
        left: Resources,
        running: int,
        pending: int,
        agent_connected: bool,
        version: int,
        include_tags: bool = False,
    ) -> dict[str, Any]:
        """ECS's ContainerInstance shape; ``left`` is what remains after the instance's reservations."""
        out: dict[str, Any] = {
            "containerInstanceArn": self.arn,
            "ec2InstanceId": self.ec2_instance_id,
            "version": version,
            "versionInfo": dict(self.version_info),
            "remainingResources": left.to_wire(),
            "registeredResources": self.registered.to_wire(),
            "status": self.status.value,
            "agentConnected": agent_connected,
            "runningTasksCount": running,
            "pendingTasksCount": pending,
            "attributes": _attributes_wire(self.attributes),
            "registeredAt": self.registered_at,
            "attachments": [],
        }
        if include_tags:
            out["tags"] = [{"key": k, "value": v} for k, v in self.tags]
        return out


# the reservation ``_reservation_member`` encoded last, and its encoded document
_last_encoded: tuple[Resources, bytes] = (NONE, orjson.dumps(NONE.to_document()))


def _reservation_member(task_id: str, need: Resources) -> bytes:
    """``"task_id":{...}``, the member ``orjson.dumps`` writes for ``task_id: need.to_document()``
    inside an object. The tasks one RunTask places share one reservation object, so the document
    encoded for the last one is used again when ``need`` is that very object (a ``Resources`` never
    changes; the pair is replaced whole, never torn). Keyed by identity, not value: comparing
    equal reservations cost more than encoding one."""
    global _last_encoded
    last, encoded = _last_encoded
    if need is not last:
        encoded = orjson.dumps(need.to_document())
        _last_encoded = (need, encoded)
    return orjson.dumps(task_id) + b":" + encoded


def _attributes_wire(attributes: Iterable[Attribute]) -> list[dict[str, Any]]:
    return [{"name": n} if v is None else {"name": n, "value": v} for n, v in attributes]


@dataclass(frozen=True)
class Allocation:
    """What placement reserved on one instance (per task id) and the status it must respect.

    ``groups`` names each reserving task's task group (RunTask's ``group``, ``service:NAME``), so
    the record placement compares also answers "which groups run here" for ``spread`` and
    ``distinctInstance``: two placers racing for one instance conflict on this record, never decide
    from a stale view of its groups.

    What ``reserved``, ``group_counts`` and ``to_json`` derive from the reservations (for
    ``to_json``: each reservation's encoded part of the document) is computed once per record and
    kept on it (a record never changes); ``with_tasks`` and ``without`` derive the next record's from
    it by the difference when they can, so placing a task on an instance with many costs a few dict
    copies rather than a pass over every reservation. (Kept in the instance's
    ``__dict__`` by hand rather than with ``functools.cached_property``, which on Python 3.11 takes
    a lock on every first computation, and every record is new.)
    """

    status: InstanceStatus = InstanceStatus.ACTIVE
    tasks: Mapping[str, Resources] = field(default_factory=dict)
    groups: Mapping[str, str] = field(default_factory=dict)  # task id -> task group

    def reserved(self) -> Resources:
        found: Resources | None = self.__dict__.get("_reserved")
        if found is None:
            found = total(self.tasks.values())
            self.__dict__["_reserved"] = found
        return found

    def left_of(self, registered: Resources) -> Resources:
        return remaining(registered, self.reserved())

    def group_counts(self) -> dict[str, int]:
        """How many reserving tasks each group has here."""
        return dict(self._counts())

    def _counts(self) -> dict[str, int]:
        found: dict[str, int] | None = self.__dict__.get("_group_counts")
        if found is None:
            found = {}
            for task_id, group in self.groups.items():
                if task_id in self.tasks:
                    found[group] = found.get(group, 0) + 1
            self.__dict__["_group_counts"] = found
        return found

    def _task_members(self) -> dict[str, bytes]:
        """Each reservation as the encoded member (``"id":{...}``) of the document's ``tasks``."""
        found: dict[str, bytes] | None = self.__dict__.get("_task_json")
        if found is None:
            found = {k: _reservation_member(k, v) for k, v in self.tasks.items()}
            self.__dict__["_task_json"] = found
        return found

    def with_tasks(
        self, reservations: Mapping[str, Resources], groups: Mapping[str, str] | None = None
    ) -> Allocation:
        tasks = {**self.tasks, **reservations}
        merged = {**self.groups, **groups} if groups else dict(self.groups)
        out = _allocation(self.status, tasks, merged)
        fresh = len(tasks) == len(self.tasks) + len(reservations)  # no reservation replaced
        if not fresh or (groups and not groups.keys() <= reservations.keys()):
            return out  # a reservation replaced, or a task already here regrouped: derive afresh
        cached, derived = self.__dict__, out.__dict__  # (a frozen record's own cache: set directly)
        if "_reserved" in cached:
            added = (
                next(iter(reservations.values())) if len(reservations) == 1 else total(reservations.values())
            )
            derived["_reserved"] = cached["_reserved"] + added
        if "_group_counts" in cached:
            counts = dict(cached["_group_counts"])
            for task_id in reservations:
                group = merged.get(task_id)
                if group is not None:
                    counts[group] = counts.get(group, 0) + 1
            derived["_group_counts"] = counts
        if "_task_json" in cached:
            members = dict(cached["_task_json"])
            for task_id, need in reservations.items():
                members[task_id] = _reservation_member(task_id, need)
            derived["_task_json"] = members
        return out

    def without(self, task_ids: Iterable[str]) -> Allocation:
        drop = set(task_ids)
        out = _allocation(
            self.status,
            {k: v for k, v in self.tasks.items() if k not in drop},
            {k: v for k, v in self.groups.items() if k not in drop},
        )
        gone = [self.tasks[k] for k in drop if k in self.tasks]
        cached = self.__dict__
        if "_reserved" in cached and not any(r.ports or r.ports_udp for r in gone):
            # amounts subtract exactly; the port sets stay as they are when no freed task bound a port
            had, freed = cached["_reserved"], total(gone)
            left = Resources(
                had.cpu - freed.cpu,
                had.memory - freed.memory,
                had.ports,
                had.ports_udp,
                had.enis - freed.enis,
            )
            out.__dict__["_reserved"] = left
        if "_group_counts" in cached:
            counts = dict(cached["_group_counts"])
            for task_id in drop:
                group = self.groups.get(task_id)
                if group is not None and task_id in self.tasks:
                    counts[group] -= 1
                    if not counts[group]:
                        del counts[group]
            out.__dict__["_group_counts"] = counts
        if "_task_json" in cached:
            members = {k: v for k, v in cached["_task_json"].items() if k not in drop}
            out.__dict__["_task_json"] = members
        return out

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "status": self.status.value,
            "tasks": {k: v.to_document() for k, v in self.tasks.items()},
        }
        if self.groups:
            doc["groups"] = dict(self.groups)
        return doc

    def to_json(self) -> bytes:
        """``to_document``'s bytes as ``orjson.dumps`` writes them, joined from the encoded
        reservations the record keeps (``_task_members``): a record grows by one task at a time, so
        only that task's part is encoded, not every reservation on the instance again."""
        members = b",".join(self._task_members().values())
        if not self.groups:
            return _HEAD[self.status] + members + b"}}"
        groups = self.groups if isinstance(self.groups, dict) else dict(self.groups)
        return b"".join((_HEAD[self.status], members, b'},"groups":', orjson.dumps(groups), b"}"))

    @staticmethod
    def from_document(doc: Mapping[str, Any]) -> Allocation:
        return Allocation(
            status=InstanceStatus(doc.get("status", "ACTIVE")),
            tasks={k: Resources.from_document(v) for k, v in (doc.get("tasks") or {}).items()},
            groups=dict(doc.get("groups") or {}),
        )


# each status's document up to its tasks' members: ``{"status":"ACTIVE","tasks":{``
_HEAD = {status: b'{"status":' + orjson.dumps(status.value) + b',"tasks":{' for status in InstanceStatus}


def _allocation(
    status: InstanceStatus, tasks: Mapping[str, Resources], groups: Mapping[str, str]
) -> Allocation:
    """``Allocation(status, tasks, groups)`` without the frozen ``__init__`` (which sets each field
    through ``object.__setattr__``): for the new record ``with_tasks`` and ``without`` return, which
    nobody has seen yet; placement makes one per instance it places on. (Allocation has no
    ``__post_init__`` to skip.)"""
    new: Allocation = object.__new__(Allocation)
    fields = new.__dict__
    fields["status"] = status
    fields["tasks"] = tasks
    fields["groups"] = groups
    return new


# ---- registration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityDocument:
    """What Dockyard reads of ``instanceIdentityDocument``: the host's id, address and zone."""

    instance_id: str | None = None
    private_ip: str | None = None
    availability_zone: str | None = None


def parse_identity_document(text: str | None) -> IdentityDocument:
    if not text:
        return IdentityDocument()
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise InvalidParameter("instanceIdentityDocument must be a JSON object.") from e
    if not isinstance(doc, dict):
        raise InvalidParameter("instanceIdentityDocument must be a JSON object.")
    instance_id = doc.get("instanceId")
    if instance_id is not None and (not isinstance(instance_id, str) or not _EC2_ID.match(instance_id)):
        raise InvalidParameter("instanceIdentityDocument.instanceId is not a valid instance id.")
    ip, zone = doc.get("privateIp"), doc.get("availabilityZone")
    return IdentityDocument(
        instance_id=instance_id,
        private_ip=str(ip) if isinstance(ip, str) else None,
        availability_zone=str(zone) if isinstance(zone, str) else None,
    )


def parse_attributes(wire: Sequence[Mapping[str, Any]] | None) -> tuple[Attribute, ...]:
    """Registration attributes ``[{name, value}]``; later duplicates win, order kept."""
    out: dict[str, str | None] = {}
    for a in wire or ():
        name = a.get("name")
        if not isinstance(name, str) or not _ATTRIBUTE_NAME.match(name):
            raise InvalidParameter(
                f"Invalid attribute name '{str(name)[:130]}': use 1 to 128 letters, numbers, hyphens, "
                "underscores, periods and slashes."
            )
        value = a.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > 128):
            raise InvalidParameter(f"Invalid value for attribute '{name}': at most 128 characters.")
        out[name] = value
    if len(out) > MAX_ATTRIBUTES:
        raise InvalidParameter(f"A container instance can have at most {MAX_ATTRIBUTES} attributes.")
    return tuple(out.items())


def registration(
    *,
    arn: str,
    instance_id: str,
    cluster: str,
    ec2_instance_id: str,
    registered: Resources,
    attributes: tuple[Attribute, ...],
    version_info: Mapping[str, Any],
    identity: IdentityDocument,
    tags: tuple[Tag, ...],
    now: float,
    previous: ContainerInstance | None = None,
) -> ContainerInstance:
    """A new registration, or ``previous`` re-registered (same id, status and registeredAt)."""
    attrs = dict(attributes)
    if identity.availability_zone and AVAILABILITY_ZONE not in attrs:
        attrs[AVAILABILITY_ZONE] = identity.availability_zone
    return ContainerInstance(
        arn=arn,
        id=instance_id,
        cluster=cluster,
        ec2_instance_id=ec2_instance_id,
        registered=registered,
        status=previous.status if previous is not None else InstanceStatus.ACTIVE,
        attributes=tuple(attrs.items()),
        version_info=dict(version_info),
        registered_at=previous.registered_at if previous is not None else now,
        private_ip=identity.private_ip,
        tags=tags or (previous.tags if previous is not None else ()),
    )


def with_status(instance: ContainerInstance, status: InstanceStatus, now: float) -> ContainerInstance:
    """ACTIVE <-> DRAINING, or -> INACTIVE (deregistered, stamped with ``now``)."""
    if status is InstanceStatus.INACTIVE:
        return replace(instance, status=status, deregistered_at=now)
    return replace(instance, status=status)
