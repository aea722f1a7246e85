"""Request ids: UUID-shaped, unique within a process, and different between processes."""

from __future__ import annotations

import uuid

from dockyard.api.calls import _RequestIds, new_request_id


def test_request_ids_are_uuid_shaped_and_unique():
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:5] + ids[-5:]:
        assert str(uuid.UUID(rid)) == rid


def test_two_generators_do_not_share_ids():
    a, b = _RequestIds(), _RequestIds()
    assert {a.next() for _ in range(100)}.isdisjoint({b.next() for _ in range(100)})
