"""PURE: a task's ingress policy as one nftables script.

Traffic on ``lo`` (the task's own containers) and replies to the task's own connections are always
admitted; egress is open; anything else must match a rule of one of the task's groups. The script
deletes and re-creates the table in one ``nft -f`` transaction, so a change never leaves a moment
with no rules or with half of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

TABLE = "dockyard"


def _rule(rule: Mapping[str, Any]) -> str | None:
    sources = ", ".join(str(s) for s in rule.get("sources") or ())
    if not sources:
        return None
    match = f"ip saddr {{ {sources} }}"
    protocol = rule.get("protocol")
    low, high = int(rule.get("fromPort", 0)), int(rule.get("toPort", 65535))
    ports = f"{low}" if low == high else f"{low}-{high}"
    if protocol in ("tcp", "udp"):
        return f"{match} {protocol} dport {ports} accept"
    if protocol == "icmp":
        return f"{match} ip protocol icmp accept"
    return f"{match} accept"


def ruleset(rules: Iterable[Mapping[str, Any]]) -> str:
    lines = [
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "  chain ingress {",
        "    type filter hook input priority 0; policy drop;",
        '    iif "lo" accept',
        "    ct state established,related accept",
        "    ip protocol icmp icmp type { echo-reply, destination-unreachable, time-exceeded } accept",
    ]
    seen = set()
    for r in rules:
        text = _rule(r)
        if text is not None and text not in seen:
            seen.add(text)
            lines.append("    " + text)
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def task_rules(
    groups: Iterable[str], resolved: Mapping[str, Iterable[Mapping[str, Any]]]
) -> list[Mapping[str, Any]]:
    return [r for g in groups for r in resolved.get(g, ())]
