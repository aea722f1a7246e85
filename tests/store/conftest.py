"""Fixtures for the store suites: every backend behind one ``store`` fixture, on a FakeClock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.clock import Clock, FakeClock
from dockyard.store.base import StateStore
from dockyard.store.memory import MemoryStore
from dockyard.store.sqlite import SqliteStore

BACKENDS = ["memory", "sqlite"]


def make_store(backend: str, tmp_path: Path, clock: Clock | None = None, **options: object) -> StateStore:
    if backend == "memory":
        return MemoryStore(clock, **options)  # type: ignore[arg-type]
    if backend == "sqlite":
        return SqliteStore(tmp_path / "state.db", clock, **options)  # type: ignore[arg-type]
    raise ValueError(backend)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(backend: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[StateStore]:
    s = make_store(backend, tmp_path, clock)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db", clock)
    try:
        yield s
    finally:
        await s.close()
