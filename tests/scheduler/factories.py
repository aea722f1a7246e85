"""Instance views for scheduler tests (pure: no store, no cache)."""

from __future__ import annotations

from typing import Any

from dockyard.domain.resources import Resources
from dockyard.scheduler import InstanceView

R = Resources


def inst(name: str, cpu: int = 1024, memory: int = 1024, **kw: Any) -> InstanceView:
    """An ACTIVE, connected instance ``arn:ci/<name>`` with nothing reserved (override with kw)."""
    registered = R(cpu, memory, frozenset({22}))
    fields: dict[str, Any] = {
        "arn": f"arn:ci/{name}",
        "id": name,
        "status": "ACTIVE",
        "agent_connected": True,
        "registered": registered,
        "remaining": registered,
        "attributes": {"ecs.os-type": "linux"},
        "ec2_instance_id": f"i-{name}",
    }
    fields.update(kw)
    return InstanceView(**fields)
