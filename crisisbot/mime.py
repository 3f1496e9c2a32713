"""Serialize one `OutgoingEmail` as RFC 5322/MIME bytes (text + HTML alternative, attachments).

Written by hand on purpose: the stdlib `email` generator costs ~2 ms per message
(header refolding, regex-heavy policies), which made a 50-person committee alert
three times slower than the SMTP exchange itself (benchmarks/bench_alarm_to_email).
The structure here is fixed and simple — base64 bodies, RFC 2047 encoded-word
headers via `email.header.Header` — so the output is plain and standard; tests
parse it back with the stdlib parser.
"""

from __future__ import annotations

import base64
import secrets
from functools import lru_cache
from email.header import Header
from email.utils import formataddr, formatdate

from crisisbot.models import Attachment, OutgoingEmail
from crisisbot.rendering import clean_text

CRLF = "\r\n"


@lru_cache(maxsize=256)  # a committee's messages share their subject and sender
def _encode_header(value: str) -> str:
    """ASCII as is; anything else as RFC 2047 encoded words (folded by Header)."""
    value = " ".join(clean_text(value).split())  # no CR/LF (a smuggled header), no bidi/control
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(linesep=CRLF)


def _address(name: str, address: str) -> str:
    name = " ".join(clean_text(name).split())  # validation refuses these; this is the last guard
    if not name:
        return address
    if name.isascii():
        return formataddr((name, address))
    return f"{Header(name, 'utf-8').encode(linesep=CRLF)} <{address}>"


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii").replace("\n", CRLF)


def _text_part(text: str, subtype: str) -> str:
    return (f"Content-Type: text/{subtype}; charset=\"utf-8\"{CRLF}"
            f"Content-Transfer-Encoding: base64{CRLF}{CRLF}{_b64(text.encode('utf-8'))}")


def _attachment_part(item: Attachment) -> str:
    filename = item.filename.replace('"', "")
    disposition = (f'attachment; filename="{filename}"' if filename.isascii()
                   else f"attachment; filename*=utf-8''{_percent(filename)}")
    return (f"Content-Type: {item.content_type}; name=\"{filename}\"{CRLF}"
            f"Content-Transfer-Encoding: base64{CRLF}"
            f"Content-Disposition: {disposition}{CRLF}{CRLF}{_b64(item.data)}")


def _percent(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _multipart(subtype: str, parts: list[str]) -> str:
    boundary = "=_crisisbot_" + secrets.token_hex(12)
    body = "".join(f"--{boundary}{CRLF}{part}{CRLF}" for part in parts)
    return f"Content-Type: multipart/{subtype}; boundary=\"{boundary}\"{CRLF}{CRLF}{body}--{boundary}--{CRLF}"


def freeze(message: OutgoingEmail, sender: str) -> OutgoingEmail:
    """Serialize once, ahead of the SMTP exchange; resends reuse the very bytes (Date included)."""
    if message.raw is None:
        message.raw = to_bytes(message, sender)
    return message


def to_bytes(message: OutgoingEmail, sender: str) -> bytes:
    if message.raw is not None:
        return message.raw
    alternatives = [_text_part(message.text, "plain")]
    if message.html:
        alternatives.append(_text_part(message.html, "html"))
    body = _multipart("alternative", alternatives) if len(alternatives) > 1 else alternatives[0]
    if message.attachments:
        body = _multipart("mixed", [body, *(_attachment_part(a) for a in message.attachments)])
    headers = [
        f"From: {_encode_header(sender)}",
        f"To: {_address(message.recipient.name, message.recipient.email)}",
        f"Subject: {_encode_header(message.subject)}",
        f"Date: {formatdate(usegmt=True)}",
        *( [f"Message-ID: {message.message_id}"] if message.message_id else []),
        "MIME-Version: 1.0",
        "Auto-Submitted: auto-generated",
        *(f"{name}: {_encode_header(value)}" for name, value in message.headers.items()),
    ]
    return (CRLF.join(headers) + CRLF + body).encode("ascii")
