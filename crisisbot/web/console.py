"""The operators' web console: incidents, timelines, acknowledge, stand down — behind login.

Sessions are signed, expiring tokens (the same signer as personal links) in an
HttpOnly, SameSite=Strict cookie; state changes are POSTs that also check the
Origin header, so another site cannot drive an operator's browser. Failed logins
are audited and slowed down per account.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from crisisbot.links import LinkError, Signer
from crisisbot.models import IncidentStatus
from crisisbot.web.forms import request_fields
from crisisbot.web.passwords import check_password, hash_password

if TYPE_CHECKING:
    from crisisbot.runtime import Runtime

COOKIE = "crisisbot_session"
SESSION = "console-session"
LOCKOUT_AFTER, LOCKOUT_SECONDS, FAILURE_DELAY = 5, 300.0, 0.5

_DUMMY_HASH = hash_password("not a password anyone has")

_PAGES = Environment(
    loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=select_autoescape(default=True),
)


class Console:
    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self._failures: dict[str, tuple[int, float]] = {}

    @property
    def web(self):
        return self.runtime.bundle.config.web

    def signer(self) -> Signer:
        assert self.runtime.services is not None
        return Signer(self.runtime.services.extras["secret_key"])  # type: ignore[arg-type]

    def routes(self) -> list[Route]:
        return [
            Route("/console/login", self.login_page, methods=["GET"]),
            Route("/console/login", self.login, methods=["POST"]),
            Route("/console/logout", self.logout, methods=["POST"]),
            Route("/console", self.incidents, methods=["GET"]),
            Route("/console/incidents/{incident_id}", self.incident, methods=["GET"]),
            Route("/console/incidents/{incident_id}/ack", self.acknowledge, methods=["POST"]),
            Route("/console/incidents/{incident_id}/stand-down", self.stand_down, methods=["POST"]),
            Route("/api/incidents", self.api_incidents, methods=["GET"]),
            Route("/api/incidents/{incident_id}", self.api_incident, methods=["GET"]),
        ]

    # -- sessions ------------------------------------------------------------
    def user(self, request: Request) -> str | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        try:
            claims = self.signer().verify(token, SESSION)
        except LinkError:
            return None
        return claims.recipient_id if claims.recipient_id in self.web.users else None

    @staticmethod
    def _same_origin(request: Request) -> bool:
        """Fetch metadata first (all current browsers), else the Origin header."""
        site = request.headers.get("sec-fetch-site")
        if site is not None:
            return site in ("same-origin", "none")
        origin = request.headers.get("origin")
        return origin is None or urlsplit(origin).netloc == request.headers.get("host")

    def _page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(_PAGES.get_template(name).render(**context), status)

    def _guard(self, request: Request, write: bool = False) -> str | Response:
        user = self.user(request)
        if user is None:
            if request.url.path.startswith("/api/"):
                return JSONResponse({"error": "login required"}, 401)
            return RedirectResponse("/console/login", 303)
        if write and (not self._same_origin(request) or self.web.users[user].role != "operator"):
            return self._page("message.html", 403, title="Forbidden", message="This action is not allowed.")
        return user

    # -- login -----------------------------------------------------------------
    async def login_page(self, request: Request) -> Response:
        return self._page("login.html", error=None)

    async def login(self, request: Request) -> Response:
        form = await request_fields(request)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        store = self.runtime.store
        count, since = self._failures.get(name, (0, 0.0))
        locked = count >= LOCKOUT_AFTER and time.monotonic() - since < LOCKOUT_SECONDS
        account = self.web.users.get(name)
        # always pay for one scrypt, off the event loop, so timing does not tell which users exist
        stored = account.password_hash.get_secret_value() if account else _DUMMY_HASH
        matches = await asyncio.to_thread(check_password, password, stored)
        ok = not locked and account is not None and self._same_origin(request) and matches
        if not ok:
            if account is not None and not locked:  # a locked account's clock is not restarted
                self._failures[name] = (count + 1 if count < LOCKOUT_AFTER else 1, time.monotonic())
            await store.audit("console.login_failed", None, {"user": name, "locked": locked,
                                                             "client": request.client.host if request.client else None})
            await asyncio.sleep(FAILURE_DELAY)
            message = "Too many failed attempts; try again later." if locked else "Wrong user name or password."
            return self._page("login.html", 401, error=message)
        self._failures.pop(name, None)
        await store.audit("console.login", None, {"user": name})
        token = self.signer().sign("*", name, SESSION, self.web.session_ttl)
        response = RedirectResponse("/console", 303)
        secure = (self.web.public_url or "").startswith("https://")
        response.set_cookie(COOKIE, token, max_age=int(self.web.session_ttl), httponly=True, samesite="strict",
                            secure=secure, path="/")
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/console/login", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- pages -----------------------------------------------------------------
    async def incidents(self, request: Request) -> Response:
        user = self._guard(request)
        if isinstance(user, Response):
            return user
        incidents = await self.runtime.store.list_incidents(limit=100)
        return self._page("incidents.html", user=user, incidents=incidents)

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
        user = self._guard(request)
        if isinstance(user, Response):
            return user
        details = await self._details(request.path_params["incident_id"])
        if details is None:
            return self._page("message.html", 404, title="Unknown incident", message="No such incident.")
        account = self.web.users[user]
        return self._page("incident.html", user=user, operator=account.role == "operator",
                          can_ack=account.person is not None, notice=request.query_params.get("notice"), **details)

    async def acknowledge(self, request: Request) -> Response:
        from crisisbot.lifecycle.acks import acknowledge

        user = self._guard(request, write=True)
        if isinstance(user, Response):
            return user
        person = self.web.users[user].person
        incident_id = request.path_params["incident_id"]
        if person is None:
            return self._page("message.html", 400, title="Refused", message="Your account is not linked to a contact.")
        form = await request_fields(request)
        try:
            await acknowledge(self.runtime, incident_id, person, str(form.get("response", "on_it")), via="console")
        except Exception as exc:  # noqa: BLE001 - shown to the operator, who can act on it
            return self._page("message.html", 409, title="Refused", message=str(exc))
        return RedirectResponse(f"/console/incidents/{incident_id}?notice=acknowledged", 303)

    async def stand_down(self, request: Request) -> Response:
        from crisisbot.lifecycle.standdown import stand_down

        user = self._guard(request, write=True)
        if isinstance(user, Response):
            return user
        incident_id = request.path_params["incident_id"]
        form = await request_fields(request)
        try:
            outcome = IncidentStatus(str(form.get("outcome", "")))
            await stand_down(self.runtime, incident_id, outcome, str(form.get("reason", "")), by=user, via="console")
        except Exception as exc:  # noqa: BLE001 - shown to the operator, who can act on it
            return self._page("message.html", 409, title="Refused", message=str(exc))
        return RedirectResponse(f"/console/incidents/{incident_id}?notice=ended", 303)

    # -- JSON API ----------------------------------------------------------------
    async def api_incidents(self, request: Request) -> Response:
        user = self._guard(request)
        if isinstance(user, Response):
            return user
        incidents = await self.runtime.store.list_incidents(limit=int(request.query_params.get("limit", 50)))
        return JSONResponse([_incident_json(i) for i in incidents])

    async def api_incident(self, request: Request) -> Response:
        user = self._guard(request)
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


def _incident_json(incident) -> dict[str, Any]:
    return {"id": incident.id, "site": incident.site, "playbook": incident.playbook,
            "status": incident.status.value, "outcome": incident.outcome.value,
            "outcome_reason": incident.data.get("outcome_reason"), "title": incident.title, "drill": incident.drill,
            "opened_at": incident.opened_at.isoformat()}
