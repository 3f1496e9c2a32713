"""The daemon's HTTP server: console, JSON API, personal links, health — one uvicorn app.

Enabled with `web.enabled`; links in emails use `web.public_url` (put a TLS reverse
proxy in front for anything but loopback).
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crisisbot.listeners import INPUT_ACTIVITY
from crisisbot.web.background import BackgroundServer
from crisisbot.web.console import Console
from crisisbot.web.refusals import RefusalAudit, Refusals
from crisisbot.web.remote import EXCEPTION_HANDLERS

if TYPE_CHECKING:
    from crisisbot.command_bus import CommandBus
    from crisisbot.runtime import Runtime

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # tokens in link URLs must not leak to other sites
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
}


def build_app(runtime: "Runtime", console: Console, refusals: Refusals | None = None) -> Starlette:
    from crisisbot.web.ack import ack_routes
    from crisisbot.web.liveview import liveview_routes

    refusals = refusals or Refusals(RefusalAudit(runtime.store.audit, audit_many=runtime.store.audit_many))
    routes: list[BaseRoute] = [
        Route("/", lambda _request: RedirectResponse("/console", 303)),
        *console.routes(),
        *ack_routes(runtime, console.commands, refusals),
    ]
    routes.append(liveview_routes(runtime.signer, runtime.image_store, runtime.store.audit,
                                  revocations=runtime.revocations, refusals=refusals,
                                  ended_at=lambda incident_id: ended_at(runtime, incident_id),
                                  grace=runtime.bundle.config.web.liveview_grace,
                                  now=runtime.clock.now, offload=runtime.executors.web.run))
    # DaemonBusy: the web process's daemon does not answer a command -> a 503 page, not a traceback
    return Starlette(routes=routes, exception_handlers=dict(EXCEPTION_HANDLERS), middleware=[
        Middleware(AlarmFirst, priority=runtime.executors.priority, has_session=console.has_session),
        Middleware(SecurityHeaders),
    ])


async def ended_at(runtime: "Runtime", incident_id: str) -> datetime | None:
    """When the incident was stood down or cancelled; None while it runs (or is unknown)."""
    from crisisbot.lifecycle.acks import CLOSED

    incident = await runtime.store.get_incident(incident_id)
    if incident is None or incident.status not in CLOSED:
        return None
    at = (incident.data.get("stand_down") or {}).get("at")
    return datetime.fromisoformat(at) if at else incident.updated_at


class AlarmFirst:
    """While an alarm is being taken in and dispatched, requests without a console session
    (logins, link pages, a flood) wait — HOLD seconds at most — before any work is done for
    them, so the alarm's steps get the event loop first. Logged-in operators are not held.
    New connections are held earlier still, unread (crisisbot/web/guarded_http.py)."""

    HOLD = 3.0

    def __init__(self, app: ASGIApp, priority: Any, has_session: Callable[[Scope], bool]) -> None:
        self.app = app
        self.priority = priority
        self.has_session = has_session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.priority.busy and not self.has_session(scope):
            await self.priority.wait_quiet(self.HOLD)
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Pure ASGI middleware adding SECURITY_HEADERS to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                         if k.lower().encode() not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


class WebServer:
    """The web app on uvicorn: in the daemon's process (`web.isolation: inline`), or in
    the web process (crisisbot/web/worker.py) on the socket the daemon lends it (`sock`)."""

    def __init__(self, runtime: "Runtime", commands: "CommandBus", sock: socket.socket | None = None) -> None:
        self.runtime = runtime
        self._sock = sock
        self.port: int | None = None
        self._server: BackgroundServer | None = None
        self._inputs: Callable[[], None] | None = None  # unsubscribes from alarm-input activity
        self.refusals = Refusals(RefusalAudit(runtime.store.audit, hold=runtime.executors.priority.wait_quiet,
                                              audit_many=runtime.store.audit_many))
        self.console = Console(runtime, self.refusals.audit, commands)

    async def start(self) -> None:
        web = self.runtime.bundle.config.web
        await self.console.start()
        self.refusals.audit.start()
        self._server = BackgroundServer(build_app(self.runtime, self.console, self.refusals), web.host, web.port,
                                        "web console", web.limits, hold=self.runtime.executors.priority,
                                        sock=self._sock)
        self.port = await self._server.start()
        self._inputs = INPUT_ACTIVITY.subscribe(self.runtime.executors.priority.pulse)
        if self._sock is None:
            log.info("web console on http://%s:%s/console", web.host, self.port)

    async def reload(self) -> None:
        """Nothing to restart: in the daemon's process the app reads `runtime.bundle`, which
        the reload has replaced (WebProcess.reload starts a process on the new files)."""

    async def stop(self) -> None:
        if self._inputs is not None:
            self._inputs()
        if self._server is not None:
            await self._server.stop()
        await self.refusals.audit.stop()
