"""Run a Starlette app with uvicorn inside the daemon's event loop."""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from crisisbot.executors import AlarmPriority
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


class BackgroundServer:
    """`start()` returns once listening (or raises why not); `stop()` waits for it to end."""

    def __init__(self, app: ASGIApp, host: str, port: int, name: str, limits: ListenerLimits | None = None,
                 hold: AlarmPriority | None = None) -> None:
        """`hold`: new connections wait while an alarm is dispatched (the console; never an input)."""
        limits = limits or ListenerLimits()
        self.gate = ConnectionGate(name, limits)
        config = uvicorn.Config(_quiet_disconnects(app, name), host=host, port=port, log_config=None, access_log=False, lifespan="off",
                                http=guarded_protocol(self.gate, hold), timeout_keep_alive=max(1, int(limits.idle_timeout)),
                                backlog=ACCEPT_BACKLOG)  # uvicorn's 2048 would accept a flood past the fd budget
        self._server = uvicorn.Server(config)
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> int:
        self._task = asyncio.create_task(self._serve(), name=self._name)
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
                raise OSError(f"{self._name} stopped before listening")
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self.port

    async def _serve(self) -> None:
        """uvicorn reports a failed bind with sys.exit(), which asyncio would raise out of
        the whole event loop: turn it into an ordinary error of this task."""
        try:
            await self._server.serve()
        except SystemExit as exc:
            config = self._server.config
            raise OSError(f"{self._name}: cannot listen on {config.host}:{config.port} (port in use?)") from exc

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self.gate.close()
