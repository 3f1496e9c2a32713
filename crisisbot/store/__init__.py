"""Persistence: pick the backend named by the store URL."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Callable

from crisisbot.store.base import Store


def open_store(url: str, data_dir: Path, now: Callable[[], datetime] | None = None, reader: bool = False) -> Store:
    """`sqlite:///path` (default, `{data}` is the data directory); other backends plug in here.
    `now`: the daemon's clock, for the times the store stamps (default: the wall clock).
    `reader`: another process's read-only view of the daemon's store (see `SqliteStore`)."""
    url = url.replace("{data}", str(data_dir))
    if url.startswith("sqlite:///"):
        from crisisbot.store.sqlite import SqliteStore

        path = Path(url[len("sqlite:///"):])
        return SqliteStore(path, reader=reader) if now is None else SqliteStore(path, now=now, reader=reader)
    raise ValueError(f"unsupported store URL scheme '{url.split(':', 1)[0]}'; use sqlite:///path")


@asynccontextmanager
async def opened_store(url: str, data_dir: Path, reader: bool = False) -> AsyncIterator[Store]:
    """The store, open for the duration of a command (CLI reads and reports)."""
    store = open_store(url, data_dir, reader=reader)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
