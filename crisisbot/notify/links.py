"""Personal signed links in a message: acknowledge, stand down, live view.

Each link names one incident and one person and expires; it is signed with the
daemon's key (the runtime's `signer`, on the daemon's clock), so the web routes trust
nobody's word but the signature. `AlertLinks` is the one object a message needs:
built from the signer and the settings, None when no web address answers links.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from crisisbot.links import Signer
from crisisbot.models import Recipient
from crisisbot.web.liveview import liveview_link

if TYPE_CHECKING:
    from crisisbot.config.settings import DaemonConfig

ACK, STAND_DOWN, CANCEL = "ack", "stand-down", "cancel"  # the purposes a token is signed for
LIVEVIEW_TTL = 86400.0  # a live-view link serves the incident's images for a day


def public_url(config: "DaemonConfig") -> str | None:
    """Base URL of the web routes, or None when no web server answers (then no links)."""
    web = config.web
    if not web.enabled and not web.public_url:
        return None
    return (web.public_url or f"http://{web.host}:{web.port}").rstrip("/")


@dataclass(frozen=True, slots=True)
class AlertLinks:
    signer: Signer
    base_url: str
    ttl: float  # acknowledge and stand-down links (lifecycle.ack_link_ttl)
    stand_down_roles: frozenset[str]

    @classmethod
    def of(cls, signer: Signer, config: "DaemonConfig") -> "AlertLinks | None":
        base = public_url(config)
        if base is None:
            return None
        return cls(signer, base, config.lifecycle.ack_link_ttl, frozenset(config.lifecycle.stand_down_roles))

    def ack(self, incident_id: str, person_id: str) -> str:
        return f"{self.base_url}/ack/{self.signer.sign(incident_id, person_id, ACK, self.ttl)}"

    def stand_down(self, incident_id: str, person: Recipient) -> str | None:
        """Only for people whose role may end an incident (lifecycle.stand_down_roles)."""
        if not self.stand_down_roles & set(person.roles):
            return None
        return f"{self.base_url}/stand-down/{self.signer.sign(incident_id, person.person_id, STAND_DOWN, self.ttl)}"

    def liveview(self, incident_id: str, person: Recipient) -> str:
        """Personal live-view link (blurred images for external people)."""
        return liveview_link(self.signer, self.base_url, incident_id, person, ttl=LIVEVIEW_TTL)
