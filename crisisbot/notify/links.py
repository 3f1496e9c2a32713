"""Personal signed links in a message: acknowledge, stand down, live view.

Each link names one incident and one person and expires; it is signed with the
daemon's key, so the web routes trust nobody's word but the signature.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from crisisbot.links import Signer
from crisisbot.models import Recipient, utcnow
from crisisbot.web.liveview import liveview_link

ACK, STAND_DOWN, CANCEL = "ack", "stand-down", "cancel"
LIVEVIEW_TTL = 86400.0


def now_of(runtime: Any) -> Callable[[], datetime]:
    """The lifecycle's clock while the daemon runs (tests drive it), else the wall clock."""
    lifecycle = getattr(runtime, "lifecycle", None)
    return lifecycle.clock.now if lifecycle is not None else utcnow


def signer_of(runtime: Any) -> Signer:
    assert runtime.services is not None
    return Signer(runtime.services.extras["secret_key"], now_of(runtime))


def public_url(runtime: Any) -> str | None:
    """Base URL of the web routes, or None when no web server answers (then no links)."""
    web = runtime.bundle.config.web
    if not web.enabled and not web.public_url:
        return None
    return (web.public_url or f"http://{web.host}:{web.port}").rstrip("/")


def ack_url(runtime: Any, incident_id: str, person_id: str) -> str | None:
    base = public_url(runtime)
    if base is None or runtime.services is None:
        return None
    token = signer_of(runtime).sign(incident_id, person_id, ACK, runtime.bundle.config.lifecycle.ack_link_ttl)
    return f"{base}/ack/{token}"


def stand_down_url(runtime: Any, incident_id: str, person_id: str) -> str | None:
    """Only for people whose role may end an incident (lifecycle.stand_down_roles)."""
    base = public_url(runtime)
    person = runtime.bundle.people.get(person_id)
    allowed = set(runtime.bundle.config.lifecycle.stand_down_roles)
    if base is None or runtime.services is None or person is None or not allowed & set(person.roles):
        return None
    token = signer_of(runtime).sign(incident_id, person_id, STAND_DOWN, runtime.bundle.config.lifecycle.ack_link_ttl)
    return f"{base}/stand-down/{token}"


def liveview_url(runtime: Any, incident_id: str, person: Recipient) -> str | None:
    """Personal live-view link (blurred for external people), when the web server is public."""
    base = public_url(runtime)
    if base is None or getattr(runtime, "services", None) is None:
        return None
    return liveview_link(signer_of(runtime), base, incident_id, person, ttl=LIVEVIEW_TTL)
