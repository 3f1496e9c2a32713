"""Persistence: pick the backend named by the store URL."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from crisisbot.store.base import Store


def open_store(url: str, data_dir: Path) -> Store:
    """`sqlite:///path` (default, `{data}` is the data directory); other backends plug in here."""
    url = url.replace("{data}", str(data_dir))
    if url.startswith("sqlite:///"):
        from crisisbot.store.sqlite import SqliteStore

        return SqliteStore(Path(url[len("sqlite:///"):]))
    raise ValueError(f"unsupported store URL scheme '{url.split(':', 1)[0]}'; use sqlite:///path")


@asynccontextmanager
async def opened_store(url: str, data_dir: Path) -> AsyncIterator[Store]:
    """The store, open for the duration of a command (CLI reads and reports)."""
    store = open_store(url, data_dir)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
