"""The Graph mailer against the local Graph server, through the real msgraph-sdk."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connectors.base import Services
from connectors.graph_mail import GraphMailConfig, GraphMailer
from connectors.smtp import SmtpConfig, SmtpMailer
from crisisbot.delivery import deliver
from crisisbot.models import Attachment, DeliveryResult, DeliveryStatus, OutgoingEmail, Recipient
from tests.graph_server import ORGANIZER, GraphServer

ALICE = Recipient("p1", "Alice Martin", "alice@contoso.example", "fr")
BOB = Recipient("p2", "Bob Durand", "bob@contoso.example", "fr")
SMALL = Attachment("snapshot-hall.jpg", "image/jpeg", b"\xff\xd8" + os.urandom(40_000))
LARGE = Attachment("plan-site.pdf", "application/pdf", os.urandom(5 * 1024 * 1024 + 123))


def email(recipient: Recipient = ALICE, *, key: str = "", attachments: list[Attachment] | None = None,
          html: str = "<p>Rejoignez la <b>cellule de crise</b></p>") -> OutgoingEmail:
    return OutgoingEmail(
        key=key or f"inc-42/{recipient.person_id}", recipient=recipient, subject="[CRISE] Paris HQ",
        text="Rejoignez la cellule de crise", html=html, attachments=list(attachments or []),
        headers={"X-Crisisbot-Incident": "inc-42", "Auto-Submitted": "auto-generated"},
        message_id=f"<{key or recipient.person_id}.inc-42@crisisbot>",
    )


@pytest.fixture
async def graph() -> AsyncIterator[GraphServer]:
    async with GraphServer() as server:
        yield server


@pytest.fixture
async def make_mailer(graph: GraphServer, tmp_path: Path) -> AsyncIterator[Any]:
    started: list[GraphMailer] = []

    async def make(*, use_secret: bool = False, **overrides: Any) -> GraphMailer:
        config = GraphMailConfig.model_validate(graph.connector_config("graph-mail", **overrides))
        mailer = GraphMailer("graph-mail", config, Services(data_dir=tmp_path, root=tmp_path),
                             credential=None if use_secret else graph.credential())
        await mailer.start()
        started.append(mailer)
        return mailer

    yield make
    for mailer in started:
        await mailer.stop()


async def test_send_mail_inline_with_html_body_and_attachment(graph: GraphServer, make_mailer) -> None:
    mailer = await make_mailer()

    results = await mailer.send([email(attachments=[SMALL]), email(BOB, html="")], "crisisbot <crisis@contoso.example>")

    assert [(r.key, r.address, r.status) for r in results] == [
        ("inc-42/p1", ALICE.email, DeliveryStatus.sent), ("inc-42/p2", BOB.email, DeliveryStatus.sent)]
    first = graph.graph_requests("POST", "sendMail")[0]
    assert first.path == f"/users/{ORGANIZER}/sendMail"
    assert set(first.body) == {"Message", "SaveToSentItems"}  # the SDK's PascalCase keys
    message = first.body["Message"]
    assert message["body"] == {"contentType": "html", "content": "<p>Rejoignez la <b>cellule de crise</b></p>"}
    assert message["toRecipients"] == [{"emailAddress": {"address": ALICE.email, "name": "Alice Martin"}}]
    assert message["internetMessageHeaders"] == [{"name": "X-Crisisbot-Incident", "value": "inc-42"}]
    sent = graph.mails[0]
    assert sent["attachments"][0]["name"] == "snapshot-hall.jpg" and sent["attachments"][0]["data"] == SMALL.data
    assert graph.mails[1]["message"]["body"] == {"contentType": "text", "content": "Rejoignez la cellule de crise"}
    assert not graph.drafts


async def test_large_attachment_goes_through_an_upload_session(graph: GraphServer, make_mailer) -> None:
    mailer = await make_mailer()

    (result,) = await mailer.send([email(attachments=[SMALL, LARGE])], "crisisbot")

    assert result.status is DeliveryStatus.sent
    (sent,) = graph.mails
    assert {a["name"]: a["data"] for a in sent["attachments"]} == {SMALL.filename: SMALL.data, LARGE.filename: LARGE.data}
    (upload,) = graph.uploads.values()
    assert upload.chunks == [(0, 3932159), (3932160, len(LARGE.data) - 1)]  # 12 x 320 KiB, then the rest
    puts = graph.graph_requests("PUT", "/upload/")
    assert len(puts) == 2 and all("authorization" not in p.headers for p in puts)
    session = graph.graph_requests("POST", "createUploadSession")[0].body
    item = session.get("AttachmentItem") or session["attachmentItem"]
    assert item == {"attachmentType": "file", "name": "plan-site.pdf", "size": len(LARGE.data), "contentType": "application/pdf"}
    assert not graph.graph_requests("POST", "sendMail") and not graph.drafts


async def test_large_attachment_without_mail_readwrite_names_it(graph: GraphServer, make_mailer) -> None:
    graph.roles = ["Mail.Send"]
    mailer = await make_mailer()

    (result,) = await mailer.send([email(attachments=[LARGE])], "crisisbot")

    assert result.status is DeliveryStatus.failed
    assert "Mail.ReadWrite" in result.detail and "HTTP 403" in result.detail


async def test_bad_recipient_is_rejected_and_others_still_sent(graph: GraphServer, make_mailer) -> None:
    mailer = await make_mailer()
    broken = Recipient("p3", "Typo", "carol.contoso.example", "fr")

    results = await mailer.send([email(broken), email(BOB)], "crisisbot")

    assert results[0].status is DeliveryStatus.rejected and "ErrorInvalidRecipients" in results[0].detail
    assert results[1].status is DeliveryStatus.sent


async def test_missing_permission_fails_the_batch_for_the_next_mailer(graph: GraphServer, make_mailer) -> None:
    graph.roles = ["Calendars.ReadWrite"]
    mailer = await make_mailer()

    results = await mailer.send([email(), email(BOB)], "crisisbot")

    assert [r.status for r in results] == [DeliveryStatus.failed, DeliveryStatus.failed]
    assert "permission Mail.Send" in results[0].detail and "HTTP 403 ErrorAccessDenied" in results[0].detail
    assert results[1].detail.startswith("not attempted: ")
    assert len(graph.graph_requests("POST", "sendMail")) == 1


async def test_unknown_mailbox_is_named(graph: GraphServer, make_mailer) -> None:
    mailer = await make_mailer(mailbox="ghost@contoso.example")

    (result,) = await mailer.send([email()], "crisisbot")

    assert result.status is DeliveryStatus.failed
    assert "mailbox or user 'ghost@contoso.example' not found" in result.detail and "ErrorInvalidUser" in result.detail


async def test_throttled_then_sent(graph: GraphServer, make_mailer) -> None:
    mailer = await make_mailer()
    graph.fail_next(429, retry_after=1, path="sendMail")

    began = time.monotonic()
    (result,) = await mailer.send([email()], "crisisbot")

    assert result.status is DeliveryStatus.sent and time.monotonic() - began >= 1.0  # waited Retry-After
    assert len(graph.graph_requests("POST", "sendMail")) == 2 and len(graph.mails) == 1


async def test_hang_is_a_failed_delivery(graph: GraphServer, make_mailer) -> None:
    mailer = await make_mailer(request_timeout=0.3)
    graph.hang_next(5, path="sendMail")

    (result,) = await mailer.send([email()], "crisisbot")

    assert result.status is DeliveryStatus.failed and "no answer from Graph in time" in result.detail


async def test_internet_message_id_is_the_smtp_message_id(graph: GraphServer, make_mailer) -> None:
    mailer = await make_mailer()

    await mailer.send([email(), email(attachments=[LARGE], key="inc-42/p1-large")], "crisisbot")

    assert graph.graph_requests("POST", "sendMail")[0].body["Message"]["internetMessageId"] == "<p1.inc-42@crisisbot>"
    draft = graph.graph_requests("POST", "/messages")[0].body  # the draft path carries it too
    assert draft["internetMessageId"] == "<inc-42/p1-large.inc-42@crisisbot>"
    assert [m["message"]["internetMessageId"] for m in graph.mails] == [
        "<p1.inc-42@crisisbot>", "<inc-42/p1-large.inc-42@crisisbot>"]


async def test_503_on_send_mail_is_never_resent_through_graph(graph: GraphServer, make_mailer) -> None:
    mailer = await make_mailer()
    graph.fail_next(503, path="sendMail")

    first = await mailer.send([email(), email(BOB)], "crisisbot")
    again = await mailer.send([email()], "crisisbot")  # the delivery chain asks again

    assert first[0].status is DeliveryStatus.failed and not first[0].retryable
    assert "HTTP 503" in first[0].detail and "at most once" in first[0].detail
    assert first[1].status is DeliveryStatus.sent  # the verdict of one message does not block the others
    assert again[0].status is DeliveryStatus.failed and not again[0].retryable
    to_alice = [r for r in graph.graph_requests("POST", "sendMail") if r.body["Message"]["toRecipients"][0]
                ["emailAddress"]["address"] == ALICE.email]
    assert len(to_alice) == 1  # neither kiota's retry handler nor the mailer sent it twice


async def test_429_on_send_mail_is_retried(graph: GraphServer, make_mailer) -> None:
    mailer = await make_mailer()
    graph.fail_next(429, retry_after=0, path="sendMail")

    (result,) = await mailer.send([email()], "crisisbot")

    assert result.status is DeliveryStatus.sent and len(graph.graph_requests("POST", "sendMail")) == 2


async def test_refused_credential_falls_through_to_the_next_mailer_at_once(graph: GraphServer, make_mailer,
                                                                          smtp_server, tmp_path: Path) -> None:
    mailer = await make_mailer(use_secret=True, credential={"type": "secret", "client_secret": "expired-secret"})
    relay = SmtpMailer("relay", SmtpConfig(type="smtp", host="127.0.0.1", port=smtp_server.port, security="none"),
                       Services(data_dir=tmp_path, root=tmp_path))
    await relay.start()
    await mailer.warmed()  # the background opening tried a token once already
    tokens_before = len(graph.token_requests)
    verdicts: list[DeliveryResult] = []

    async def record(result: DeliveryResult) -> None:
        verdicts.append(result)

    try:
        results = await deliver([email(), email(BOB)], [mailer, relay], sender="crisisbot <crisis@contoso.example>",
                                deadline=asyncio.get_running_loop().time() + 30, retries=3, backoff=5.0, on_result=record)
    finally:
        await relay.stop()

    assert {r.transport for r in results.values()} == {"relay"} and {r.status for r in results.values()} == {DeliveryStatus.sent}
    graph_verdicts = [v for v in verdicts if v.transport == "graph-mail"]
    assert len(graph_verdicts) == 2 and all("AADSTS7000215" in v.detail for v in graph_verdicts)
    assert len(graph.token_requests) == tokens_before + 1  # one attempt, no retry with a 5 s backoff
    assert smtp_server.handler.to(ALICE.email) and smtp_server.handler.to(BOB.email)


async def test_404_of_the_draft_is_not_blamed_on_the_mailbox(graph: GraphServer, make_mailer) -> None:
    mailer = await make_mailer()
    graph.fail_next(404, code="ErrorItemNotFound", message="The specified object was not found in the store.",
                    path="/send")

    (result,) = await mailer.send([email(attachments=[LARGE])], "crisisbot")

    assert result.status is DeliveryStatus.failed
    assert "draft AAMkDraft" in result.detail and "not found" in result.detail and "mailbox" not in result.detail
