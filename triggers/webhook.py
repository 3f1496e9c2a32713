"""HTTP webhook input: signed crisisbot JSON, or PagerDuty Events API v2 bodies.

Native alarms (`POST /alarms`) carry `X-Crisisbot-Timestamp` (Unix seconds) and
`X-Crisisbot-Signature: sha256=HEX`, the HMAC-SHA256 of `"<timestamp>.<body>"`
with the shared secret. Stale timestamps and replayed signatures are refused;
the signature is remembered in the store, so a replay is refused after a restart too.

Monitoring tools that speak PagerDuty post to `POST /v2/enqueue`; they are
authenticated, as by PagerDuty itself, by their secret `routing_key`, which
also names the site. `202` is only answered once the alarm is on disk.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crisisbot.config.types import Identifier, Reference, Seconds, Strict
from crisisbot.errors import InputRejected
from crisisbot.listeners import ListenerLimits
from crisisbot.models import Alarm, AlarmAction, EventKind, Severity
from crisisbot.store.base import Nonce, Replayed
from crisisbot.store.errors import StoreError
from crisisbot.web.background import BackgroundServer
from triggers.base import Trigger

SIGNATURE_HEADER = "X-Crisisbot-Signature"
TIMESTAMP_HEADER = "X-Crisisbot-Timestamp"
UNIX_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")  # no sign, exponent, nan or inf
PD_SEVERITY = {"critical": Severity.critical, "error": Severity.major, "warning": Severity.minor, "info": Severity.info}


class RoutingKey(Strict):
    key: SecretStr
    site: Annotated[Identifier, Reference("sites")]
    kind: EventKind = EventKind.technical


class WebhookConfig(Strict):
    type: Literal["webhook"]
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    secret: SecretStr | None = Field(None, description="HMAC key for /alarms (e.g. ${WEBHOOK_SECRET})")
    tolerance: Seconds = Field(300.0, description="accepted clock difference for signed requests")
    max_body: int = Field(65536, ge=256, description="larger bodies are refused (413)")
    max_depth: int = Field(16, ge=2, le=64, description="deeper JSON nesting is refused (400)")
    max_fields: int = Field(1000, ge=10, description="JSON bodies with more keys and items in total are refused (400)")
    limits: ListenerLimits = Field(default_factory=ListenerLimits, description="connection caps and timeouts")
    routing_keys: list[RoutingKey] = Field(default_factory=list, description="PagerDuty integration keys")
    default_site: Annotated[Identifier | None, Reference("sites")] = None


class NativeAlarm(Strict):
    """The body of `POST /alarms`."""

    site: Identifier | None = None
    zone: str | None = None
    input: str | None = None
    kind: EventKind = EventKind.panic
    severity: Severity = Severity.critical
    label: str = Field("", max_length=500)
    action: AlarmAction = AlarmAction.trigger
    dedup_key: str | None = Field(None, max_length=255)
    occurred_at: datetime | None = None
    drill: bool = False
    details: dict[str, Any] = Field(default_factory=dict)


class PagerDutyPayload(BaseModel):
    summary: str = Field(max_length=1024)
    source: str
    severity: Literal["critical", "error", "warning", "info"]
    timestamp: datetime | None = None
    component: str | None = None
    group: str | None = None
    class_: str | None = Field(None, alias="class")
    custom_details: dict[str, Any] | str | None = None


class PagerDutyEvent(BaseModel):
    routing_key: str = Field(min_length=1)
    event_action: Literal["trigger", "acknowledge", "resolve"]
    dedup_key: str | None = Field(None, max_length=255)
    payload: PagerDutyPayload | None = None
    images: list[dict[str, str]] = Field(default_factory=list)
    links: list[dict[str, str]] = Field(default_factory=list)
    client: str | None = None
    client_url: str | None = None


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """Signature a sender must put in `X-Crisisbot-Signature`."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookTrigger(Trigger):
    Config = WebhookConfig
    config: WebhookConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats = {"accepted": 0, "rejected": 0}
        self.port: int | None = None
        self._server: BackgroundServer | None = None

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/alarms", self._native, methods=["POST"]),
            Route("/v2/enqueue", self._pagerduty, methods=["POST"]),
            Route("/health", lambda _r: JSONResponse({"status": "ok"}), methods=["GET"]),
        ])

    async def start(self) -> None:
        self._server = BackgroundServer(self.app(), self.config.host, self.config.port, f"webhook {self.name}",
                                        self.config.limits)
        self.port = await self._server.start()
        self.log.info("webhook listening on http://%s:%s", self.config.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()

    # -- handlers ----------------------------------------------------------
    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.config.max_body:
            raise InputRejected(f"body larger than {self.config.max_body} bytes", 413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.config.max_body:
                raise InputRejected(f"body larger than {self.config.max_body} bytes", 413)
        return body

    async def _native(self, request: Request) -> JSONResponse:
        try:
            if self.config.secret is None:
                raise InputRejected("signed alarms are disabled: set `secret` for this webhook", 403)
            body = await self._body(request)
            nonce = self._authenticate(request, body)
            data = self._json(body)
            alarm = self._from_pagerduty(data) if "event_action" in data else self._from_native(data, body)
            try:
                alarm_id = await self.sink.submit(alarm, nonce)
            except Replayed as exc:
                raise InputRejected(str(exc), 409) from None
            except StoreError as exc:
                raise _not_stored(self.log, exc) from None
        except InputRejected as exc:
            return self._reject(exc)
        self.stats["accepted"] += 1
        return JSONResponse({"status": "accepted", "alarm_id": alarm_id}, status_code=202)

    async def _pagerduty(self, request: Request) -> JSONResponse:
        try:
            data = self._json(await self._body(request))
            alarm = self._from_pagerduty(data)
            try:
                await self.sink.submit(alarm)
            except StoreError as exc:
                raise _not_stored(self.log, exc) from None
        except InputRejected as exc:
            self.stats["rejected"] += 1
            self.log.warning("PagerDuty-style event refused (%s): %s", exc.status, exc)
            return JSONResponse({"status": "invalid event", "message": str(exc), "errors": [str(exc)]},
                                status_code=exc.status)
        self.stats["accepted"] += 1
        return JSONResponse({"status": "success", "message": "Event processed", "dedup_key": alarm.dedup_key},
                            status_code=202)

    def _reject(self, exc: InputRejected) -> JSONResponse:
        self.stats["rejected"] += 1
        self.log.warning("webhook request refused (%s): %s", exc.status, exc)
        return JSONResponse({"status": "rejected", "error": str(exc)}, status_code=exc.status)

    def _authenticate(self, request: Request, body: bytes) -> Nonce:
        """Check signature and freshness; the signature is the nonce, stored with the
        alarm (in the same transaction) so a request the store failed to keep can be
        retried as is, and one it kept cannot be replayed."""
        assert self.config.secret is not None
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not stamp or not given:
            raise InputRejected(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header", 401)
        if not UNIX_SECONDS.fullmatch(stamp):  # float() would take nan, inf, 1e999: never stale
            raise InputRejected(f"{TIMESTAMP_HEADER} must be Unix seconds (digits, optional fraction)", 401)
        skew = abs(time.time() - float(stamp))
        expected = sign(self.config.secret.get_secret_value().encode(), stamp, body)
        if not _same(expected, given):
            raise InputRejected("bad signature", 401)
        if skew > self.config.tolerance:
            raise InputRejected(f"stale request: timestamp is {skew:.0f}s away from server time "
                                f"(tolerance {self.config.tolerance:.0f}s); check the sender's clock", 401)
        return Nonce(f"webhook:{self.name}", given, 2 * self.config.tolerance)

    def _from_native(self, data: dict[str, Any], body: bytes) -> Alarm:
        try:
            native = NativeAlarm.model_validate(data)
        except ValidationError as exc:
            raise InputRejected(_first_error(exc), 422) from None
        site = native.site or self.config.default_site
        if site is None:
            raise InputRejected("`site` is required (no default_site configured)", 422)
        extra = {"occurred_at": native.occurred_at} if native.occurred_at else {}
        return _alarm(source=self.name, site=site, zone=native.zone, input=native.input, kind=native.kind,
                      severity=native.severity, label=native.label, action=native.action,
                      dedup_key=native.dedup_key, drill=native.drill, details=native.details,
                      raw=body.decode("utf-8", "replace"), **extra)

    def _from_pagerduty(self, data: dict[str, Any]) -> Alarm:
        try:
            event = PagerDutyEvent.model_validate(data)
        except ValidationError as exc:
            raise InputRejected(_first_error(exc), 400) from None
        route = next((r for r in self.config.routing_keys
                      if _same(r.key.get_secret_value(), event.routing_key)), None)
        if route is None:
            raise InputRejected("unknown routing_key", 400)  # PagerDuty answers 400 too
        if event.event_action == "trigger" and event.payload is None:
            raise InputRejected("payload is required for event_action trigger", 400)
        if event.event_action != "trigger" and not event.dedup_key:
            raise InputRejected(f"dedup_key is required for event_action {event.event_action}", 400)
        payload = event.payload
        details: dict[str, Any] = {"pagerduty": {"client": event.client, "client_url": event.client_url}}
        if payload:
            details.update({"source": payload.source, "component": payload.component, "group": payload.group,
                            "class": payload.class_, "custom_details": payload.custom_details})
        if event.images:
            details["images"] = event.images
        extra = {"occurred_at": payload.timestamp} if payload and payload.timestamp else {}
        return _alarm(
            source=self.name, site=route.site, zone=payload.component if payload else None,
            kind=route.kind, severity=PD_SEVERITY[payload.severity] if payload else Severity.info,
            label=payload.summary if payload else "", action=AlarmAction(event.event_action),
            dedup_key=event.dedup_key, details=details,
            links=[{"href": link.get("href", ""), "text": link.get("text", "")} for link in event.links],
            raw=json.dumps({**data, "routing_key": "***"}), **extra,
        )


    def _json(self, body: bytes) -> dict[str, Any]:
        return parse_json(body, self.config.max_depth, self.config.max_fields)


def parse_json(body: bytes, max_depth: int, max_fields: int) -> dict[str, Any]:
    """A JSON object within the limits, or InputRejected(400) saying which limit.

    The standard parser is kept (it is fast and strict), with the non-standard
    NaN/Infinity and overflowing floats refused; nesting and size are checked on the
    result, iteratively, so no hostile body reaches a recursive consumer downstream.
    """
    try:
        data = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise InputRejected(f"body is nested too deeply (limit {max_depth})", 400) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, >4300-digit ints, our refusals
        raise InputRejected(f"body is not valid JSON: {exc}", 400) from None
    if not isinstance(data, dict):
        raise InputRejected("body must be a JSON object", 400)
    _check_shape(data, max_depth, max_fields)
    return data


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _check_shape(data: Any, max_depth: int, max_fields: int) -> None:
    fields = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise InputRejected(f"body is nested too deeply (limit {max_depth})", 400)
        children = node.values() if isinstance(node, dict) else node
        fields += len(children)
        if fields > max_fields:
            raise InputRejected(f"body has too many fields (limit {max_fields})", 400)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison of secrets that may hold any character (compare_digest
    refuses non-ASCII str; surrogatepass because JSON can carry lone surrogates)."""
    return hmac.compare_digest(expected.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass"))


def _alarm(**fields: Any) -> Alarm:
    try:
        return Alarm(**fields)
    except ValidationError as exc:
        raise InputRejected(_first_error(exc), 422) from None


def _not_stored(log: logging.Logger, exc: StoreError) -> InputRejected:
    """503: the sender retries the same request (its nonce was not burned); the reason
    (full disk, lock) goes to our log, not to the sender."""
    log.error("alarm NOT stored, the sender must retry: %s", exc)
    return InputRejected("alarm not stored: the store is unavailable; send the same request again", 503)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]

