"""Where instance, allocation, liveness, task and client-token documents live in the store.

Kind first, then account, region and cluster, so the cache can follow each kind with one prefix::

    /instances/<account>/<region>/<cluster>/<id>        ContainerInstance registration
    /allocations/<account>/<region>/<cluster>/<id>      Allocation record (what placement compares)
    /liveness/<account>/<region>/<cluster>/<id>         written with the agent's lease (agentConnected)
    /tasks/<account>/<region>/<cluster>/<id>            Task document
    /client-tokens/<account>/<region>/<cluster>/<hex token> RunTask clientToken -> the tasks it made

They live here rather than in ``services.keys`` because placement (below services) writes them;
``services.keys`` re-exports them.
"""

from __future__ import annotations

from typing import NamedTuple

INSTANCES = "instances"
ALLOCATIONS = "allocations"
LIVENESS = "liveness"
TASKS = "tasks"
CLIENT_TOKENS = "client-tokens"
KINDS = frozenset({INSTANCES, ALLOCATIONS, LIVENESS, TASKS})  # what the cluster cache follows


class Scope(NamedTuple):
    """One cluster of one account in one region."""

    account: str
    region: str
    cluster: str


def _key(kind: str, scope: Scope, name: str) -> str:
    return f"/{kind}/{scope.account}/{scope.region}/{scope.cluster}/{name}"


def prefix(kind: str, scope: Scope | None = None) -> str:
    if scope is None:
        return f"/{kind}/"
    return f"/{kind}/{scope.account}/{scope.region}/{scope.cluster}/"


def instance(scope: Scope, instance_id: str) -> str:
    return _key(INSTANCES, scope, instance_id)


def allocation(scope: Scope, instance_id: str) -> str:
    return _key(ALLOCATIONS, scope, instance_id)


def liveness(scope: Scope, instance_id: str) -> str:
    return _key(LIVENESS, scope, instance_id)


def task(scope: Scope, task_id: str) -> str:
    return _key(TASKS, scope, task_id)


def client_token(scope: Scope, token: str) -> str:
    """Hex-encoded, so any token (ECS allows up to 64 characters) makes one path segment."""
    return _key(CLIENT_TOKENS, scope, token.encode().hex())


def parse(key: str) -> tuple[str, Scope, str] | None:
    """(kind, scope, name) of a key laid out as above; None for any other key."""
    parts = key.split("/")
    if len(parts) != 6 or parts[0] != "" or not all(parts[1:]):
        return None
    return parts[1], Scope(parts[2], parts[3], parts[4]), parts[5]
