"""``ChangeEvent``: set once, at the next change of one instance's desired set; long-polls wait on it
with a deadline (``ClusterCache.change_event``, the agent's Poll).

Like ``asyncio.Event`` (``set``, ``is_set``, ``wait``), except that ``wait`` takes the deadline
itself. Every waiter awaits a future of its own, which ``set`` resolves for all of them and a timer
resolves for that waiter alone: waiting on an ``asyncio.Event`` under ``asyncio.timeout`` costs a
cancellation scope and two more coroutines per wait, so a woken wait costs about half this way (and
a timed-out one needs no cancellation). The timer never sets the event (the other polls of the
instance keep waiting); a cancelled wait's future is cancelled with it and the cancellation
propagates; every wait removes its future on the way out, woken, timed out or cancelled.

No ``clear``: the cache hands out a new event after each change.
"""

from __future__ import annotations

import asyncio


class ChangeEvent:
    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[bool]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Wake every waiter (and every later ``wait`` returns at once)."""
        if self._set:
            return
        self._set = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(True)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the event is set (True) or ``timeout`` seconds pass (False)."""
        if self._set:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiters.remove(waiter)


def _expire(waiter: asyncio.Future[bool]) -> None:
    """A wait's deadline: that waiter (only) returns False."""
    if not waiter.done():
        waiter.set_result(False)
