"""ARNs of ECS resources, in AWS's long formats, and the parsers that accept a name or an ARN.

    arn:aws:ecs:<region>:<account>:cluster/<name>
    arn:aws:ecs:<region>:<account>:task-definition/<family>:<revision>
    arn:aws:ecs:<region>:<account>:task/<cluster>/<id>
    arn:aws:ecs:<region>:<account>:container-instance/<cluster>/<id>
    arn:aws:ecs:<region>:<account>:container/<cluster>/<task id>/<container id>
    arn:aws:ecs:<region>:<account>:service/<cluster>/<name>

The formatters take ``region`` before ``account``, the order in which they appear in the ARN.
The parsers raise ``InvalidParameter`` for text that looks like an ARN but is not one of ECS's; the
caller decides whether an ARN of another account or region means "not found".
Parsers also accept the old short formats (``task/<id>``, ``container-instance/<id>``,
``service/<name>``), in which the cluster is absent (``None``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockyard.domain.errors import ClientError, InvalidParameter

PARTITION = "aws"
SERVICE = "ecs"

CLUSTER = "cluster"
TASK_DEFINITION = "task-definition"
TASK = "task"
CONTAINER_INSTANCE = "container-instance"
CONTAINER = "container"
SERVICE_RESOURCE = "service"

_FAMILY = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_SHOWN = 300  # how much of a bad value an error message repeats


@dataclass(frozen=True)
class Arn:
    """A parsed ARN: ``arn:<partition>:<service>:<region>:<account>:<resource>``."""

    partition: str
    service: str
    region: str
    account: str
    resource: str

    @property
    def resource_type(self) -> str:
        """What comes before the first ``/`` of the resource (``cluster``, ``task``, ...)."""
        return self.resource.split("/", 1)[0]

    @property
    def resource_id(self) -> str:
        """What comes after the first ``/`` of the resource ("" when there is none)."""
        parts = self.resource.split("/", 1)
        return parts[1] if len(parts) == 2 else ""

    def __str__(self) -> str:
        return f"arn:{self.partition}:{self.service}:{self.region}:{self.account}:{self.resource}"


def is_arn(text: str) -> bool:
    return text.startswith("arn:")


def parse_arn(text: str) -> Arn:
    """Split an ECS ARN into its parts; ``InvalidParameter`` if it is not one."""
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[1] or parts[2] != SERVICE or not parts[5]:
        raise InvalidParameter(f"Invalid ARN: {text[:_SHOWN]}")
    return Arn(partition=parts[1], service=parts[2], region=parts[3], account=parts[4], resource=parts[5])


def resource_arn(region: str, account: str, resource: str) -> str:
    """``arn:aws:ecs:<region>:<account>:<resource>``."""
    return f"arn:{PARTITION}:{SERVICE}:{region}:{account}:{resource}"


_arn = resource_arn


def cluster_arn(region: str, account: str, name: str) -> str:
    return _arn(region, account, f"{CLUSTER}/{name}")


def task_definition_arn(region: str, account: str, family: str, revision: int) -> str:
    return _arn(region, account, f"{TASK_DEFINITION}/{family}:{revision}")


def task_arn(region: str, account: str, cluster: str, task_id: str) -> str:
    return _arn(region, account, f"{TASK}/{cluster}/{task_id}")


def container_instance_arn(region: str, account: str, cluster: str, instance_id: str) -> str:
    return _arn(region, account, f"{CONTAINER_INSTANCE}/{cluster}/{instance_id}")


def container_arn(region: str, account: str, cluster: str, task_id: str, container_id: str) -> str:
    return _arn(region, account, f"{CONTAINER}/{cluster}/{task_id}/{container_id}")


def service_arn(region: str, account: str, cluster: str, name: str) -> str:
    return _arn(region, account, f"{SERVICE_RESOURCE}/{cluster}/{name}")


def _resource_of(text: str, resource_type: str) -> tuple[Arn, str]:
    arn = parse_arn(text)
    if arn.resource_type != resource_type or not arn.resource_id:
        raise InvalidParameter(f"Invalid {resource_type} ARN: {text[:_SHOWN]}")
    return arn, arn.resource_id


def cluster_name(ref: str) -> str:
    """A cluster's name from its name or its ARN."""
    if not is_arn(ref):
        return ref
    _, name = _resource_of(ref, CLUSTER)
    return name


@dataclass(frozen=True)
class ClusterScoped:
    """A task, container instance or service named by id/name or ARN; ``cluster`` None if unknown."""

    cluster: str | None
    id: str
    arn: Arn | None = None


def _cluster_scoped(ref: str, resource_type: str) -> ClusterScoped:
    if not is_arn(ref):
        return ClusterScoped(cluster=None, id=ref)
    arn, rest = _resource_of(ref, resource_type)
    parts = rest.split("/")
    if len(parts) == 1:  # the old short format
        return ClusterScoped(cluster=None, id=parts[0], arn=arn)
    if len(parts) == 2 and all(parts):
        return ClusterScoped(cluster=parts[0], id=parts[1], arn=arn)
    raise InvalidParameter(f"Invalid {resource_type} ARN: {ref[:_SHOWN]}")


def parse_task(ref: str) -> ClusterScoped:
    """A task from its id or ARN."""
    return _cluster_scoped(ref, TASK)


def parse_container_instance(ref: str) -> ClusterScoped:
    """A container instance from its id or ARN."""
    return _cluster_scoped(ref, CONTAINER_INSTANCE)


def parse_service(ref: str) -> ClusterScoped:
    """A service from its name or ARN (``id`` is the service name)."""
    return _cluster_scoped(ref, SERVICE_RESOURCE)


@dataclass(frozen=True)
class TaskDefinitionRef:
    """``family``, ``family:revision`` or a task definition ARN; revision None means "latest ACTIVE"."""

    family: str
    revision: int | None
    arn: Arn | None = None

    def __str__(self) -> str:
        return self.family if self.revision is None else f"{self.family}:{self.revision}"


def parse_task_definition(ref: str) -> TaskDefinitionRef:
    """Parse ``family``, ``family:revision`` or ``arn:...:task-definition/family[:revision]``.

    A malformed family or revision is a ``ClientException``, as ECS reports it.
    """
    arn: Arn | None = None
    text = ref
    if is_arn(ref):
        arn, text = _resource_of(ref, TASK_DEFINITION)
    family, sep, revision_text = text.partition(":")
    if not _FAMILY.match(family):
        raise ClientError(f"Invalid task definition family: '{family[:_SHOWN]}'.")
    if not sep:
        return TaskDefinitionRef(family=family, revision=None, arn=arn)
    if not revision_text.isascii() or not revision_text.isdigit() or int(revision_text) < 1:
        raise ClientError(f"Invalid revision number. Number: {revision_text[:_SHOWN]}")
    return TaskDefinitionRef(family=family, revision=int(revision_text), arn=arn)
