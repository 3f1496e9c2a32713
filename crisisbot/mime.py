"""Build the RFC 5322 message for one `OutgoingEmail` (text + HTML alternative, attachments)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from crisisbot.models import OutgoingEmail, utcnow


def build_mime(message: OutgoingEmail, sender: str) -> EmailMessage:
    mime = EmailMessage()
    mime["From"] = sender
    mime["To"] = formataddr((message.recipient.name, message.recipient.email))
    mime["Subject"] = message.subject
    mime["Date"] = format_datetime(utcnow())
    mime["Message-ID"] = message.message_id or ""
    mime["Auto-Submitted"] = "auto-generated"
    for name, value in message.headers.items():
        mime[name] = value
    mime.set_content(message.text)
    if message.html:
        mime.add_alternative(message.html, subtype="html")
    for item in message.attachments:
        maintype, _, rest = item.content_type.partition("/")
        subtype, _, params = rest.partition(";")
        extra = {}
        if params.strip().startswith("method="):
            extra["params"] = {"method": params.split("=", 1)[1].strip()}
        mime.add_attachment(item.data, maintype=maintype, subtype=subtype.strip(), filename=item.filename, **extra)
    return mime
