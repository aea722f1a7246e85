"""State stores: the StateStore protocol (``base``) and its backends, opened by URL.

``memory://`` is the reference backend (one process, nothing persisted); ``sqlite:///abs/path.db``
is the embedded default (one durable file, group commit). See each module's docstring.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from dockyard.clock import Clock
from dockyard.store.base import StateStore


def open_store(url: str, clock: Clock | None = None) -> StateStore:
    """Open the store that ``url`` names: ``memory://`` or ``sqlite:///absolute/path/state.db``."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        from dockyard.store.memory import MemoryStore

        return MemoryStore(clock)
    if parts.scheme == "sqlite":
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise ValueError(f"expected sqlite:///absolute/path/to/state.db, got {url!r}")
        from dockyard.store.sqlite import SqliteStore

        return SqliteStore(parts.path, clock)
    raise ValueError(f"unknown store URL scheme in {url!r}: expected memory:// or sqlite:///path")
