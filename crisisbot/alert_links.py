"""The personal links an alert carries: acknowledge, stand down, camera live view.

One small service built from the signer, the web settings and the configuration, so
a message step asks `links.ack(incident, person)` instead of reaching for the secret
key, the clock and the web settings itself. None of them exists without a web
address to answer it (`web.enabled` or `web.public_url`): then alerts carry no links.
"""

from __future__ import annotations

from dataclasses import dataclass

from crisisbot.config.settings import DaemonConfig
from crisisbot.links import Signer
from crisisbot.models import Recipient

ACK, STAND_DOWN = "ack", "stand-down"  # the purposes a token is signed for (lifecycle/acks.py)
LIVEVIEW_TTL = 86400.0  # a live-view link serves the incident's images for a day


def public_url(config: DaemonConfig) -> str | None:
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
    def of(cls, signer: Signer, config: DaemonConfig) -> "AlertLinks | None":
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
        from crisisbot.web.liveview import liveview_link  # the web part loads only where links are made

        return liveview_link(self.signer, self.base_url, incident_id, person, ttl=LIVEVIEW_TTL)
