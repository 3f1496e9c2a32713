"""Signed, expiring, personal links (acknowledge, stand down, camera live view).

A token binds an incident, a person and a purpose; the HMAC uses a key derived from
the per-install secret, so a token cannot be forged, reused for another purpose or
moved to another person. Written on the stdlib `hmac` (about twenty lines) because
the only library that fits, itsdangerous, is not a declared dependency and would
still need the expiry and the injected clock added on top.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from crisisbot.errors import LinkError, LinkExpired  # noqa: F401 - re-exported for existing importers


@dataclass(frozen=True, slots=True)
class Claims:
    incident_id: str
    recipient_id: str
    purpose: str
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs and verifies link tokens; `now` is injectable so tests drive expiry."""

    def __init__(self, secret: bytes, now: Callable[[], datetime] | None = None) -> None:
        self._key = hmac.new(secret, b"crisisbot.links.v1", hashlib.sha256).digest()
        self._now = now or (lambda: datetime.now(timezone.utc))

    def _mac(self, purpose: str, body: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}\0{body}".encode(), hashlib.sha256).digest())

    def sign(self, incident_id: str, recipient_id: str, purpose: str, ttl: float) -> str:
        expires = int(self._now().timestamp() + ttl)
        body = _b64(json.dumps([incident_id, recipient_id, expires], separators=(",", ":")).encode())
        return f"{body}.{self._mac(purpose, body)}"

    def verify(self, token: str, purpose: str) -> Claims:
        body, _, mac = token.partition(".")
        if not body or not mac or not hmac.compare_digest(mac, self._mac(purpose, body)):
            raise LinkError("invalid link")
        try:
            incident_id, recipient_id, expires = json.loads(_unb64(body))
        except (ValueError, TypeError) as exc:
            raise LinkError("invalid link") from exc
        expires_at = datetime.fromtimestamp(expires, timezone.utc)
        if self._now() >= expires_at:
            raise LinkExpired("this link has expired")
        return Claims(incident_id, recipient_id, purpose, expires_at)
