"""RunTask's ids (services/tasks.py ``_new_ids``): random version-4 UUIDs written as ``uuid4().hex``."""

from __future__ import annotations

import uuid

from dockyard.services.tasks import _new_ids


def test_ids_are_distinct_version_4_uuids_in_hex() -> None:
    ids = _new_ids(40)
    assert len(set(ids)) == 40
    for text in ids:
        parsed = uuid.UUID(hex=text)
        assert parsed.hex == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
