"""Ids of new tasks and their containers: random version-4 UUIDs as ``uuid.uuid4().hex`` writes
them, all of one placement's from one read of the OS's randomness. Each read gives up the GIL,
which under load the store's writer thread takes, so a read per id (``uuid4``) costs a thread
switch per id. Shared by RunTask/StartTask (``services.tasks``) and the service controller."""

from __future__ import annotations

import os


def new_ids(n: int) -> list[str]:
    """``n`` random version-4 UUIDs in hex, from one read."""
    raw = bytearray(os.urandom(16 * n))
    for i in range(6, 16 * n, 16):
        raw[i] = (raw[i] & 0x0F) | 0x40  # version 4
        raw[i + 2] = (raw[i + 2] & 0x3F) | 0x80  # RFC 4122 variant
    digits = raw.hex()
    return [digits[i : i + 32] for i in range(0, 32 * n, 32)]


def task_ids(tasks: int, containers: int) -> tuple[list[str], list[list[str]]]:
    """Ids for ``tasks`` tasks of ``containers`` containers each: the tasks', and each task's
    containers', from one read."""
    per_task = 1 + containers
    ids = new_ids(tasks * per_task)
    return ids[::per_task], [ids[i * per_task + 1 : (i + 1) * per_task] for i in range(tasks)]
