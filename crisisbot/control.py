"""Both ends of the daemon's local control socket (JSON lines, mode 0600).

A request is one command (crisisbot/commands.py) in its wire form, the reply its
result or the refusal; `send` is the client, `answer` the daemon's side.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crisisbot.commands import Command, Result, decode, decode_result, encode, encode_error, encode_result
from crisisbot.errors import CommandInvalid, CommandRefused, DaemonBusy  # DaemonBusy: re-exported too
from crisisbot.retry import RetryPolicy

if TYPE_CHECKING:
    from crisisbot.command_bus import CommandBus

MAX_REPLY = 16 * 1024 * 1024  # bytes of one answer line: a long session list went over asyncio's 64 KiB
CONNECT_WAIT = 10.0  # seconds to keep trying a daemon whose socket backlog is full
_BUSY_RETRY = RetryPolicy(first=0.05, cap=0.05)  # a busy daemon's listen backlog: tried again every 50 ms


async def _connect(path: Path, wait: float) -> socket.socket | None:
    """A connected socket; None when no daemon listens (no socket file, or nobody behind it).

    Connected by hand because asyncio reports a full listen backlog (EAGAIN on a
    Unix socket) as a successful connection that then fails with EINVAL.
    """
    loop = asyncio.get_running_loop()
    try:
        return await _BUSY_RETRY.call(lambda: _connect_once(path), retry_on=BlockingIOError,
                                      deadline=loop.time() + wait, clock=loop.time)
    except BlockingIOError:  # the daemon is alive but has not accepted its waiting clients yet
        raise DaemonBusy(f"a daemon is running (control socket {path}) but is too busy to take the request "
                         f"after {wait:g}s; nothing was done in this process — try again") from None


async def _connect_once(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(str(path))
        return sock
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except BaseException:
        sock.close()
        raise


async def ask_daemon(path: Path, request: dict[str, Any], timeout: float = 120.0,
                     connect_wait: float = CONNECT_WAIT) -> dict[str, Any] | None:
    """The running daemon's reply to `request`; None when no daemon listens."""
    sock = await _connect(path, connect_wait)
    if sock is None:
        return None
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_REPLY)
    try:
        writer.write(json.dumps(request, default=str).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        raise DaemonBusy(f"the running daemon took the request but did not answer within {timeout:g}s; "
                         "it may still carry it out — check with `crisisbot incidents`") from None
    except ConnectionError as exc:
        raise DaemonBusy(f"the running daemon closed the connection ({exc}); check with `crisisbot incidents`") from None
    except ValueError:  # asyncio's "chunk is longer than limit"
        raise CommandInvalid(f"the running daemon's answer is longer than {MAX_REPLY} bytes; "
                             "not read (is it the same crisisbot version?)") from None
    finally:
        writer.close()
    if not line:
        raise DaemonBusy("the running daemon closed the connection without answering; "
                         "check with `crisisbot incidents`")
    return json.loads(line)


async def send(path: Path, command: Command, timeout: float = 120.0,
               connect_wait: float = CONNECT_WAIT) -> Result | None:
    """The running daemon's result for `command`; None when no daemon listens.
    A refusal raises `CommandRefused` naming the daemon's error and its message."""
    reply = await ask_daemon(path, encode(command), timeout, connect_wait)
    if reply is None:
        return None
    if not reply.get("ok"):
        error = reply.get("error")
        if isinstance(error, dict):
            raise CommandRefused(str(error.get("type", "Error")), str(error.get("message", "")))
        raise CommandRefused("Error", str(error or "no reason given"))
    return decode_result(type(command), reply)


async def answer(bus: "CommandBus", line: bytes) -> dict[str, Any]:
    """The reply to one request line: never raises, so a bad client cannot crash the daemon."""
    try:
        try:
            message = json.loads(line)
        except ValueError:
            raise CommandInvalid("a control request is one JSON object on one line") from None
        command = decode(message)
        return encode_result(await bus.dispatch(command))
    except Exception as exc:  # noqa: BLE001 - every refusal goes back to the client, typed
        return encode_error(exc)
