"""Who may call what: every request is authorised here, in one place, by its principal.

- ``admin``: every operation.
- ``agent``: only the agent operations, and only for its own container instance (checked by the
  use case against ``Principal.instance_arn``).
"""

from __future__ import annotations

from dockyard.domain.errors import AccessDenied
from dockyard.services.context import Principal

AGENT_OPERATIONS = frozenset(
    {
        "DiscoverPollEndpoint",
        "SubmitTaskStateChange",
        "SubmitContainerStateChange",
        "SubmitAttachmentStateChanges",
        "DockyardAgentV1.Poll",
        "DockyardAgentV1.Report",
        "DockyardAgentV1.NetworkRules",  # awsvpc: the resolved rules of its tasks' groups
    }
)


def authorize(principal: Principal, operation: str) -> None:
    if principal.kind == "admin":
        return
    if principal.kind == "agent" and operation in AGENT_OPERATIONS:
        return
    raise AccessDenied(
        f"User: {principal.access_key_id} is not authorized to perform: ecs:{operation} "
        "because no identity-based policy allows the ecs:" + operation + " action"
    )
