"""Run a Starlette app with uvicorn inside the daemon's event loop."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from crisisbot.executors import HOLD, AlarmPriority
from crisisbot.listeners import ACCEPT_BACKLOG, ConnectionGate, ListenerLimits
from crisisbot.web.guarded_http import guarded_protocol

log = logging.getLogger(__name__)


def _quiet_disconnects(app: ASGIApp, name: str) -> ASGIApp:
    """A client gone mid-request (or cut off by the header/body timeout) is not a server
    error: without this, uvicorn logs Starlette's ClientDisconnect with a traceback."""
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except ClientDisconnect:
            log.debug("%s: client went away before its request was complete", name)
    return wrapped


class AcceptPause:
    """Stops taking new connections off listening sockets for a while: they wait in the
    kernel's accept queue (the listener's backlog), costing this process nothing, and are
    accepted when `resume()` comes. Past the backlog, the kernel drops new SYNs and the
    clients retry a second later: a flood slows itself down.

    Written by hand because asyncio has no public way to pause a server's accept loop
    (`Server.close()` would reset every waiting connection). It removes the loop's accept
    reader and puts the very same callback back; on an event loop that does not work
    this way, it does nothing and the per-connection hold still applies."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._paused: list[tuple[Any, int, Any, tuple[Any, ...]]] = []

    @property
    def paused(self) -> bool:
        return bool(self._paused)

    def pause(self, sockets: list[Any]) -> bool:
        if self._paused:
            return True
        loop = asyncio.get_running_loop()
        try:
            selector = loop._selector  # type: ignore[attr-defined]
            for sock in sockets:
                fd = sock.fileno()
                handle = selector.get_key(fd).data[0]  # (reader, writer) of a selector event loop
                self._paused.append((sock, fd, handle._callback, handle._args))
            for _, fd, _, _ in self._paused:
                loop.remove_reader(fd)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            log.debug("%s: cannot pause accepting on this event loop (%s)", self._name, exc)
            self._paused.clear()
            return False
        return True

    def resume(self) -> None:
        paused, self._paused = self._paused, []
        loop = asyncio.get_running_loop()
        for sock, fd, callback, args in paused:
            if sock.fileno() == fd:  # still the open listening socket (not closed by a stop)
                loop.add_reader(fd, callback, *args)


ACCEPT_BATCH = 16  # console connections accepted per event-loop turn (`pace_accepts`)


def pace_accepts(sockets: list[Any], batch: int, name: str) -> bool:
    """Accept at most `batch` connections per event-loop turn on these listening sockets.

    asyncio accepts up to the listen backlog (100) per wake-up and starts as many
    connection tasks, all run in the next turn of the loop: under a login flood, that was
    tens of milliseconds during which an alarm input's first bytes, ready at the same
    time, waited (the slowest alarms of benchmarks/bench_alarm_isolation.py). What is not
    accepted stays in the kernel's queue and is taken on the next turns. Written by hand
    like `AcceptPause` (asyncio has no setting for it): the loop's accept reader is put
    back with a smaller count; on an event loop that does not work this way, or once
    asyncio re-adds its reader after running out of descriptors, the usual batch applies."""
    loop = asyncio.get_running_loop()
    try:
        selector = loop._selector  # type: ignore[attr-defined]
        readers = []
        for sock in sockets:
            fd = sock.fileno()
            handle = selector.get_key(fd).data[0]
            args = list(handle._args)  # protocol_factory, sock, sslcontext, server, backlog, ...
            if getattr(handle._callback, "__name__", "") != "_accept_connection" or not isinstance(args[4], int):
                raise TypeError("not asyncio's accept reader")
            args[4] = min(args[4], batch)
            readers.append((fd, handle._callback, args))
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        log.debug("%s: cannot pace accepting on this event loop (%s)", name, exc)
        return False
    for fd, callback, args in readers:
        loop.remove_reader(fd)
        loop.add_reader(fd, callback, *args)
    return True


class BackgroundServer:
    """`start()` returns once listening (or raises why not); `stop()` waits for it to end."""

    def __init__(self, app: ASGIApp, host: str, port: int, name: str, limits: ListenerLimits | None = None,
                 hold: AlarmPriority | None = None, sock: socket.socket | None = None) -> None:
        """`hold`: new connections wait while an alarm is dispatched (the console; never an input).
        `sock`: serve on this listening socket (bound by another process: the daemon lends
        it to the web process) instead of binding host:port."""
        limits = limits or ListenerLimits()
        self.gate = ConnectionGate(name, limits, alarm_input=hold is None)
        config = uvicorn.Config(_quiet_disconnects(app, name), host=host, port=port, log_config=None, access_log=False, lifespan="off",
                                http=guarded_protocol(self.gate, hold), timeout_keep_alive=max(1, int(limits.idle_timeout)),
                                backlog=ACCEPT_BACKLOG)  # uvicorn's 2048 would accept a flood past the fd budget
        self._server = uvicorn.Server(config)
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None
        self._hold = hold
        self._accepts = AcceptPause(name)
        self._unsubscribe: Any = None
        self._sock = sock

    async def start(self) -> int:
        self._task = asyncio.create_task(self._serve(), name=self._name)
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
                raise OSError(f"{self._name} stopped before listening")
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        if self._hold is not None:
            pace_accepts([sock for server in self._server.servers for sock in server.sockets], ACCEPT_BATCH,
                         self._name)
            self._unsubscribe = self._hold.on_busy(self._hold_new_connections)
        return self.port

    def _hold_new_connections(self) -> None:
        """A dispatch begins: accept nothing until it is over, HOLD seconds at most."""
        if self._server.should_exit or self._accepts.paused:
            return
        if self._accepts.pause([sock for server in self._server.servers for sock in server.sockets]):
            assert self._hold is not None
            self._hold.when_quiet(self._accepts.resume, HOLD)

    async def _serve(self) -> None:
        """uvicorn reports a failed bind with sys.exit(), which asyncio would raise out of
        the whole event loop: turn it into an ordinary error of this task."""
        try:
            await self._server.serve(sockets=[self._sock] if self._sock is not None else None)
        except SystemExit as exc:
            config = self._server.config
            raise OSError(f"{self._name}: cannot listen on {config.host}:{config.port} (port in use?)") from exc

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._accepts.resume()  # uvicorn closes the listening sockets itself
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self.gate.close()
