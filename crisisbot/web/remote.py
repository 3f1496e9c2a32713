"""The web console's link to the daemon when it runs in a child process (web.isolation: process).

The child serves the whole web app at nice 19 and reads the store, but never writes it:
an SQLite write lock held by a nice-19 process would stall the daemon's alarm commits.
Every state change, every audit entry and the daemon's health go over the daemon's
control socket (crisisbot/control.py) as commands:

- `RemoteBus`: `dispatch(command) -> Result`, the contract of `CommandBus.dispatch`; a
  refusal raises the class the in-process bus raises, so the web code's `except
  IncidentClosed` etc. work unchanged; a daemon that does not answer is `DaemonBusy`
  ("the daemon is not answering"), which `not_answering` turns into a 503 page.
- `RemoteAudit`: `store.audit`'s signature, as a `RecordAudit` command.
- `daemon_health_check`: a health check asking the daemon at most once a second.
"""

from __future__ import annotations

import asyncio
import builtins
import html
import inspect
import logging
import time
from pathlib import Path
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

import crisisbot.errors as errors
from crisisbot.commands import (
    MAX_AUDIT_BATCH, AuditRecorded, AuditsRecorded, Command, Health, HealthReport, RecordAudit, RecordAudits,
    Result, StandDown,
)
from crisisbot.control import send
from crisisbot.errors import CommandRefused, DaemonBusy
from crisisbot.health import Check, CheckFn
from crisisbot.store.base import AuditEntry

log = logging.getLogger(__name__)

TIMEOUT = 30.0  # seconds a command may take in the daemon before it is sent again (same command_id)
SLOW: dict[type[Command], float] = {StandDown: 120.0}  # sends the end-of-alert messages before answering
ATTEMPTS = 2  # a resend reuses the command_id: the daemon answers it once (its bus remembers)
CONNECT_WAIT = 5.0  # seconds to wait for a daemon whose listen backlog is full
PAUSE = 0.2  # seconds between two attempts
NOT_ANSWERING = "The daemon is not answering; try again in a moment."


class RemoteBus:
    """`CommandBus.dispatch` over the control socket. The lifecycle parts live in the
    daemon (the web's /health asks its verdict with `daemon_health_check`)."""

    def __init__(self, control_path: Path, *, timeout: float = TIMEOUT, attempts: int = ATTEMPTS,
                 connect_wait: float = CONNECT_WAIT, pause: float = PAUSE) -> None:
        self.control_path = Path(control_path)
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.connect_wait = connect_wait
        self.pause = pause

    async def dispatch(self, command: Command) -> Result:
        return await self.ask(command)

    async def ask(self, command: Command, *, timeout: float | None = None, attempts: int | None = None,
                  connect_wait: float | None = None) -> Result:
        """`dispatch` with this call's own patience (the health check's is short)."""
        wait = timeout if timeout is not None else max(self.timeout, SLOW.get(type(command), 0.0))
        tries = max(1, attempts if attempts is not None else self.attempts)
        connect = connect_wait if connect_wait is not None else self.connect_wait
        why = ""
        for attempt in range(1, tries + 1):
            try:
                result = await send(self.control_path, command, wait, connect)
            except CommandRefused as exc:
                raise _same_error(exc) from None
            except DaemonBusy as exc:  # took too long, or the connection broke: the same command again
                why = str(exc)
            except OSError as exc:  # the socket cannot be reached at all (permissions, not a socket)
                why = f"cannot reach its control socket {self.control_path}: {exc}"
            except ValueError as exc:  # not JSON: not a crisisbot daemon speaking our protocol
                raise DaemonBusy(f"the daemon is not answering: its reply to '{command.name}' is unreadable "
                                 f"({exc})") from None
            else:
                if result is not None:
                    return result
                why = f"no daemon listens on its control socket {self.control_path}"
            log.warning("web: command %s (%s) to the daemon, attempt %d of %d: %s", command.name,
                        command.command_id, attempt, tries, why)
            if attempt < tries:
                await asyncio.sleep(self.pause)
        raise DaemonBusy(f"the daemon is not answering ({why}); '{command.name}' may or may not have been "
                         "carried out — look again in a moment")


def _same_error(refused: CommandRefused) -> Exception:
    """The exception the in-process bus would have raised, from the type name the daemon
    sent back; a class that cannot be rebuilt from its message stays a `CommandRefused`."""
    cls = getattr(errors, refused.kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.CrisisbotError)):
        cls = getattr(builtins, refused.kind, None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            return refused
    if not _takes_message(cls):
        return refused
    try:
        return cls(refused.message)
    except Exception:  # noqa: BLE001 - a builtin with other arguments (UnicodeDecodeError...)
        return refused


def _takes_message(cls: type) -> bool:
    """Whether `cls(message)` means what `str(error)` said: its constructor is Exception's
    or takes the message first and nothing else required (not ConfigError(problems))."""
    owner = next(c for c in cls.__mro__ if "__init__" in vars(c))
    if owner.__module__ == "builtins":
        return True
    params = list(inspect.signature(vars(owner)["__init__"]).parameters.values())[1:]
    return bool(params) and params[0].name == "message" and all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params[1:])


# the kinds `RefusalAudit` counts (crisisbot/web/refusals.py): nobody waits for them, so the
# daemon writes them once no alarm is being dispatched, as the in-process console holds them
HELD_KINDS = frozenset({"console.login_refused", "console.login_busy", "console.login_failed",
                        "link.refused", "link.throttled", "liveview.refused", "liveview.throttled"})


class RemoteAudit:
    """`store.audit(kind, incident_id, data)` as a `RecordAudit` command: hand it to the web
    code that audits (console logins, live views, `RefusalAudit`) in place of `store.audit`.
    `hold` (None: for the kinds in HELD_KINDS): the daemon writes the entry once no alarm
    is being dispatched (3 s at most)."""

    def __init__(self, bus: RemoteBus, *, hold: bool | None = None, actor: str = "web") -> None:
        self.bus = bus
        self.hold = hold
        self.actor = actor

    async def __call__(self, kind: str, incident_id: str | None, data: dict[str, Any]) -> AuditEntry:
        hold = kind in HELD_KINDS if self.hold is None else self.hold
        command = RecordAudit(kind=kind, incident_id=incident_id, data=data, hold=hold, actor=self.actor,
                              via="web")
        done = await self.bus.dispatch(command)
        assert isinstance(done, AuditRecorded)
        return AuditEntry(done.seq, done.at, kind, incident_id, data, done.prev_hash, done.hash)

    async def many(self, entries: list[tuple[str, str | None, dict[str, Any]]]) -> int:
        """`store.audit_many`: RecordAudits commands of MAX_AUDIT_BATCH entries at most,
        held as a whole if any of their kinds is held."""
        written = 0
        for start in range(0, len(entries), MAX_AUDIT_BATCH):
            batch = entries[start:start + MAX_AUDIT_BATCH]
            hold = any(kind in HELD_KINDS for kind, _, _ in batch) if self.hold is None else self.hold
            command = RecordAudits(entries=[{"kind": kind, "incident_id": incident_id, "data": data}
                                            for kind, incident_id, data in batch],
                                   hold=hold, actor=self.actor, via="web")
            done = await self.bus.dispatch(command)
            assert isinstance(done, AuditsRecorded)
            written += done.count
        return written


class _DaemonHealth:
    """The daemon's verdict, asked at most once per `ttl`; callers meanwhile share one request."""

    def __init__(self, bus: RemoteBus, ttl: float, timeout: float, clock: Callable[[], float]) -> None:
        self.bus = bus
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self._last: Check | None = None
        self._at = 0.0
        self._asking: asyncio.Future[Check] | None = None
        self._answering = True  # for logging the changes only, not a line a second

    async def __call__(self) -> Check:
        if self._last is not None and self.clock() - self._at < self.ttl:
            return self._last
        if self._asking is None:
            self._asking = asyncio.ensure_future(self._ask())
        return await asyncio.shield(self._asking)

    async def _ask(self) -> Check:
        try:
            try:
                report = await self.bus.ask(Health(actor="web", via="web"), timeout=self.timeout, attempts=1,
                                            connect_wait=self.timeout)
                assert isinstance(report, HealthReport)
                check = Check(report.status, {"checks": report.checks})
                if not self._answering:
                    log.warning("web: the daemon answers its health again (%s)", report.status)
                self._answering = True
            except Exception as exc:  # noqa: BLE001 - a daemon that cannot say is "down", with the reason
                check = Check("down", {"daemon": f"not answering: {exc}"})
                if self._answering:
                    log.error("web: the daemon does not answer its health: %s", exc)
                self._answering = False
            self._last, self._at = check, self.clock()
            return check
        finally:
            self._asking = None


def daemon_health_check(bus: RemoteBus, *, ttl: float = 1.0, timeout: float = 2.0,
                        clock: Callable[[], float] = time.monotonic) -> CheckFn:
    """A `HealthChecks` check for the web child: the daemon's verdict (its checks in the
    details), "down" with {"daemon": "not answering: ..."} when it cannot be asked. A
    monitoring flood on /health costs the daemon one request a second at most."""
    return _DaemonHealth(bus, ttl, timeout, clock)


async def not_answering(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for `DaemonBusy`: a 503 page (or JSON), never a traceback."""
    log.warning("web: %s %s: %s", request.method, request.url.path, exc)
    headers = {"Retry-After": "5", "Cache-Control": "no-store"}
    if request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"error": "daemon_not_answering", "message": NOT_ANSWERING}, 503, headers=headers)
    return HTMLResponse('<!DOCTYPE html><html><head><meta charset="utf-8"><title>Try again</title></head>'
                        f"<body><h2>Try again</h2><p>{html.escape(NOT_ANSWERING)}</p></body></html>", 503,
                        headers=headers)


EXCEPTION_HANDLERS = {DaemonBusy: not_answering}  # Starlette(exception_handlers=...)
