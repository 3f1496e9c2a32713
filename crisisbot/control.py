"""Client side of the daemon's local control socket (JSON lines, mode 0600)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any


async def ask_daemon(path: Path, request: dict[str, Any], timeout: float = 120.0) -> dict[str, Any] | None:
    """The running daemon's reply to `request`; None when no daemon listens."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    try:
        writer.write(json.dumps(request, default=str).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    return json.loads(line)
