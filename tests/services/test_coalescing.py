"""The Coalescer: per key one batch in flight, chunks of at most max_batch, answers after commit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from dockyard.services.coalescing import Coalescer


class Recorder:
    """A commit that records its batches and can be held open until released."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail: Exception | None = None  # raised by the next commit only

    async def __call__(self, key: str, items: Sequence[int]) -> list[int]:
        self.batches.append((key, list(items)))
        await self.release.wait()
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        return [item * 10 for item in items]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_items_of_a_key_commit_in_chunks() -> None:
    commit = Recorder()
    coalescer = Coalescer(commit, max_batch=4)
    results = await asyncio.gather(*(coalescer.submit("k", i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert commit.batches == [("k", [0, 1, 2, 3]), ("k", [4, 5, 6, 7]), ("k", [8, 9])]


async def test_what_arrives_during_a_commit_forms_the_next_batch_and_keys_run_side_by_side() -> None:
    commit = Recorder()
    commit.release.clear()
    coalescer = Coalescer(commit, max_batch=100)
    first = asyncio.ensure_future(coalescer.submit("a", 1))
    other = asyncio.ensure_future(coalescer.submit("b", 2))
    await settle()
    later = [asyncio.ensure_future(coalescer.submit("a", i)) for i in (3, 4)]
    await settle()
    assert commit.batches == [("a", [1]), ("b", [2])]  # one batch in flight per key
    assert not first.done()  # answered only once its commit returned
    commit.release.set()
    assert await asyncio.gather(first, other, *later) == [10, 20, 30, 40]
    assert commit.batches[2:] == [("a", [3, 4])]


async def test_a_failed_commit_fails_its_callers_only() -> None:
    commit = Recorder()
    commit.release.clear()
    commit.fail = RuntimeError("boom")
    coalescer = Coalescer(commit, max_batch=100)
    failing = [asyncio.ensure_future(coalescer.submit("k", i)) for i in range(3)]
    await settle()
    queued = asyncio.ensure_future(coalescer.submit("k", 7))
    await settle()
    commit.release.set()
    for future in failing:
        with pytest.raises(RuntimeError, match="boom"):
            await future
    assert await queued == 70


async def test_a_cancelled_caller_is_left_out_of_its_batch() -> None:
    commit = Recorder()
    commit.release.clear()
    coalescer = Coalescer(commit, max_batch=100)
    first = asyncio.ensure_future(coalescer.submit("k", 1))
    await settle()
    gone = asyncio.ensure_future(coalescer.submit("k", 2))
    kept = asyncio.ensure_future(coalescer.submit("k", 3))
    await settle()
    gone.cancel()
    commit.release.set()
    assert (await first, await kept) == (10, 30)
    assert commit.batches == [("k", [1]), ("k", [3])]


async def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Coalescer(Recorder(), max_batch=0)
