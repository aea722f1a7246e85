"""Where load-balancing documents live in the store.

Written by the ELBv2 API (``services``) and the services controller, under ``/elb/``::

    /elb/load-balancers/<account>/<region>/<name>                   LoadBalancer
    /elb/addresses/<ip>                                              claim: the LB using a listen address
    /elb/target-groups/<account>/<region>/<name>                    TargetGroup
    /elb/targets/<account>/<region>/<tg id>/<target id>_<port>      Registration
    /elb/listeners/<account>/<region>/<lb id>/<listener id>         Listener
    /elb/listener-ports/<account>/<region>/<lb id>/<port>           claim: one listener per port
    /elb/rules/<account>/<region>/<listener id>/<rule id>           Rule
    /elb/rule-priorities/<account>/<region>/<listener id>/<prio>    claim: one rule per priority

Written by the data plane (the load-balancer reconciler), outside ``/elb/`` so that its own writes
never wake its watch::

    /elb-health/<account>/<region>/<tg id>/<target id>_<port>       HealthRecord
    /elb-dataplane/<account>/<region>/<lb name>                      data plane status of one LB
"""

from __future__ import annotations

ROOT = "/elb/"
LOAD_BALANCERS = "/elb/load-balancers/"
TARGET_GROUPS = "/elb/target-groups/"
TARGETS = "/elb/targets/"
LISTENERS = "/elb/listeners/"
RULES = "/elb/rules/"
HEALTH = "/elb-health/"
DATAPLANE = "/elb-dataplane/"


def load_balancer(account: str, region: str, name: str) -> str:
    return f"{LOAD_BALANCERS}{account}/{region}/{name}"


def load_balancers_prefix(account: str, region: str) -> str:
    return f"{LOAD_BALANCERS}{account}/{region}/"


def address(ip: str) -> str:
    return f"/elb/addresses/{ip}"


ADDRESSES = "/elb/addresses/"


def target_group(account: str, region: str, name: str) -> str:
    return f"{TARGET_GROUPS}{account}/{region}/{name}"


def target_groups_prefix(account: str, region: str) -> str:
    return f"{TARGET_GROUPS}{account}/{region}/"


def target(account: str, region: str, tg_id: str, key: str) -> str:
    return f"{TARGETS}{account}/{region}/{tg_id}/{key}"


def targets_prefix(account: str, region: str, tg_id: str) -> str:
    return f"{TARGETS}{account}/{region}/{tg_id}/"


def listener(account: str, region: str, lb_id: str, listener_id: str) -> str:
    return f"{LISTENERS}{account}/{region}/{lb_id}/{listener_id}"


def listeners_prefix(account: str, region: str, lb_id: str) -> str:
    return f"{LISTENERS}{account}/{region}/{lb_id}/"


def listener_port(account: str, region: str, lb_id: str, port: int) -> str:
    return f"/elb/listener-ports/{account}/{region}/{lb_id}/{port}"


def rule(account: str, region: str, listener_id: str, rule_id: str) -> str:
    return f"{RULES}{account}/{region}/{listener_id}/{rule_id}"


def rules_prefix(account: str, region: str, listener_id: str) -> str:
    return f"{RULES}{account}/{region}/{listener_id}/"


def rule_priority(account: str, region: str, listener_id: str, priority: int) -> str:
    return f"/elb/rule-priorities/{account}/{region}/{listener_id}/{priority:05d}"


def health(account: str, region: str, tg_id: str, key: str) -> str:
    return f"{HEALTH}{account}/{region}/{tg_id}/{key}"


def health_prefix(account: str, region: str, tg_id: str) -> str:
    return f"{HEALTH}{account}/{region}/{tg_id}/"


def dataplane(account: str, region: str, lb_name: str) -> str:
    return f"{DATAPLANE}{account}/{region}/{lb_name}"


def scope_of(key: str) -> tuple[str, str]:
    """(account, region) of any key above that is scoped by them."""
    parts = key.split("/")
    return parts[3], parts[4]
