"""Reading HAProxy's runtime state (PURE parsers) and judging target health from it.

``show servers state`` (format version 1) gives each server's address, operational state and
administrative flags; ``show stat`` (CSV) gives the check status, code and failure count. From
these ``judge`` derives what DescribeTargetHealth reports:

    status UP / UP n/m (going down) / DRAIN / NOLB    healthy
    status DOWN, never UP for this registration,
        fewer failed checks than the threshold       initial   Elb.InitialHealthChecking
    status DOWN otherwise                            unhealthy (reason from check_status:
        L7STS -> Target.ResponseCodeMismatch, L4TOUT/L7TOUT -> Target.Timeout,
        anything else -> Target.FailedHealthChecks)
    MAINT (being brought in)                         initial
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from dockyard.domain.target_groups import HEALTHY, INITIAL, UNHEALTHY

# srv_admin_state flags that take a server out of service (CMAINT 0x04 stays set as a mere
# "came from the configuration" mark once the server is enabled, so it is not one of them)
FMAINT, IMAINT, CMAINT, FDRAIN, IDRAIN, RMAINT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
MAINT_FLAGS = FMAINT | IMAINT | RMAINT
DRAIN_FLAGS = FDRAIN | IDRAIN
UP_STATES = (1, 2, 3)  # starting, running, stopping


@dataclass(frozen=True)
class ServerState:
    backend: str
    name: str
    address: str
    port: int
    op_state: int
    admin_state: int

    @property
    def maint(self) -> bool:
        return bool(self.admin_state & MAINT_FLAGS)

    @property
    def drain(self) -> bool:
        return bool(self.admin_state & DRAIN_FLAGS)


def parse_servers_state(text: str) -> dict[tuple[str, str], ServerState]:
    """``show servers state`` -> {(backend, server): state}. Unknown versions yield nothing."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() != "1":
        return {}
    out: dict[tuple[str, str], ServerState] = {}
    for line in lines[1:]:
        if line.startswith("#"):
            continue
        f = line.split()
        if len(f) < 19:
            continue
        state = ServerState(
            backend=f[1],
            name=f[3],
            address=f[4],
            port=int(f[18]) if f[18].isdigit() else 0,
            op_state=int(f[5]),
            admin_state=int(f[6]),
        )
        out[(state.backend, state.name)] = state
    return out


@dataclass(frozen=True)
class ServerStat:
    backend: str
    name: str
    status: str
    check_status: str
    check_code: str
    check_failures: int


def parse_stat(text: str) -> dict[tuple[str, str], ServerStat]:
    """``show stat`` CSV -> the server rows (frontends and backend totals are left out)."""
    body = text.lstrip("# ")
    out: dict[tuple[str, str], ServerStat] = {}
    for row in csv.DictReader(io.StringIO(body)):
        name = row.get("svname") or ""
        if row.get("type") != "2" or name in ("FRONTEND", "BACKEND"):
            continue
        backend = row.get("pxname") or ""
        out[(backend, name)] = ServerStat(
            backend=backend,
            name=name,
            status=(row.get("status") or "").strip(),
            check_status=(row.get("check_status") or "").lstrip("* ").strip(),
            check_code=(row.get("check_code") or "").strip(),
            check_failures=int(row.get("chkfail") or 0),
        )
    return out


@dataclass(frozen=True)
class Verdict:
    state: str  # initial | healthy | unhealthy
    reason: str | None = None
    description: str | None = None


def _failure(stat: ServerStat) -> Verdict:
    if stat.check_status == "L7STS":
        codes = f" [{stat.check_code}]" if stat.check_code else ""
        return Verdict(
            UNHEALTHY, "Target.ResponseCodeMismatch", f"Health checks failed with these codes:{codes}"
        )
    if stat.check_status in ("L4TOUT", "L7TOUT", "L6TOUT"):
        return Verdict(UNHEALTHY, "Target.Timeout", "Request timed out")
    return Verdict(UNHEALTHY, "Target.FailedHealthChecks", "Health checks failed")


def judge(stat: ServerStat, ever_up: bool, unhealthy_threshold: int) -> Verdict:
    status = stat.status.upper()
    if status.startswith(("UP", "DRAIN", "NOLB")):
        return Verdict(HEALTHY)
    if status.startswith("DOWN"):
        if not ever_up and stat.check_failures < unhealthy_threshold:
            return Verdict(INITIAL, "Elb.InitialHealthChecking", "Initial health checks in progress")
        return _failure(stat)
    return Verdict(INITIAL, "Elb.InitialHealthChecking", "Initial health checks in progress")
