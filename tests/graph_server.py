"""A local stand-in for Microsoft Graph and the Entra token endpoint, for tests.

Serves HTTPS on 127.0.0.1 (port 0) with a throw-away `trustme` CA, checks what Graph
checks (bearer token and its `roles`, every request body against the published v1.0
metadata - tests/graph_schema.py -, Teams application access policy, 4 MB request
limit, no bearer on upload URLs), keeps what was created (meetings, events, mails)
and can be told to fail:

    async with GraphServer() as g:
        config = g.connector_config("teams", mode="online-meeting")
        g.fail_next(status=429, retry_after=1)
        ...
        assert len(g.meetings) == 1
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jwt
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.graph_schema import SchemaError, validate_action, validate_type

TENANT = "00000000-0000-0000-0000-0000000000aa"
CLIENT_ID = "00000000-0000-0000-0000-0000000000bb"
CLIENT_SECRET = "s3cr3t-value-that-must-never-be-logged"
ORGANIZER = "crisis@contoso.example"
ORGANIZER_ID = "11111111-1111-1111-1111-111111111111"
ALL_ROLES = ["OnlineMeetings.ReadWrite.All", "Calendars.ReadWrite", "Mail.Send", "Mail.ReadWrite", "User.Read.All"]
SIGNING_KEY = "graph-server-test-signing-key-32bytes!"
LOBBY_SCOPES = {"organizer", "organization", "organizationAndFederated", "everyone", "invited", "organizationExcludingGuests"}
PRESENTERS = {"everyone", "organization", "roleIsPresenter", "organizer"}
MAX_REQUEST = 4 * 1024 * 1024


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Fault:
    status: int = 503
    retry_after: float | None = None
    code: str = ""
    message: str = ""
    hang: float = 0.0
    path: str = ""  # substring of the path it applies to; "" = any Graph request
    drop: bool = False  # process the request, then cut the connection in the middle of the answer


@dataclass
class Upload:
    message_id: str
    user: str
    name: str
    size: int
    content_type: str
    received: bytearray = field(default_factory=bytearray)
    chunks: list[tuple[int, int]] = field(default_factory=list)


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "innerError": {"request-id": str(uuid.uuid4())}}}
    return JSONResponse(body, status_code=status, headers=headers)


def _require(body: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(body, dict) or key not in body or not isinstance(body[key], kind):
        raise GraphError(400, "BadRequest", f"Property '{key}' is missing or has the wrong type")
    return body[key]


def _iso(value: Any, key: str) -> str:
    try:
        from datetime import datetime

        datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise GraphError(400, "BadRequest", f"Cannot convert '{value}' of '{key}' to DateTimeOffset")
    return str(value)


class GraphServer:
    """Start with `async with GraphServer() as g:`; everything it saw is on the object."""

    def __init__(self, *, roles: list[str] | None = None, access_policy: bool = True) -> None:
        self.roles = list(ALL_ROLES if roles is None else roles)
        self.access_policy = access_policy  # Teams application access policy granted to the app
        self.users: dict[str, dict[str, str]] = {
            ORGANIZER_ID: {"id": ORGANIZER_ID, "userPrincipalName": ORGANIZER, "mail": ORGANIZER, "displayName": "Crisis Room"}
        }
        self.meetings: dict[str, dict[str, Any]] = {}  # online meetings by id
        self.events: dict[str, dict[str, Any]] = {}  # calendar events by id
        self.mails: list[dict[str, Any]] = []  # messages sent (sendMail or draft + send)
        self.drafts: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, Upload] = {}
        self.requests: list[Recorded] = []
        self.token_requests: list[dict[str, str]] = []
        self.assertions: list[dict[str, Any]] = []  # claims of certificate client assertions
        self.faults: list[Fault] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="graph-server-")
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> "GraphServer":
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        tmp = Path(self._tmp.name)
        self.ca_path = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server, self._task = await _serve(uvicorn.Config(
            self._app(), log_level="warning", ssl_certfile=str(tmp / "server.pem"), lifespan="off",
            timeout_graceful_shutdown=1,
        ), sock)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task
        self._tmp.cleanup()

    @property
    def authority(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.authority}/v1.0"

    @property
    def token_url(self) -> str:
        return f"{self.authority}/{TENANT}/oauth2/v2.0/token"

    def connector_config(self, type_: str, **overrides: Any) -> dict[str, Any]:
        """The config.yaml mapping of a connector pointed at this server."""
        mapping: dict[str, Any] = {
            "type": type_, "tenant_id": TENANT, "client_id": CLIENT_ID,
            "credential": {"type": "secret", "client_secret": CLIENT_SECRET},
            "graph_url": self.base_url, "authority_host": self.authority, "ca_bundle": str(self.ca_path),
            "request_timeout": 2, "max_retry_wait": 2,
        }
        mapping["organizer" if type_ == "teams" else "mailbox"] = ORGANIZER
        mapping.update(overrides)
        return mapping

    # -- test controls ---------------------------------------------------------------------

    def fail_next(self, status: int = 503, *, retry_after: float | None = None, code: str = "",
                  message: str = "", times: int = 1, path: str = "") -> None:
        """The next `times` Graph requests (matching `path`) answer `status`."""
        for _ in range(times):
            self.faults.append(Fault(status, retry_after, code, message, path=path))

    def hang_next(self, seconds: float = 30.0, *, times: int = 1, path: str = "") -> None:
        for _ in range(times):
            self.faults.append(Fault(hang=seconds, path=path))

    def drop_next(self, *, times: int = 1, path: str = "") -> None:
        """The next `times` requests are carried out, but the connection drops mid-answer."""
        for _ in range(times):
            self.faults.append(Fault(drop=True, path=path))

    def issue_token(self, roles: list[str] | None = None, lifetime: int = 3600) -> str:
        now = int(time.time())
        claims = {"aud": "https://graph.microsoft.com", "iss": f"https://sts.windows.net/{TENANT}/", "tid": TENANT,
                  "appid": CLIENT_ID, "iat": now, "nbf": now, "exp": now + lifetime,
                  "roles": self.roles if roles is None else roles}
        return jwt.encode(claims, SIGNING_KEY, algorithm="HS256")

    def credential(self) -> "StaticCredential":
        return StaticCredential(self)

    def graph_requests(self, method: str = "", contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if (not method or r.method == method) and contains in r.path]

    # -- app -------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(routes=[
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self._openid, methods=["GET"]),
            Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            Route("/upload/{session}", self._upload, methods=["PUT"]),
            Route("/v1.0/{rest:path}", self._graph, methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
        ])

    async def _openid(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        base = f"{self.authority}/{tenant}"
        return JSONResponse({
            "token_endpoint": f"{base}/oauth2/v2.0/token", "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "issuer": f"{base}/v2.0", "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "tenant_region_scope": "EU",
        })

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))  # no python-multipart needed
        self.token_requests.append({k: str(v) for k, v in form.items() if k not in ("client_secret", "client_assertion")})
        if request.path_params["tenant"] != TENANT:
            return JSONResponse({"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."}, 400)
        if form.get("client_id") != CLIENT_ID:
            return JSONResponse({"error": "unauthorized_client", "error_description": "AADSTS700016: Application not found in the directory."}, 400)
        assertion = form.get("client_assertion")
        if assertion is not None:  # certificate credential: a JWT signed with the app's key
            claims = jwt.decode(assertion, options={"verify_signature": False})
            if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" \
                    or claims.get("iss") != CLIENT_ID or not claims.get("aud", "").endswith("/oauth2/v2.0/token"):
                return JSONResponse({"error": "invalid_client", "error_description": "AADSTS700027: bad assertion"}, 401)
            self.assertions.append(claims)
        elif form.get("client_secret") != CLIENT_SECRET:
            return JSONResponse({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}, 401)
        if form.get("grant_type") != "client_credentials" or not str(form.get("scope", "")).endswith("/.default"):
            return JSONResponse({"error": "invalid_scope", "error_description": "AADSTS1002012: bad scope"}, 400)
        return JSONResponse({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                             "access_token": self.issue_token()})

    async def _graph(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        path = "/" + request.path_params["rest"]
        self.requests.append(Recorded(request.method, path, dict(request.query_params), dict(request.headers), body))
        fault = next((f for f in self.faults if f.path in path), None)
        if fault is not None and fault.drop:
            self.faults.remove(fault)
            fault = None
            drop = True
        else:
            drop = False
        if fault is not None:
            self.faults.remove(fault)
            if fault.hang:
                await asyncio.sleep(fault.hang)
                return _error(504, "GatewayTimeout", "hung")
            headers = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else None
            return _error(fault.status, fault.code or _STATUS_CODES.get(fault.status, "Error"),
                          fault.message or "Injected failure", headers)
        if len(raw) > MAX_REQUEST:
            return _error(413, "RequestEntityTooLarge", "The request is larger than 4 MB")
        try:
            roles = self._authorize(request)
            _check_schema(request.method, path, body, "include-unknown-enum-members" in request.headers.get("prefer", ""))
            response = await self._dispatch(request.method, path, dict(request.query_params), body, roles)
        except GraphError as exc:
            response = _error(exc.status, exc.code, exc.message)
        return _Dropped(response) if drop else response

    def _authorize(self, request: Request) -> set[str]:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            claims = jwt.decode(header[7:], SIGNING_KEY, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.PyJWTError:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.")
        return set(claims.get("roles", []))

    def _user(self, ref: str) -> dict[str, str]:
        for user in self.users.values():
            if ref.lower() in (user["id"], user["userPrincipalName"].lower()):
                return user
        raise GraphError(404, "ErrorInvalidUser", f"The requested user '{ref}' is invalid.")

    @staticmethod
    def _need(roles: set[str], *wanted: str) -> None:
        if not roles.intersection(wanted):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    async def _dispatch(self, method: str, path: str, query: dict[str, str], body: Any, roles: set[str]) -> Response:
        parts = path.strip("/").split("/")
        if parts[0] != "users" or len(parts) < 2:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{parts[0]}'.")
        if len(parts) == 2 and method == "GET":
            self._need(roles, "User.Read.All", "User.ReadBasic.All", "Directory.Read.All")
            try:
                return JSONResponse(self._user(parts[1]))
            except GraphError:
                raise GraphError(404, "Request_ResourceNotFound",
                                 f"Resource '{parts[1]}' does not exist or one of its queried reference-property objects are not present.")
        user = self._user(parts[1])
        rest = "/".join(parts[2:])
        if rest.startswith("onlineMeetings"):
            self._need(roles, "OnlineMeetings.ReadWrite.All", "OnlineMeetings.Read.All")
            if not self.access_policy:
                raise GraphError(403, "Forbidden", "No application access policy found for this app.")
            return self._online_meetings(method, user, rest, query, body, roles)
        if rest == "calendar" and method == "GET":
            self._need(roles, "Calendars.ReadWrite", "Calendars.Read")
            return JSONResponse({"id": "calendar-1", "name": "Calendar", "owner": {"address": user["mail"]}})
        if rest == "events":
            self._need(roles, "Calendars.ReadWrite", *(["Calendars.Read"] if method == "GET" else []))
            return self._events(method, user, query, body)
        if rest == "sendMail" and method == "POST":
            self._need(roles, "Mail.Send")
            message = body.get("Message", body.get("message")) if isinstance(body, dict) else None
            self.mails.append(self._check_message(message, user, inline=True))
            return Response(status_code=202)
        if rest.startswith("messages"):
            return self._messages(method, user, parts[3:], body, roles)
        raise GraphError(400, "BadRequest", f"Unsupported segment '{rest}'")

    def _online_meetings(self, method: str, user: dict[str, str], rest: str, query: dict[str, str],
                         body: Any, roles: set[str]) -> Response:
        if rest == "onlineMeetings/createOrGet" and method == "POST":
            self._need(roles, "OnlineMeetings.ReadWrite.All")
            external = _require(body, "externalId", str)
            for meeting in self.meetings.values():
                if meeting["externalId"] == external and meeting["organizer"] == user["id"]:
                    return JSONResponse(meeting, 200)
            meeting = self._new_meeting(user, body.get("subject", ""), body.get("startDateTime"), body.get("endDateTime"))
            meeting["externalId"] = external
            attendees = (body.get("participants") or {}).get("attendees") or []
            if not isinstance(attendees, list) or any(not isinstance(a, dict) or "upn" not in a for a in attendees):
                raise GraphError(400, "BadRequest", "participants.attendees must be a list of meetingParticipantInfo")
            meeting["participants"] = body.get("participants")
            self.meetings[meeting["id"]] = meeting
            return JSONResponse(meeting, 201)
        if rest == "onlineMeetings" and method == "GET":
            match = re.fullmatch(r"JoinWebUrl eq '(.+)'", query.get("$filter", ""))
            if not match:
                raise GraphError(400, "BadRequest", "Filter by JoinWebUrl is required")
            found = [m for m in self.meetings.values() if m["joinWebUrl"] == match.group(1)]
            return JSONResponse({"value": found})
        segments = rest.split("/")
        if len(segments) == 2 and method == "PATCH":
            self._need(roles, "OnlineMeetings.ReadWrite.All")
            meeting = self.meetings.get(segments[1])
            if meeting is None:
                raise GraphError(404, "NotFound", "Meeting not found")
            lobby = body.get("lobbyBypassSettings")
            if lobby is not None:
                if lobby.get("scope") not in LOBBY_SCOPES or not isinstance(lobby.get("isDialInBypassEnabled", False), bool):
                    raise GraphError(400, "BadRequest", f"Invalid lobbyBypassSettings {lobby}")
                meeting["lobbyBypassSettings"] = lobby
            if "allowedPresenters" in body:
                if body["allowedPresenters"] not in PRESENTERS:
                    raise GraphError(400, "BadRequest", f"Invalid allowedPresenters {body['allowedPresenters']}")
                meeting["allowedPresenters"] = body["allowedPresenters"]
            return JSONResponse(meeting)
        raise GraphError(400, "BadRequest", f"Unsupported onlineMeetings request {method} {rest}")

    def _new_meeting(self, user: dict[str, str], subject: str, start: Any, end: Any) -> dict[str, Any]:
        meeting_id = "MSp" + uuid.uuid4().hex
        return {
            "id": meeting_id, "organizer": user["id"], "subject": subject,
            "startDateTime": _iso(start, "startDateTime") if start else None,
            "endDateTime": _iso(end, "endDateTime") if end else None,
            "joinWebUrl": f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_{meeting_id}%40thread.v2/0",
            "externalId": None, "allowedPresenters": "everyone",
            "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": False},
            "audioConferencing": {"tollNumber": "+33 1 23 45 67 89", "conferenceId": "123456789"},
        }

    def _events(self, method: str, user: dict[str, str], query: dict[str, str], body: Any) -> Response:
        mine = [e for e in self.events.values() if e["_owner"] == user["id"]]
        if method == "GET":
            match = re.search(r"ep/id eq '([^']+)' and ep/value eq '([^']+)'", query.get("$filter", ""))
            if not match:
                return JSONResponse({"value": [self._public(e) for e in mine]})
            found = [e for e in mine if any(p["id"].lower() == match.group(1).lower() and p["value"] == match.group(2)
                                            for p in e.get("singleValueExtendedProperties") or [])]
            return JSONResponse({"value": [self._public(e) for e in found]})
        if method != "POST":
            raise GraphError(405, "MethodNotAllowed", "")
        _require(body, "subject", str)
        for key in ("start", "end"):
            slot = _require(body, key, dict)
            _iso(_require(slot, "dateTime", str), key)
            _require(slot, "timeZone", str)
        for attendee in body.get("attendees") or []:
            address = _require(attendee, "emailAddress", dict)
            _require(address, "address", str)
            if attendee.get("type", "required") not in ("required", "optional", "resource"):
                raise GraphError(400, "BadRequest", "attendee type")
        transaction = body.get("transactionId")
        if transaction:
            for event in mine:
                if event.get("transactionId") == transaction:
                    return JSONResponse(self._public(event), 201)
        event = dict(body)
        event_id = "AAMk" + uuid.uuid4().hex
        event.update({"id": event_id, "_owner": user["id"], "webLink": f"https://outlook.office365.com/owa/?itemid={event_id}"})
        if body.get("isOnlineMeeting") and body.get("onlineMeetingProvider") == "teamsForBusiness":
            meeting = self._new_meeting(user, body["subject"], body["start"]["dateTime"] + "Z", body["end"]["dateTime"] + "Z")
            self.meetings[meeting["id"]] = meeting
            event["onlineMeeting"] = {"joinUrl": meeting["joinWebUrl"], "conferenceId": "123456789",
                                      "tollNumber": "+33 1 23 45 67 89"}
        self.events[event_id] = event
        return JSONResponse(self._public(event), 201)

    @staticmethod
    def _public(event: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in event.items() if not k.startswith("_")}

    def _check_message(self, message: Any, user: dict[str, str], inline: bool) -> dict[str, Any]:
        if not isinstance(message, dict):
            raise GraphError(400, "ErrorInvalidRequest", "Message is required")
        _require(message, "subject", str)
        body = _require(message, "body", dict)
        if body.get("contentType") not in ("html", "text", "HTML", "Text"):
            raise GraphError(400, "BadRequest", "body.contentType must be html or text")
        recipients = _require(message, "toRecipients", list)
        if inline and not recipients:
            raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
        for recipient in recipients:
            address = _require(_require(recipient, "emailAddress", dict), "address", str)
            if "@" not in address:
                raise GraphError(400, "ErrorInvalidRecipients", f"At least one recipient is not valid., Recipient '{address}' is not resolved.")
        decoded = []
        for attachment in message.get("attachments") or []:
            if attachment.get("@odata.type") != "#microsoft.graph.fileAttachment":
                raise GraphError(400, "BadRequest", "attachment @odata.type")
            name = _require(attachment, "name", str)
            try:
                data = base64.b64decode(_require(attachment, "contentBytes", str), validate=True)
            except ValueError:
                raise GraphError(400, "BadRequest", f"contentBytes of {name} is not base64")
            decoded.append({"name": name, "contentType": attachment.get("contentType"), "data": data,
                            "isInline": attachment.get("isInline", False), "contentId": attachment.get("contentId")})
        return {"from": user["mail"], "message": message, "attachments": decoded}

    def _messages(self, method: str, user: dict[str, str], parts: list[str], body: Any, roles: set[str]) -> Response:
        self._need(roles, "Mail.ReadWrite")
        if not parts and method == "POST":
            checked = self._check_message(body, user, inline=False)
            draft_id = "AAMkDraft" + uuid.uuid4().hex
            self.drafts[draft_id] = {"id": draft_id, "owner": user["id"], **checked}
            return JSONResponse({"id": draft_id, **body}, 201)
        draft = self.drafts.get(parts[0]) if parts else None
        if draft is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        tail = "/".join(parts[1:])
        if not tail and method == "DELETE":
            del self.drafts[draft["id"]]
            return Response(status_code=204)
        if tail == "attachments" and method == "POST":
            checked = self._check_message({"subject": "", "body": {"contentType": "text"}, "toRecipients": [], "attachments": [body]}, user, inline=False)
            draft["attachments"].extend(checked["attachments"])
            return JSONResponse({"id": uuid.uuid4().hex, "name": body["name"]}, 201)
        if tail == "attachments/createUploadSession" and method == "POST":
            item = _require(body, "AttachmentItem", dict) if "AttachmentItem" in (body or {}) else _require(body, "attachmentItem", dict)
            if item.get("attachmentType") != "file":
                raise GraphError(400, "BadRequest", "attachmentType must be file")
            size = _require(item, "size", int)
            if not 3 * 1024 * 1024 <= size <= 150 * 1024 * 1024:
                raise GraphError(400, "BadRequest", "Upload sessions are for attachments of 3 MB to 150 MB")
            session = uuid.uuid4().hex
            self.uploads[session] = Upload(draft["id"], user["id"], _require(item, "name", str), size, item.get("contentType") or "")
            return JSONResponse({"uploadUrl": f"{self.authority}/upload/{session}?authtoken=opaque",
                                 "expirationDateTime": "2099-01-01T00:00:00Z", "nextExpectedRanges": ["0-"]}, 201)
        if tail == "send" and method == "POST":
            if any(not u.received or len(u.received) < u.size for u in self.uploads.values() if u.message_id == draft["id"]):
                raise GraphError(400, "ErrorInvalidRequest", "An attachment upload is incomplete")
            for upload in [u for u in self.uploads.values() if u.message_id == draft["id"]]:
                draft["attachments"].append({"name": upload.name, "contentType": upload.content_type,
                                             "data": bytes(upload.received), "isInline": False, "contentId": None})
            if not draft["message"].get("toRecipients"):
                raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
            self.mails.append({"from": draft["from"], "message": draft["message"], "attachments": draft["attachments"],
                               "draft": draft["id"]})
            del self.drafts[draft["id"]]
            return Response(status_code=202)
        raise GraphError(400, "BadRequest", f"Unsupported message request {method} {tail}")

    async def _upload(self, request: Request) -> Response:
        data = await request.body()
        self.requests.append(Recorded("PUT", request.url.path, dict(request.query_params), dict(request.headers), len(data)))
        upload = self.uploads.get(request.path_params["session"])
        if upload is None:
            return _error(404, "ErrorItemNotFound", "Upload session not found")
        if "authorization" in request.headers:
            return _error(401, "InvalidAudience", "Do not send a bearer token to the upload URL")
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", request.headers.get("content-range", ""))
        if not match:
            return _error(400, "InvalidContentRange", "Content-Range is required")
        first, last, total = map(int, match.groups())
        if total != upload.size or first != len(upload.received) or last - first + 1 != len(data) or len(data) > 4 * 1024 * 1024:
            return _error(400, "InvalidContentRange", f"Unexpected range {first}-{last}/{total}")
        upload.received.extend(data)
        upload.chunks.append((first, last))
        if len(upload.received) == upload.size:
            return Response(status_code=201)
        return JSONResponse({"expirationDateTime": "2099-01-01T00:00:00Z", "nextExpectedRanges": [f"{len(upload.received)}-"]})


# (method, path pattern after /users/{id}/) -> ("type" | "action", name) of the body, from the v1.0 metadata
_BODIES = [
    ("POST", re.compile(r"onlineMeetings/createOrGet"), "action", "createOrGet"),
    ("PATCH", re.compile(r"onlineMeetings/[^/]+"), "type", "onlineMeeting"),
    ("POST", re.compile(r"events"), "type", "event"),
    ("POST", re.compile(r"sendMail"), "action", "sendMail"),
    ("POST", re.compile(r"messages"), "type", "message"),
    ("POST", re.compile(r"messages/[^/]+/attachments"), "type", "attachment"),
    ("POST", re.compile(r"messages/[^/]+/attachments/createUploadSession"), "action", "createUploadSession"),
    ("POST", re.compile(r"messages/[^/]+/send"), "action", "send"),
]


def _check_schema(method: str, path: str, body: Any, unknown_enums: bool) -> None:
    """Refuse a body Graph's OData reader would refuse (400 RequestBodyRead), before any other check."""
    rest = "/".join(path.strip("/").split("/")[2:])
    for verb, pattern, kind, name in _BODIES:
        if verb == method and pattern.fullmatch(rest):
            if isinstance(body, (bytes, bytearray)):
                raise GraphError(400, "RequestBodyRead", "The request body is not valid JSON.")
            try:
                if kind == "action":
                    validate_action(name, body, unknown_enums=unknown_enums)
                else:
                    validate_type(body, name, unknown_enums=unknown_enums)
            except SchemaError as exc:
                raise GraphError(400, exc.code, exc.message) from None
            return


class _ConnectionCut(Exception):
    """Raised after the answer started: uvicorn closes the connection, the client sees it drop."""


class _Dropped(Response):
    """Sends the status line, headers and half of the body of `inner`, then cuts the connection."""

    def __init__(self, inner: Response) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = bytes(self.inner.body) or b"{}"
        headers = [(k, v) for k, v in self.inner.raw_headers if k.lower() != b"content-length"]
        await send({"type": "http.response.start", "status": self.inner.status_code,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise _ConnectionCut("connection cut on purpose by the test")


_STATUS_CODES = {429: "TooManyRequests", 503: "ServiceNotAvailable", 504: "GatewayTimeout", 403: "Forbidden",
                 404: "NotFound", 500: "InternalServerError"}


class StaticCredential:
    """A test credential: tokens signed by the server, no token endpoint involved."""

    def __init__(self, server: GraphServer, roles: list[str] | None = None) -> None:
        self.server, self.roles, self.calls = server, roles, 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.calls += 1
        return AccessToken(self.server.issue_token(self.roles), int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> "StaticCredential":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class WebhookServer:
    """A Teams Workflows webhook stand-in (plain HTTP): records cards, answers 202 or a fault.

    `async with WebhookServer() as hook: hook.url, hook.posts, hook.fail_next(429, retry_after=1)`
    """

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.attempts = 0
        self.faults: list[Fault] = []
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/workflows/triggers/manual/paths/invoke?api-version=1&sig=SIGNATURE-SECRET"

    def fail_next(self, status: int = 503, *, retry_after: float | None = None, times: int = 1) -> None:
        for _ in range(times):
            self.faults.append(Fault(status, retry_after))

    async def _receive(self, request: Request) -> Response:
        self.attempts += 1
        if request.query_params.get("sig") != "SIGNATURE-SECRET":
            return JSONResponse({"error": {"code": "DirectApiAuthorizationRequired", "message": "bad signature"}}, 401)
        if self.faults:
            fault = self.faults.pop(0)
            headers = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else None
            return JSONResponse({"error": {"code": "Throttled" if fault.status == 429 else "Error", "message": "injected"}},
                                fault.status, headers=headers)
        payload = await request.json()
        attachments = payload.get("attachments") if isinstance(payload, dict) else None
        if payload.get("type") != "message" or not isinstance(attachments, list) or not attachments:
            return JSONResponse({"error": {"code": "InvalidRequestContent", "message": "type message with attachments required"}}, 400)
        for attachment in attachments:
            content = attachment.get("content") or {}
            if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive" or content.get("type") != "AdaptiveCard":
                return JSONResponse({"error": {"code": "InvalidRequestContent", "message": "not an adaptive card"}}, 400)
        if len(await request.body()) > 28 * 1024:
            return JSONResponse({"error": {"code": "MessageTooLarge", "message": "over 28 KB"}}, 413)
        self.posts.append(payload)
        return Response(status_code=202)

    async def __aenter__(self) -> "WebhookServer":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/workflows/{rest:path}", self._receive, methods=["POST"])])
        self._server, self._task = await _serve(uvicorn.Config(app, log_level="warning", lifespan="off"), sock)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task


async def _serve(config: uvicorn.Config, sock: socket.socket) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Start uvicorn on an already bound socket; return once it accepts connections."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task
