"""New tasks' ids (placement/ids.py): random version-4 UUIDs written as ``uuid4().hex``."""

from __future__ import annotations

import uuid

from dockyard.placement.ids import new_ids, task_ids


def test_ids_are_distinct_version_4_uuids_in_hex() -> None:
    ids = new_ids(40)
    assert len(set(ids)) == 40
    for text in ids:
        parsed = uuid.UUID(hex=text)
        assert parsed.hex == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_task_ids_give_each_task_its_containers_ids() -> None:
    tasks, containers = task_ids(3, 2)
    assert len(tasks) == 3 and [len(c) for c in containers] == [2, 2, 2]
    assert len({*tasks, *(c for cs in containers for c in cs)}) == 9
