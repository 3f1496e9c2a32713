"""Console sessions and personal links on their files: what the command bus
(crisisbot/command_bus.py) uses to revoke links, and the sessions file it opens when
no web console runs in this process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crisisbot.errors import CrisisbotError
from crisisbot.links import Claims, LinkError, Signer
from crisisbot.web.access import Revocations
from crisisbot.web.sessions import SessionFile, Sessions

if TYPE_CHECKING:
    from crisisbot.config.bundle import Bundle

SESSIONS_FILE = "console-sessions.json"
REVOCATIONS_FILE = "revoked-links.json"
PURPOSES = ("liveview", "liveview.blurred", "ack", "stand-down")


def token_of(link: str) -> str:
    """The token of a personal link (a full URL, a path, or the token itself)."""
    return link.rstrip("/").split("?")[0].split("/live/")[-1].split("/ack/")[-1].split("/stand-down/")[-1] \
        .split("/")[0]


def claims_of(signer: Signer, token: str) -> Claims:
    for purpose in PURPOSES:
        try:
            return signer.verify(token, purpose)
        except LinkError:
            continue
    raise CrisisbotError("this is not a valid crisisbot link (or it has already expired)")


async def revoke_links(revocations: Revocations, signer: Signer, request: dict[str, Any]) -> dict[str, Any]:
    reason = str(request.get("reason") or f"revoked by {request.get('by', 'cli')}")
    if request.get("link"):
        token = token_of(str(request["link"]))
        claims = claims_of(signer, token)
        await revocations.revoke_token(token, claims, reason)
        return {"ok": True, "incident_id": claims.incident_id, "person": claims.recipient_id, "scope": "link"}
    incident_id, person = request.get("incident_id"), request.get("person")
    if not incident_id or not person:
        raise CrisisbotError("give a link, or an incident id and a person")
    await revocations.revoke_recipient(str(incident_id), str(person), reason)
    return {"ok": True, "incident_id": incident_id, "person": person, "scope": "person"}


def offline_sessions(bundle: "Bundle") -> Sessions:
    """The sessions file, for the CLI when no daemon runs."""
    web = bundle.config.web
    return Sessions(SessionFile(bundle.data_dir / SESSIONS_FILE), lifetime=web.session_ttl,
                    idle=web.session_idle, offload=asyncio.to_thread)


async def offline_revocations(data_dir: Path) -> Revocations:
    return await Revocations.from_file(data_dir / REVOCATIONS_FILE)
