"""The operators' web console: incidents, timelines, acknowledge, stand down — behind login.

Sessions live server-side (crisisbot/web/sessions.py): the HttpOnly, SameSite=Strict
cookie holds a random token that logout, an admin or the idle timeout ends at once.
State changes are POSTs that also check the Origin header, so another site cannot
drive an operator's browser. Logins are throttled per (account, address) and per
address (crisisbot/web/throttle.py); passwords are hashed on a small pool of their
own, so a login flood never delays an alarm; refusals are audited as counts.
"""

from __future__ import annotations

import asyncio
import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from crisisbot.commands import Acknowledge, ListSessions, RevokeLinks, RevokeSessions, StandDown
from crisisbot.executors import PoolFull
from crisisbot.models import IncidentStatus
from crisisbot.web.forms import request_fields
from crisisbot.web.passwords import check_password, hash_password
from crisisbot.web.refusals import RefusalAudit
from crisisbot.web.sessions import Session, SessionFile, Sessions
from crisisbot.web.throttle import HashBudget, LoginThrottle, Refused

if TYPE_CHECKING:
    from crisisbot.command_bus import CommandBus
    from crisisbot.runtime import Runtime

COOKIE = "crisisbot_session"
FAILURE_DELAY = 0.5  # every failed login answers after the same pause
MAX_LIMIT = 1000  # incidents per API page
WRITERS = ("operator", "admin")
LOCKED = "Too many failed attempts; try again later."
OVER_BUDGET = "Too many login attempts on this console right now; try again in a moment."
BUSY = "The console is busy; try again in a moment."
WRONG = "Wrong user name or password."
LOGIN_ERRORS = (LOCKED, OVER_BUDGET, BUSY, WRONG)

# unknown names are checked against this hash, with the same cost as a real one
_DUMMY_HASH = hash_password("not a password anyone has")

_PAGES = Environment(
    loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=select_autoescape(default=True),
    auto_reload=False,  # shipped pages: no stat() per request (a login flood made ten thousand)
)


class Console:
    def __init__(self, runtime: "Runtime", refusals: RefusalAudit, commands: "CommandBus") -> None:
        self.runtime = runtime
        self.commands = commands  # every state change goes through it, as from the CLI
        self.refusals = refusals
        self.throttle = LoginThrottle()
        self.hash_budget = HashBudget()  # a login flood from many addresses costs a bounded share of CPU
        web = runtime.bundle.config.web
        self.sessions = Sessions(SessionFile(runtime.bundle.data_dir / "console-sessions.json"),
                                 lifetime=web.session_ttl, idle=web.session_idle,
                                 offload=runtime.executors.web.run, clock=runtime.clock.now)

    @property
    def web(self):
        return self.runtime.bundle.config.web

    async def start(self) -> None:
        for error in (None, *LOGIN_ERRORS):  # compiled now, not during the first flood (~4 ms)
            _login_html(error)
        await self.sessions.load()
        await self.sessions.keep_only(set(self.web.users))

    def routes(self) -> list[Route]:
        return [
            Route("/console/login", self.login_page, methods=["GET"]),
            Route("/console/login", self.login, methods=["POST"]),
            Route("/console/logout", self.logout, methods=["POST"]),
            Route("/console", self.incidents, methods=["GET"]),
            Route("/console/incidents/{incident_id}", self.incident, methods=["GET"]),
            Route("/console/incidents/{incident_id}/ack", self.acknowledge, methods=["POST"]),
            Route("/console/incidents/{incident_id}/stand-down", self.stand_down, methods=["POST"]),
            Route("/console/incidents/{incident_id}/links/revoke", self.revoke_links, methods=["POST"]),
            Route("/console/sessions", self.sessions_page, methods=["GET"]),
            Route("/console/sessions/{session_id}/revoke", self.revoke_session, methods=["POST"]),
            Route("/api/incidents", self.api_incidents, methods=["GET"]),
            Route("/api/incidents/{incident_id}", self.api_incident, methods=["GET"]),
            Route("/api/sessions", self.api_sessions, methods=["GET"]),
            Route("/api/sessions/{session_id}/revoke", self.api_revoke_session, methods=["POST"]),
        ]

    # -- sessions ------------------------------------------------------------
    def has_session(self, scope: Any) -> bool:
        """Whether an ASGI request carries the cookie of a session we hold (see AlarmFirst)."""
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                for part in value.decode("latin-1").split(";"):
                    key, _, token = part.strip().partition("=")
                    if key == COOKIE and self.sessions.known(token):
                        return True
        return False

    async def session(self, request: Request) -> Session | None:
        session = await self.sessions.user(request.cookies.get(COOKIE))
        if session is None or session.user not in self.web.users:
            return None
        return session

    @staticmethod
    def _same_origin(request: Request) -> bool:
        """Fetch metadata first (all current browsers), else the Origin header."""
        site = request.headers.get("sec-fetch-site")
        if site is not None:
            return site in ("same-origin", "none")
        origin = request.headers.get("origin")
        return origin is None or urlsplit(origin).netloc == request.headers.get("host")

    def _page(self, name: str, status: int = 200, headers: dict[str, str] | None = None,
              **context: Any) -> HTMLResponse:
        return HTMLResponse(_PAGES.get_template(name).render(**context), status, headers=headers)

    async def _guard(self, request: Request, write: bool = False, admin: bool = False) -> str | Response:
        session = await self.session(request)
        if session is None:
            if request.url.path.startswith("/api/"):
                return JSONResponse({"error": "login required"}, 401)
            return RedirectResponse("/console/login", 303)
        user, role = session.user, self.web.users[session.user].role
        allowed = role == "admin" if admin else (role in WRITERS if write else True)
        if not allowed or ((write or admin) and request.method == "POST" and not self._same_origin(request)):
            if request.url.path.startswith("/api/"):
                return JSONResponse({"error": "this action is not allowed"}, 403)
            return self._page("message.html", 403, title="Forbidden", message="This action is not allowed.")
        return user

    # -- login -----------------------------------------------------------------
    async def login_page(self, request: Request) -> Response:
        return _login_page(200)

    async def login(self, request: Request) -> Response:
        form = await request_fields(request)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        client = _client(request)
        try:
            attempt = self.throttle.reserve(name, client or "unknown")  # counted before hashing
        except Refused as exc:
            self.refusals.note("console.login_refused", None, client, name)
            return _login_page(429, {"Retry-After": str(max(1, round(exc.retry_after)))}, LOCKED)
        wait = self.hash_budget.take()
        if wait:
            attempt.abandon()
            self.refusals.note("console.login_busy", None, client)
            return _login_page(429, {"Retry-After": str(math.ceil(wait))}, OVER_BUDGET)
        account = self.web.users.get(name)
        stored = account.password_hash.get_secret_value() if account else _DUMMY_HASH
        try:
            matches = await self.runtime.executors.hashing.run(check_password, password, stored)
        except PoolFull:
            self.hash_budget.give_back()
            attempt.abandon()
            self.refusals.note("console.login_busy", None, client)
            return _login_page(503, {"Retry-After": "1"}, BUSY)
        if not (account is not None and matches and self._same_origin(request)):
            attempt.failed()
            self.refusals.note("console.login_failed", None, client, name)
            await asyncio.sleep(FAILURE_DELAY)
            return _login_page(401, error=WRONG)
        attempt.succeeded()
        token = await self.sessions.create(name, client, request.headers.get("user-agent", ""))
        await self.runtime.store.audit("console.login", None, {"user": name, "client": client})
        response = RedirectResponse("/console", 303)
        secure = (self.web.public_url or "").startswith("https://")
        response.set_cookie(COOKIE, token, max_age=int(self.web.session_ttl), httponly=True, samesite="strict",
                            secure=secure, path="/")
        return response

    async def logout(self, request: Request) -> Response:
        session = await self.sessions.end(request.cookies.get(COOKIE))
        if session is not None:
            await self.runtime.store.audit("console.logout", None, {"user": session.user, "session": session.id})
        response = RedirectResponse("/console/login", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- sessions (admins) -------------------------------------------------------
    async def sessions_page(self, request: Request) -> Response:
        user = await self._guard(request, admin=True)
        if isinstance(user, Response):
            return user
        return self._page("sessions.html", user=user, admin=True, sessions=self.sessions.list(),
                          notice=request.query_params.get("notice"))

    async def _revoke_session(self, session_id: str, by: str, via: str) -> int:
        done = await self.commands.dispatch(RevokeSessions(session_id=session_id, actor=by, via=via))
        return done.revoked  # type: ignore[attr-defined]

    async def revoke_session(self, request: Request) -> Response:
        user = await self._guard(request, admin=True)
        if isinstance(user, Response):
            return user
        if not await self._revoke_session(request.path_params["session_id"], user, "console"):
            return self._page("message.html", 404, title="Unknown session", message="No such session.")
        return RedirectResponse("/console/sessions?notice=revoked", 303)

    async def api_sessions(self, request: Request) -> Response:
        user = await self._guard(request, admin=True)
        if isinstance(user, Response):
            return user
        listed = await self.commands.dispatch(ListSessions(actor=user, via="api"))
        return JSONResponse(listed.sessions)  # type: ignore[attr-defined]

    async def api_revoke_session(self, request: Request) -> Response:
        user = await self._guard(request, admin=True)
        if isinstance(user, Response):
            return user
        if not await self._revoke_session(request.path_params["session_id"], user, "api"):
            return JSONResponse({"error": "unknown session"}, 404)
        return JSONResponse({"ok": True})

    # -- pages -----------------------------------------------------------------
    async def incidents(self, request: Request) -> Response:
        user = await self._guard(request)
        if isinstance(user, Response):
            return user
        incidents = await self.runtime.store.list_incidents(limit=100)
        return self._page("incidents.html", user=user, incidents=incidents,
                          admin=self.web.users[user].role == "admin")

    async def _details(self, incident_id: str) -> dict[str, Any] | None:
        store = self.runtime.store
        incident = await store.get_incident(incident_id)
        if incident is None:
            return None
        return {
            "incident": incident,
            "alarms": await store.incident_alarms(incident.id),
            "timeline": [e for e in await store.audit_entries(incident.id) if e.kind != "step.running"],
            "deliveries": list((await store.get_deliveries(incident.id)).values()),
            "meeting": next((e.data for e in await store.audit_entries(incident.id) if e.kind == "meeting.opened"), None),
        }

    async def incident(self, request: Request) -> Response:
        user = await self._guard(request)
        if isinstance(user, Response):
            return user
        details = await self._details(request.path_params["incident_id"])
        if details is None:
            return self._page("message.html", 404, title="Unknown incident", message="No such incident.")
        account = self.web.users[user]
        return self._page("incident.html", user=user, operator=account.role in WRITERS, admin=account.role == "admin",
                          can_ack=account.person is not None, notice=request.query_params.get("notice"), **details)

    async def acknowledge(self, request: Request) -> Response:
        user = await self._guard(request, write=True)
        if isinstance(user, Response):
            return user
        person = self.web.users[user].person
        incident_id = request.path_params["incident_id"]
        if person is None:
            return self._page("message.html", 400, title="Refused", message="Your account is not linked to a contact.")
        form = await request_fields(request)
        try:
            await self.commands.dispatch(Acknowledge(incident_id=incident_id, person=person, actor=user, via="console",
                                                     response=str(form.get("response", "on_it"))))
        except Exception as exc:  # noqa: BLE001 - shown to the operator, who can act on it
            return self._page("message.html", 409, title="Refused", message=str(exc))
        return RedirectResponse(f"/console/incidents/{incident_id}?notice=acknowledged", 303)

    async def stand_down(self, request: Request) -> Response:
        user = await self._guard(request, write=True)
        if isinstance(user, Response):
            return user
        incident_id = request.path_params["incident_id"]
        form = await request_fields(request)
        try:
            outcome = IncidentStatus(str(form.get("outcome", "")))
            await self.commands.dispatch(StandDown(incident_id=incident_id, outcome=outcome, actor=user, via="console",
                                                   reason=str(form.get("reason", ""))))
        except Exception as exc:  # noqa: BLE001 - shown to the operator, who can act on it
            return self._page("message.html", 409, title="Refused", message=str(exc))
        return RedirectResponse(f"/console/incidents/{incident_id}?notice=ended", 303)

    async def revoke_links(self, request: Request) -> Response:
        """Revoke every personal link (live view, ack, stand-down) of one person for this incident."""
        user = await self._guard(request, write=True)
        if isinstance(user, Response):
            return user
        incident_id = request.path_params["incident_id"]
        person = str((await request_fields(request)).get("person", ""))
        revocations = self.runtime.revocations
        if revocations is None or not person or await self.runtime.store.get_incident(incident_id) is None:
            return self._page("message.html", 400, title="Refused", message="Choose a person of this incident.")
        await self.commands.dispatch(RevokeLinks(incident_id=incident_id, person=person, actor=user, via="console",
                                                 reason=f"revoked by {user} (console)"))
        return RedirectResponse(f"/console/incidents/{incident_id}?notice=revoked", 303)

    # -- JSON API ----------------------------------------------------------------
    async def api_incidents(self, request: Request) -> Response:
        user = await self._guard(request)
        if isinstance(user, Response):
            return user
        raw = request.query_params.get("limit", "50")
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            return JSONResponse({"error": "bad_request", "message": f"limit must be a whole number from 1 to "
                                 f"{MAX_LIMIT}, not {raw[:20]!r}"}, 400)
        incidents = await self.runtime.store.list_incidents(limit=limit)
        return JSONResponse([_incident_json(i) for i in incidents])

    async def api_incident(self, request: Request) -> Response:
        user = await self._guard(request)
        if isinstance(user, Response):
            return user
        details = await self._details(request.path_params["incident_id"])
        if details is None:
            return JSONResponse({"error": "unknown incident"}, 404)
        return JSONResponse({
            **_incident_json(details["incident"]),
            "alarms": [a.model_dump(mode="json", exclude={"raw"}) for a in details["alarms"]],
            "timeline": [{"at": e.at.isoformat(), "kind": e.kind, "data": e.data} for e in details["timeline"]],
            "deliveries": [{"person": d.person_id, "address": d.address, "status": d.status.value,
                            "transport": d.transport, "detail": d.detail} for d in details["deliveries"]],
        })


@functools.lru_cache(maxsize=8)
def _login_html(error: str | None) -> str:
    return _PAGES.get_template("login.html").render(error=error)


def _login_page(status: int, headers: dict[str, str] | None = None, error: str | None = None) -> HTMLResponse:
    """The login page, rendered once per message: a flood gets the same few answers, and
    a Jinja render per refused attempt was a third of the event loop's time for it."""
    return HTMLResponse(_login_html(error), status, headers=headers)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _incident_json(incident) -> dict[str, Any]:
    return {"id": incident.id, "site": incident.site, "playbook": incident.playbook,
            "status": incident.status.value, "outcome": incident.outcome.value,
            "outcome_reason": incident.data.get("outcome_reason"), "title": incident.title, "drill": incident.drill,
            "opened_at": incident.opened_at.isoformat()}
