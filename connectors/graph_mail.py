"""Send the committee's personal emails through Microsoft Graph instead of SMTP.

One Graph message per `OutgoingEmail`, sent from the configured mailbox. Messages
whose attachments stay under the inline limit go out with a single `sendMail`
(Mail.Send). Bigger ones need a draft: create it, add small attachments directly and
upload each large one (3-150 MB) through an upload session in chunks, then `send`
(Mail.ReadWrite as well). Graph takes one body: the HTML one when there is one.

Results follow the delivery chain's rules: `rejected` (final) only when Graph refuses
the message itself (bad recipient address, malformed message); a mailbox, permission
or credential problem is `failed`, so the next mailer of `mail.via` takes over - at
once, without retrying Graph, when the directory refused the credential (AADSTS).

At most once per message key: each message carries `internetMessageId` (the same
Message-ID SMTP would use, so a resend after a crash can be de-duplicated), sendMail and
send are retried by the SDK only on 429 (Graph did not process the request), and a
503/504/cut connection after the request went out leaves the verdict unknown: that key is
never sent through Graph again by this mailer; the next mailer carries it, same Message-ID.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import Field

from connectors.base import Mailer
from connectors.graph_client import CredentialRefused, GraphConnector, GraphSettings, graph_errors, sdk_models
from crisisbot.errors import ConnectorError, PermanentError, TransientError, VerdictUnknown
from crisisbot.models import Attachment, DeliveryResult, DeliveryStatus, OutgoingEmail

if TYPE_CHECKING:
    from connectors import graph_models as m
    from connectors.graph_sdk import GraphConnection
else:
    m = sdk_models  # msgraph's models, imported on first use (see connectors/graph_client.py)

CHUNK_UNIT = 320 * 1024  # upload chunks must be multiples of 320 KiB
SEND_PERMISSION = "Mail.Send"
DRAFT_PERMISSION = "Mail.ReadWrite (needed for attachments over the inline limit)"


class GraphMailConfig(GraphSettings):
    type: Literal["graph-mail"]
    mailbox: str = Field(description="UPN/mail of the mailbox the messages are sent from")
    save_to_sent_items: bool = True
    inline_limit: int = Field(
        3 * 1024 * 1024, gt=0, le=3 * 1024 * 1024,
        description="bytes; a message whose attachments reach this size goes through a draft + upload session",
    )
    upload_chunk: int = Field(12 * CHUNK_UNIT, ge=CHUNK_UNIT, le=4 * 1024 * 1024, multiple_of=CHUNK_UNIT,
                              description="bytes per PUT of an upload session (multiple of 320 KiB, at most 4 MiB)")

    def required_permissions(self) -> list[str]:
        """Mail.ReadWrite is optional: only messages with attachments over the inline limit
        need it (draft + upload session); without it they fall through to the next mailer."""
        return [SEND_PERMISSION]

    def optional_permissions(self) -> dict[str, str]:
        return {"Mail.ReadWrite": "messages whose attachments reach 3 MB (draft + upload session)"}


class GraphMailer(GraphConnector, Mailer):
    """Delivers each message with its own Graph call; one result per message."""

    Config = GraphMailConfig
    config: GraphMailConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unknown: dict[str, str] = {}  # message key -> why its verdict is unknown (never resent here)
        self._conn: GraphConnection  # set by send() once the background opening is over

    async def send(self, messages: list[OutgoingEmail], sender: str) -> list[DeliveryResult]:
        try:
            graph = await self.graph()  # waits for the background opening after a start
        except ConnectorError as exc:
            return [DeliveryResult(e.key, e.recipient.email, DeliveryStatus.failed, str(exc), self.name,
                                   retryable=not isinstance(exc, CredentialRefused)) for e in messages]
        self._conn = graph
        results: list[DeliveryResult] = []
        blocked: DeliveryResult | None = None  # a failure that is not about one message stops the batch
        for email in messages:
            address = email.recipient.email
            if blocked is not None:
                results.append(DeliveryResult(email.key, address, blocked.status, f"not attempted: {blocked.detail}",
                                              self.name, retryable=blocked.retryable))
                continue
            if email.key in self._unknown:
                results.append(DeliveryResult(email.key, address, DeliveryStatus.failed, self._unknown[email.key],
                                              self.name, retryable=False))
                continue
            try:
                await self._send_one(email)
            except ConnectorError as exc:
                status = DeliveryStatus.rejected if _about_this_message(exc) else DeliveryStatus.failed
                retryable = not isinstance(exc, CredentialRefused)
                detail = str(exc)
                if isinstance(exc, VerdictUnknown):
                    detail = (f"{exc}; Graph may have sent it: not resent through Graph (at most once), "
                              f"the next mailer sends it with the same m.Message-ID")
                    self._unknown[email.key] = detail
                    retryable = False
                result = DeliveryResult(email.key, address, status, detail, self.name, retryable=retryable)
                self.log.warning("graph mail to %s %s: %s", address, status.value, exc)
                if status is DeliveryStatus.failed and not _draft_permission(exc) and email.key not in self._unknown:
                    blocked = result
                results.append(result)
            else:
                results.append(DeliveryResult(email.key, address, DeliveryStatus.sent, "accepted by Graph", self.name))
        return results

    async def _send_one(self, email: OutgoingEmail) -> None:
        # Graph's limit is on the request: base64 grows attachments by 4/3, the body comes on top
        total = sum(4 * -(-len(a.data) // 3) for a in email.attachments) + len(email.html.encode()) + len(email.text.encode())
        if total < self.config.inline_limit:
            body = m.SendMailPostRequestBody(
                message=self._message(email, email.attachments), save_to_sent_items=self.config.save_to_sent_items
            )
            with _sending(), graph_errors(f"send mail to {email.recipient.email}", permission=SEND_PERMISSION,
                                          mailbox=self.config.mailbox):
                await self._user.send_mail.post(body, self._at_most_once())
            return
        await self._send_with_draft(email)

    def _at_most_once(self) -> m.RequestConfiguration[Any]:
        """Request options for a POST that sends: the SDK retries it on 429 only."""
        config: m.RequestConfiguration[Any] = m.RequestConfiguration()
        config.options = [self._conn.at_most_once]
        return config

    @property
    def _user(self) -> Any:
        return self._conn.client.users.by_user_id(self.config.mailbox)

    async def _send_with_draft(self, email: OutgoingEmail) -> None:
        action = f"send mail with large attachments to {email.recipient.email}"
        with graph_errors(action, permission=DRAFT_PERMISSION, mailbox=self.config.mailbox):
            draft = await self._user.messages.post(self._message(email, []))
        if draft is None or not draft.id:
            raise TransientError(f"{action}: Graph returned no draft id")
        item = self._user.messages.by_message_id(draft.id)
        try:
            for attachment in email.attachments:
                if len(attachment.data) < self.config.inline_limit:
                    with graph_errors(f"{action}: attach {attachment.filename}", permission=DRAFT_PERMISSION,
                                      resource=f"draft {draft.id}",
                                      mailbox=self.config.mailbox):
                        await item.attachments.post(_file(attachment))
                else:
                    await self._upload(item, attachment, action)
            with _sending(), graph_errors(action, permission=SEND_PERMISSION, mailbox=self.config.mailbox,
                                          resource=f"draft {draft.id}"):
                await item.send.post(self._at_most_once())
        except Exception as exc:
            if not isinstance(exc, VerdictUnknown):  # the draft may be the message on its way: leave it
                await self._discard(item)
            raise

    async def _upload(self, item: Any, attachment: Attachment, action: str) -> None:
        body = m.CreateUploadSessionPostRequestBody(attachment_item=m.AttachmentItem(
            attachment_type=m.AttachmentType.File, name=attachment.filename, size=len(attachment.data),
            content_type=attachment.content_type,
        ))
        with graph_errors(f"{action}: upload session for {attachment.filename}", permission=DRAFT_PERMISSION,
                          resource="draft",
                          mailbox=self.config.mailbox):
            session = await item.attachments.create_upload_session.post(body)
        if session is None or not session.upload_url:
            raise TransientError(f"{action}: Graph returned no upload URL")
        data, size, step = attachment.data, len(attachment.data), self.config.upload_chunk
        for first in range(0, size, step):
            chunk = data[first:first + step]
            headers = {"Content-Range": f"bytes {first}-{first + len(chunk) - 1}/{size}",
                       "Content-Type": "application/octet-stream"}
            try:  # the upload URL carries its own token: no bearer header, and never quoted in errors
                response = await self._conn.raw.put(session.upload_url, content=chunk, headers=headers)
            except httpx.TimeoutException:
                raise TransientError(f"{action}: upload of {attachment.filename} timed out") from None
            except httpx.TransportError as exc:
                raise TransientError(f"{action}: upload of {attachment.filename} failed ({type(exc).__name__})") from None
            if response.status_code in (429, 503, 504) or response.status_code >= 500:
                wait = response.headers.get("retry-after")
                raise TransientError(f"{action}: upload of {attachment.filename}: HTTP {response.status_code}",
                                     retry_after=float(wait) if wait and wait.isdigit() else None)
            if response.status_code >= 400:
                raise PermanentError(f"{action}: upload of {attachment.filename} refused: HTTP {response.status_code} "
                                     f"{response.text[:200]}")

    async def _discard(self, item: Any) -> None:
        """Best effort: a half-built draft must not linger in the mailbox."""
        try:
            await item.delete()
        except Exception as exc:  # noqa: BLE001 - the original error is what matters to the caller
            self.log.warning("could not delete an unsent draft: %s", type(exc).__name__)

    def _message(self, email: OutgoingEmail, attachments: list[Attachment]) -> m.Message:
        html = bool(email.html.strip())
        headers = [m.InternetMessageHeader(name=k, value=v) for k, v in email.headers.items() if k.lower().startswith("x-")]
        message = m.Message(
            subject=email.subject,
            body=m.ItemBody(content_type=m.BodyType.Html if html else m.BodyType.Text, content=email.html if html else email.text),
            to_recipients=[m.Recipient(email_address=m.EmailAddress(address=email.recipient.email, name=email.recipient.name))],
        )
        # only fields that have a value: one assigned None would be sent as null (msgraph-sdk-python #440)
        if attachments:
            message.attachments = [_file(a) for a in attachments]
        if headers:
            message.internet_message_headers = headers
        if email.message_id:
            message.internet_message_id = email.message_id
        return message


def _file(attachment: Attachment) -> m.FileAttachment:
    return m.FileAttachment(name=attachment.filename, content_type=attachment.content_type, content_bytes=attachment.data)


@contextmanager
def _sending() -> Iterator[None]:
    """Around a POST that sends (outside graph_errors): marks the errors whose verdict is unknown."""
    try:
        yield
    except ConnectorError as exc:
        cause = exc.__cause__
        unknown = (cause.response_status_code in (503, 504) if isinstance(cause, m.APIError)
                   else isinstance(cause, (httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError)))
        if unknown:
            raise VerdictUnknown(str(exc), retry_after=getattr(exc, "retry_after", None)) from cause
        raise


def _draft_permission(exc: ConnectorError) -> bool:
    """403 on the draft path (no Mail.ReadWrite): only messages with large attachments are affected."""
    cause = exc.__cause__
    return isinstance(cause, m.APIError) and cause.response_status_code == 403 and "Mail.ReadWrite" in str(exc)


def _about_this_message(exc: ConnectorError) -> bool:
    """Graph refused this message (400), as opposed to the mailbox, app or service. A 413
    (too large) is not final: another mailer (SMTP) may still carry it."""
    cause = exc.__cause__
    return isinstance(exc, PermanentError) and isinstance(cause, m.APIError) and cause.response_status_code == 400
