"""Client side of the daemon's local control socket (JSON lines, mode 0600)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

from crisisbot.errors import DaemonBusy  # noqa: F401 - re-exported for existing importers

CONNECT_WAIT = 10.0  # seconds to keep trying a daemon whose socket backlog is full
_RETRY = 0.05


async def _connect(path: Path, wait: float) -> socket.socket | None:
    """A connected socket; None when no daemon listens (no socket file, or nobody behind it).

    Connected by hand because asyncio reports a full listen backlog (EAGAIN on a
    Unix socket) as a successful connection that then fails with EINVAL.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        except BlockingIOError:  # the daemon is alive but has not accepted its waiting clients yet
            sock.close()
        except BaseException:
            sock.close()
            raise
        if loop.time() >= deadline:
            raise DaemonBusy(f"a daemon is running (control socket {path}) but is too busy to take the request "
                             f"after {wait:g}s; nothing was done in this process — try again")
        await asyncio.sleep(_RETRY)


async def ask_daemon(path: Path, request: dict[str, Any], timeout: float = 120.0,
                     connect_wait: float = CONNECT_WAIT) -> dict[str, Any] | None:
    """The running daemon's reply to `request`; None when no daemon listens."""
    sock = await _connect(path, connect_wait)
    if sock is None:
        return None
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        writer.write(json.dumps(request, default=str).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        raise DaemonBusy(f"the running daemon took the request but did not answer within {timeout:g}s; "
                         "it may still carry it out — check with `crisisbot incidents`") from None
    except ConnectionError as exc:
        raise DaemonBusy(f"the running daemon closed the connection ({exc}); check with `crisisbot incidents`") from None
    finally:
        writer.close()
    if not line:
        raise DaemonBusy("the running daemon closed the connection without answering; "
                         "check with `crisisbot incidents`")
    return json.loads(line)
