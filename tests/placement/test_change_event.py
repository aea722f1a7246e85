"""ChangeEvent: one instance's long-polls wait on it with a deadline; a deadline ends that wait only."""

from __future__ import annotations

import asyncio

import pytest

from dockyard.placement.change_event import ChangeEvent


async def test_set_wakes_every_waiter_and_later_waits_return_at_once() -> None:
    event = ChangeEvent()
    waits = [asyncio.create_task(event.wait(60)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waits)
    event.set()
    assert await asyncio.gather(*waits) == [True, True, True]
    assert event.is_set() and await event.wait(0) and await event.wait()
    assert event._waiters == []


async def test_a_deadline_ends_its_own_wait_only_and_never_sets_the_event() -> None:
    event = ChangeEvent()
    patient = asyncio.create_task(event.wait(60))
    assert await event.wait(0) is False  # its timer fired
    assert not event.is_set() and not patient.done()
    assert len(event._waiters) == 1  # the expired waiter is gone, the other one stays
    event.set()
    assert await patient is True
    assert event._waiters == []


async def test_cancelling_a_wait_propagates_and_leaves_the_others_waiting() -> None:
    event = ChangeEvent()
    cancelled = asyncio.create_task(event.wait(60))
    other = asyncio.create_task(event.wait(60))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not other.done() and not event.is_set() and len(event._waiters) == 1
    event.set()
    assert await other is True
    assert event._waiters == []
