"""Where each kind of document lives in the store.

Kind first, then account and region, so a controller can scan one kind across every scope::

    /clusters/<account>/<region>/<name>                         Cluster document
    /taskdef-families/<account>/<region>/<family>               family record: lastRevision (the revision
                                                                counter), activeRevisions, storedRevisions
    /taskdefs/<account>/<region>/<family>/<revision:010d>       TaskDefinition document
    /tasks/<account>/<region>/<cluster>/<id>                    Task document
    /instances/<account>/<region>/<cluster>/<id>                ContainerInstance registration
    /allocations/<account>/<region>/<cluster>/<id>              what placement reserved on the instance
    /liveness/<account>/<region>/<cluster>/<id>                 leased; present while the agent polls
    /client-tokens/<account>/<region>/<cluster>/<hex token>     RunTask clientToken -> its tasks
    /services/<account>/<region>/<cluster>/<name>               Service document (services issue)
    /iam/access-keys/<access key id>                            issued credentials
"""

from __future__ import annotations

# Instance, allocation, liveness, task and client-token keys are written by placement (below this
# layer), so they are defined there; these names re-export them.
from dockyard.placement import keys as _placement
from dockyard.placement.keys import CLIENT_TOKENS as CLIENT_TOKENS
from dockyard.placement.keys import INSTANCES as INSTANCES
from dockyard.placement.keys import TASKS as TASKS
from dockyard.placement.keys import Scope as Scope
from dockyard.placement.keys import allocation as allocation
from dockyard.placement.keys import client_token as client_token
from dockyard.placement.keys import instance as instance
from dockyard.placement.keys import liveness as liveness
from dockyard.placement.keys import task as task

parse_scoped = _placement.parse
kind_prefix = _placement.prefix


def cluster(account: str, region: str, name: str) -> str:
    return f"/clusters/{account}/{region}/{name}"


def clusters_prefix(account: str | None = None, region: str | None = None) -> str:
    if account is None:
        return "/clusters/"
    return f"/clusters/{account}/{region}/"


def taskdef_family(account: str, region: str, family: str) -> str:
    return f"/taskdef-families/{account}/{region}/{family}"


def taskdef_families_prefix(account: str, region: str) -> str:
    return f"/taskdef-families/{account}/{region}/"


def taskdef(account: str, region: str, family: str, revision: int) -> str:
    return f"/taskdefs/{account}/{region}/{family}/{revision:010d}"


def taskdefs_prefix(account: str | None = None, region: str | None = None, family: str | None = None) -> str:
    if account is None:
        return "/taskdefs/"
    base = f"/taskdefs/{account}/{region}/"
    return f"{base}{family}/" if family is not None else base


def tasks_prefix(account: str, region: str, cluster: str) -> str:
    return kind_prefix(TASKS, Scope(account, region, cluster))


def instances_prefix(account: str, region: str, cluster: str) -> str:
    return kind_prefix(INSTANCES, Scope(account, region, cluster))


def services_prefix(account: str | None = None, region: str | None = None, cluster: str | None = None) -> str:
    if account is None:
        return "/services/"
    return f"/services/{account}/{region}/{cluster}/"


def service(account: str, region: str, cluster: str, name: str) -> str:
    return f"{services_prefix(account, region, cluster)}{name}"


def access_key(access_key_id: str) -> str:
    return f"/iam/access-keys/{access_key_id}"


ACCESS_KEYS_PREFIX = "/iam/access-keys/"
