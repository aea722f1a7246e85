"""Making each load balancer's ``DNSName`` resolve on this machine: lines in the hosts file.

A DNSName is ``<name>-<digits>.<region>.elb.dockyard.internal`` (``.internal`` is reserved for
private use; ``.localhost`` was tried first, but curl answers every ``*.localhost`` name with
127.0.0.1 itself without reading the hosts file). glibc's resolver reads ``/etc/hosts`` first
(``hosts: files dns``), so ``getaddrinfo``, curl, boto3 and browsers resolve it.

Each line Dockyard writes ends with a marker naming the server process that owns it::

    127.100.0.7  web-0001234567.us-east-1.elb.dockyard.internal  # dockyard-lb owner=4242

A server rewrites only its own lines, and drops lines of owners that are no longer running (a
server killed without cleaning up). Writers take an exclusive ``flock`` on the file and rewrite it
in place (the inode stays: the file may be a bind mount, as in containers).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

MARK = "# dockyard-lb owner="
_OWNER = re.compile(r"# dockyard-lb owner=(\d+)\s*$")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def render_hosts(
    text: str, entries: Mapping[str, str], owner: int, alive: Callable[[int], bool] = pid_alive
) -> str:
    """``text`` with this owner's lines replaced by ``entries`` (name -> address) (PURE but ``alive``)."""
    kept = []
    for line in text.splitlines():
        m = _OWNER.search(line)
        if m is None:
            kept.append(line)
            continue
        pid = int(m.group(1))
        if pid != owner and alive(pid):
            kept.append(line)
    kept += [f"{address}\t{name}\t{MARK}{owner}" for name, address in sorted(entries.items())]
    return "\n".join(kept) + "\n"


def write_hosts(path: Path, entries: Mapping[str, str], owner: int | None = None) -> None:
    """Replace this process's lines in ``path`` (``entries`` empty removes them)."""
    me = os.getpid() if owner is None else owner
    with open(path, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            text = f.read()
            updated = render_hosts(text, entries, me)
            if updated != text:
                f.seek(0)
                f.write(updated)
                f.truncate()
                f.flush()
                with contextlib.suppress(OSError):
                    os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
