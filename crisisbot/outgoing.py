"""A personal message as stored in the outgoing spool, so a restart resends it unchanged.

The frozen MIME bytes (`OutgoingEmail.raw`) travel with the structured fields:
SMTP and the outbox resend the very bytes (same Message-ID, same Date), a
transport that builds its own request (Graph) uses the fields.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from crisisbot.models import Attachment, OutgoingEmail, Recipient


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def _unb64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text is not None else None


def encode(message: OutgoingEmail) -> str:
    r = message.recipient
    return json.dumps({
        "key": message.key,
        "recipient": {"person_id": r.person_id, "name": r.name, "email": r.email, "language": r.language,
                      "roles": list(r.roles), "external": r.external},
        "subject": message.subject, "text": message.text, "html": message.html,
        "attachments": [{"filename": a.filename, "content_type": a.content_type, "data": _b64(a.data)}
                        for a in message.attachments],
        "message_id": message.message_id, "headers": message.headers, "raw": _b64(message.raw),
    }, separators=(",", ":"))


def decode(text: str) -> OutgoingEmail:
    data: dict[str, Any] = json.loads(text)
    r = data["recipient"]
    return OutgoingEmail(
        key=data["key"],
        recipient=Recipient(r["person_id"], r["name"], r["email"], r["language"], tuple(r["roles"]), r["external"]),
        subject=data["subject"], text=data["text"], html=data["html"],
        attachments=[Attachment(a["filename"], a["content_type"], _unb64(a["data"]) or b"")
                     for a in data["attachments"]],
        message_id=data["message_id"], headers=data["headers"], raw=_unb64(data["raw"]),
    )
