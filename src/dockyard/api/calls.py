"""What every protocol of the api layer shares about one call: its request id, who made it, its
headers as one dict, the JSON content type, the agent operations' target prefix."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
AGENT_TARGET_PREFIX = "DockyardAgentV1."  # docs/agent-protocol.md: not in the ECS model, validated by hand


class _RequestIds:
    """Request ids in UUID form: a random 80-bit prefix per process and a counter, unique without
    asking the system for randomness on every request (uuid4 was a percent of a request)."""

    def __init__(self) -> None:
        prefix = os.urandom(10).hex()
        self._prefix = f"{prefix[:8]}-{prefix[8:12]}-4{prefix[13:16]}-{prefix[16:20]}-"
        self._counter = itertools.count(int.from_bytes(os.urandom(3), "big") << 24)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


new_request_id = _RequestIds().next


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its principal (``credentials.Principal``) and signing region."""

    principal: Any
    region: str


def lowered(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI headers (names already lower-case) as one dict; repeated headers joined with ','."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return headers
