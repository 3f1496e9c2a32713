"""Lifecycle HTTP routes: personal acknowledgement and stand-down links, cancel, health.

A GET on a link only shows a page with buttons; the state changes on POST, because
mail security scanners open every link in a message and must not acknowledge on
the recipient's behalf. Refused links (forged, expired, revoked) are rate-limited
per client address and audited as counts (crisisbot/web/refusals.py).
"""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from crisisbot.commands import Acknowledge, Cancel, StandDown
from crisisbot.errors import CancelRefused, IncidentClosed, IncidentNotFound, StandDownRefused, StepFailed
from crisisbot.lifecycle.acks import ACK, CANCEL, RESPONSES, STAND_DOWN
from crisisbot.links import Claims, LinkError, LinkExpired
from crisisbot.models import IncidentStatus
from crisisbot.web.forms import request_fields
from crisisbot.web.health import health_route
from crisisbot.web.refusals import RefusalAudit, Refusals

if TYPE_CHECKING:
    from crisisbot.command_bus import CommandBus
    from crisisbot.runtime import Runtime

log = logging.getLogger(__name__)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f"<title>{html.escape(title)}</title></head><body style=\"font-family:Arial,sans-serif;max-width:36em\">"
        f"<h2>{html.escape(title)}</h2>{body}</body></html>", status)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or \
        request.headers.get("content-type", "").startswith("application/json")


def _reply(request: Request, status: int, data: dict[str, Any], title: str, body: str = "") -> Response:
    if _wants_json(request):
        return JSONResponse(data, status)
    return _page(title, body or f"<p>{html.escape(str(data.get('message', '')))}</p>", status)


def ack_routes(runtime: "Runtime", commands: "CommandBus", refusals: Refusals | None = None) -> list[Route]:
    """Routes to mount at the root of the daemon's web app (links use web.public_url); a
    link's holder acts through the command bus, as an operator at the CLI does."""
    refusals = refusals or Refusals(RefusalAudit(runtime.store.audit, audit_many=runtime.store.audit_many))

    def claims(request: Request, token: str, purpose: str) -> Claims | Response:
        client = request.client.host if request.client else None
        wait = refusals.blocked(client)
        if wait:
            refusals.audit.note("link.throttled", None, client)
            return _reply(request, 429, {"error": "too_many", "message": "Too many invalid links; wait a minute."},
                          "Too many attempts")
        incident_id = None
        try:
            found = runtime.signer.verify(token, purpose)
            incident_id = found.incident_id
            reason = runtime.revocations.reason(token, found) if runtime.revocations else None
            if reason is not None:
                refusals.refuse("link.refused", incident_id, client, f"{purpose}: revoked")
                return _reply(request, 403, {"error": "revoked", "message": "This link has been revoked."},
                              "Link revoked")
            return found
        except LinkExpired:
            refusals.refuse("link.refused", incident_id, client, f"{purpose}: expired")
            return _reply(request, 410, {"error": "expired", "message": "This link has expired."}, "Link expired")
        except LinkError:
            refusals.refuse("link.refused", incident_id, client, f"{purpose}: invalid")
            return _reply(request, 403, {"error": "invalid", "message": "This link is not valid."}, "Invalid link")

    async def ack_page(request: Request) -> Response:
        token = request.path_params["token"]
        found = claims(request, token, ACK)
        if isinstance(found, Response):
            return found
        incident = await runtime.store.get_incident(found.incident_id)
        person = runtime.bundle.people.get(found.recipient_id)
        title = incident.title if incident else found.incident_id
        buttons = "".join(
            f'<button name="response" value="{value}" style="padding:12px 18px;margin:4px">{label}</button>'
            for value, label in (("on_it", "I'm on it / Je m'en occupe"), ("joining", "I'm joining / Je rejoins")))
        return _page(title, f"<p>{html.escape(person.name if person else found.recipient_id)}</p>"
                            f'<form method="post">{buttons}</form>')

    async def ack_post(request: Request) -> Response:
        found = claims(request, request.path_params["token"], ACK)
        if isinstance(found, Response):
            return found
        response = str((await request_fields(request)).get("response", "on_it"))
        if response not in RESPONSES:
            return _reply(request, 400, {"error": "response", "message": f"response must be one of {RESPONSES}"},
                          "Bad request")
        try:
            outcome = await commands.dispatch(Acknowledge(
                incident_id=found.incident_id, person=found.recipient_id, response=response,
                actor=found.recipient_id, via="link"))
        except IncidentClosed as exc:
            return _reply(request, 409, {"error": "closed", "message": str(exc)}, "Incident closed")
        except LookupError as exc:
            return _reply(request, 404, {"error": "unknown", "message": str(exc)}, "Unknown incident")
        data = {"ok": True, "incident_id": found.incident_id, "person": found.recipient_id,
                "new": outcome.new, "rule_satisfied": outcome.satisfied,  # type: ignore[attr-defined]
                "message": f"Thank you {outcome.person_name}: acknowledged."}  # type: ignore[attr-defined]
        return _reply(request, 200, data, "Acknowledged")

    async def stand_down_page(request: Request) -> Response:
        found = claims(request, request.path_params["token"], STAND_DOWN)
        if isinstance(found, Response):
            return found
        form = ('<form method="post"><p><label><input type="radio" name="outcome" value="resolved" checked> Resolved'
                '</label> <label><input type="radio" name="outcome" value="false_alarm"> False alarm</label></p>'
                '<p><textarea name="reason" required rows="3" cols="40" placeholder="Reason"></textarea></p>'
                '<button style="padding:12px 18px">End the alert</button></form>')
        return _page("End the alert", form)

    async def do_stand_down(request: Request, found: Claims, incident_id: str) -> Response:
        fields = await request_fields(request)
        try:
            outcome = IncidentStatus(str(fields.get("outcome", "")))
            result = await commands.dispatch(StandDown(incident_id=incident_id, outcome=outcome, actor=found.recipient_id,
                                                       via="web", reason=str(fields.get("reason", ""))))
        except (ValueError, StandDownRefused) as exc:
            return _reply(request, 400, {"error": "refused", "message": str(exc)}, "Refused")
        except IncidentNotFound as exc:
            return _reply(request, 404, {"error": "unknown", "message": str(exc)}, "Unknown incident")
        except StepFailed as exc:  # the incident is closed; only the end-of-alert messages failed
            return _reply(request, 202, {"ok": True, "incident_id": incident_id, "notified": 0,
                                         "message": f"The alert is over, but the end-of-alert messages failed: {exc}"},
                          "Alert ended — notifications failed")
        data = {**result.model_dump(exclude={"sent"}), "ok": True, "message": "The alert is over."}
        return _reply(request, 200, data, "Alert ended")

    async def stand_down_post(request: Request) -> Response:
        found = claims(request, request.path_params["token"], STAND_DOWN)
        if isinstance(found, Response):
            return found
        return await do_stand_down(request, found, found.incident_id)

    def bearer(request: Request, purpose: str) -> Claims | Response:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return _reply(request, 401, {"error": "unauthorized", "message": "a signed token is required"},
                          "Unauthorized")
        found = claims(request, auth[7:].strip(), purpose)
        if isinstance(found, Claims) and found.incident_id not in (request.path_params["incident_id"], "*"):
            return _reply(request, 403, {"error": "invalid", "message": "token is for another incident"}, "Forbidden")
        return found

    async def incident_stand_down(request: Request) -> Response:
        found = bearer(request, STAND_DOWN)
        if isinstance(found, Response):
            return found
        return await do_stand_down(request, found, request.path_params["incident_id"])

    async def incident_cancel(request: Request) -> Response:
        found = bearer(request, CANCEL)
        if isinstance(found, Response):
            return found
        try:
            await commands.dispatch(Cancel(incident_id=request.path_params["incident_id"], actor=found.recipient_id,
                                           via="console"))
        except CancelRefused as exc:
            return _reply(request, 409, {"error": "too_late", "message": str(exc)}, "Cannot cancel")
        return _reply(request, 200, {"ok": True, "message": "Cancelled."}, "Cancelled")

    return [
        Route("/ack/{token}", ack_page, methods=["GET"]),
        Route("/ack/{token}", ack_post, methods=["POST"]),
        Route("/stand-down/{token}", stand_down_page, methods=["GET"]),
        Route("/stand-down/{token}", stand_down_post, methods=["POST"]),
        Route("/incidents/{incident_id}/stand-down", incident_stand_down, methods=["POST"]),
        Route("/incidents/{incident_id}/cancel", incident_cancel, methods=["POST"]),
        health_route(runtime),
    ]
