"""Email each member of the named groups a personal message, exactly once.

Every message has an idempotency key (incident, step, person), and the
transport's verdict for it is committed as soon as it arrives, so a restart
resends only what no server confirmed.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Literal

from pydantic import Field

from connectors.base import Mailer
from crisisbot.config.types import Identifier
from crisisbot.delivery import FINAL, deliver
from crisisbot.imaging import EmailImages
from crisisbot.lifecycle import acks as links  # personal signed links
from crisisbot.models import (
    Attachment,
    DeliveryResult,
    DeliveryStatus,
    Meeting,
    OutgoingEmail,
    Recipient,
)
from crisisbot.steps.base import StepContext, StepFailed, StepSpec
from crisisbot.steps.snapshot import SnapshotSet
from crisisbot.store.base import DeliveryRecord
from crisisbot.web.liveview import liveview_link


class EmailStep(StepSpec):
    consumes = True

    action: Literal["email"]
    to: list[Identifier] = Field(min_length=1, description="contact groups or people")
    template: Identifier = Field(description="directory under templates/")
    attach: list[Identifier] | None = Field(
        None, description="snapshot step ids whose images to attach (default: all)"
    )
    via: list[Identifier] | None = Field(None, description="mail connectors (default: mail.via)")
    max_attachment_bytes: int = Field(10_000_000, ge=0, description="total image budget per email")


RENDER_CHUNK = 5
LIVEVIEW_TTL = 86400.0


def _liveview_url(runtime: Any, incident_id: str, person: Recipient) -> str | None:
    """Personal live-view link (blurred for external people), when the web server is public."""
    base = links.public_url(runtime)
    if base is None or getattr(runtime, "services", None) is None:
        return None
    return liveview_link(links.signer_of(runtime), base, incident_id, person, ttl=LIVEVIEW_TTL)


class _GroupCommit:
    """Commit verdicts as they arrive without making the SMTP sessions wait.

    A verdict is on disk a commit's duration after the server accepted the
    message; verdicts arriving meanwhile share the next commit. Blocking the
    sender on each commit would not shorten that window, only slow every alert.
    """

    def __init__(self, store) -> None:
        self.store = store
        self.pending: list[DeliveryRecord] = []
        self.task: asyncio.Task[None] | None = None

    def add(self, record: DeliveryRecord) -> None:
        self.pending.append(record)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            await self.store.save_deliveries(batch)

    async def flush(self) -> None:
        while self.task is not None and not self.task.done():
            await self.task
        if self.pending:
            await self._drain()


def delivery_key(incident_id: str, step_id: str, person_id: str) -> str:
    return f"{incident_id}:{step_id}:{person_id}"


def message_id(key: str) -> str:
    """Stable Message-ID: a resend after a crash carries the same id, which clients de-duplicate."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@crisisbot>"


def _snapshot_sets(spec: EmailStep, ctx: StepContext) -> list[SnapshotSet]:
    return [
        out for step_id, out in ctx.outputs.items()
        if isinstance(out, SnapshotSet) and (spec.attach is None or step_id in spec.attach)
    ]


def email_images(spec: EmailStep, ctx: StepContext) -> EmailImages:
    """The snapshots to attach, sized once per variant (internal, external/blurred)."""
    snapshots = [s for group in _snapshot_sets(spec, ctx) for s in group.snapshots]
    return EmailImages(snapshots, spec.max_attachment_bytes)


def build_messages(spec: EmailStep, ctx: StepContext, recipients: list[Recipient],
                   images: EmailImages | None = None, fallbacks: list[str] | None = None) -> list[OutgoingEmail]:
    """Render each recipient's message; pass `images` prepared off the event loop
    (`run` does) or they are sized here, synchronously (`simulate` does). Why a
    template failed (and the built-in message went instead) is added to `fallbacks`."""
    runtime = ctx.runtime
    images = images or email_images(spec, ctx)
    base = ctx.template_context()
    sets = _snapshot_sets(spec, ctx)
    failures = {name: why for group in sets for name, why in group.failures.items()}
    meeting: Meeting | None = base["meeting"]
    meeting_failed = any(
        step.action == "meeting" and step.id not in ctx.outputs for step in ctx.playbook.steps
    )
    messages = []
    for person in recipients:
        language = runtime.templates.pick_language(
            spec.template,
            [person.language, ctx.playbook.language, ctx.site.language if ctx.site else None,
             runtime.bundle.config.organization.language],
        )
        context: dict[str, Any] = {
            **base, "recipient": person, "language": language,
            "camera_failures": failures, "meeting_failed": meeting_failed and meeting is None,
            "ack_url": links.ack_url(runtime, ctx.incident.id, person.person_id),
            "stand_down_url": links.stand_down_url(runtime, ctx.incident.id, person.person_id),
            "liveview_url": _liveview_url(runtime, ctx.incident.id, person) if images.snapshots else None,
        }
        rendered = runtime.templates.render(spec.template, language, context)
        if rendered.fallback and fallbacks is not None and rendered.fallback not in fallbacks:
            fallbacks.append(rendered.fallback)
        attachments = images.for_recipient(person.external)
        if meeting is not None and meeting.ics:
            attachments.append(Attachment("invite.ics", "text/calendar; method=REQUEST", meeting.ics))
        key = delivery_key(ctx.incident.id, spec.id or "email", person.person_id)
        subject = rendered.subject
        if ctx.incident.drill and not subject.startswith(("[EXERCICE]", "[DRILL]")):  # also before [CRISE]
            subject = ("[EXERCICE] " if language == "fr" else "[DRILL] ") + subject
        messages.append(OutgoingEmail(
            key=key, recipient=person, subject=subject, text=rendered.text, html=rendered.html,
            attachments=attachments, message_id=message_id(key),
            headers={"X-Crisisbot-Incident": ctx.incident.id},
        ))
    return messages


async def run(spec: EmailStep, ctx: StepContext) -> dict[str, Any]:
    runtime = ctx.runtime
    store = runtime.store
    step_id = spec.id or "email"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (spec.timeout or runtime.bundle.config.incidents.step_timeout)  # rendering counts too
    recipients = runtime.recipients(spec.to)
    done = await store.get_deliveries(ctx.incident.id, step_id)
    todo = [
        r for r in recipients
        if (rec := done.get(delivery_key(ctx.incident.id, step_id, r.person_id))) is None
        or rec.status not in FINAL
    ]
    skipped = len(recipients) - len(todo)
    if skipped:
        ctx.log.info("%d recipient(s) already served before a restart; not sending again", skipped)
    if not todo:
        return {"recipients": len(recipients), "sent": skipped, "resumed": True}

    mailers = [runtime.connectors[n] for n in (spec.via or runtime.bundle.config.mail.via)]
    mailers = [m for m in mailers if isinstance(m, Mailer)]
    if mailers:
        mailers[0].prepare(len(todo))  # connect while we render
    images = email_images(spec, ctx)
    for external in sorted({person.external for person in todo}) if images.snapshots else ():
        await asyncio.to_thread(images.for_recipient, external)  # resize/blur off the event loop
    messages: list[OutgoingEmail] = []
    fallbacks: list[str] = []
    for start in range(0, len(todo), RENDER_CHUNK):
        messages += build_messages(spec, ctx, todo[start:start + RENDER_CHUNK], images, fallbacks)
        await asyncio.sleep(0)  # let the connections progress between chunks
    for why in fallbacks:  # the message still goes out (built-in text); the failure is not silent
        await store.audit("template.fallback", ctx.incident.id, {"step": step_id, "template": spec.template, "error": why})
    attempts: dict[str, int] = {k: (done[k].attempts if k in done else 0) for k in (m.key for m in messages)}
    by_key = {m.key: m for m in messages}

    def record(key: str, status: DeliveryStatus, detail: str = "", transport: str = "") -> DeliveryRecord:
        m = by_key[key]
        return DeliveryRecord(key, ctx.incident.id, step_id, m.recipient.person_id, m.recipient.email,
                              status, detail, transport, attempts[key])

    recorder = _GroupCommit(store)

    async def on_result(result: DeliveryResult) -> None:
        attempts[result.key] += 1
        recorder.add(record(result.key, result.status, result.detail, result.transport))

    mail = runtime.bundle.config.mail
    results = await deliver(
        messages, mailers, sender=mail.sender, deadline=deadline,
        retries=mail.retries, backoff=mail.backoff, on_result=on_result,
    )
    await recorder.flush()
    sent = sum(1 for r in results.values() if r.status is DeliveryStatus.sent) + skipped
    rejected = [r.address for r in results.values() if r.status is DeliveryStatus.rejected]
    failed = [m.recipient.email for m in messages if results.get(m.key) is None or results[m.key].status not in FINAL]
    if failed:
        await store.save_deliveries(
            [record(m.key, DeliveryStatus.failed, "not delivered before the deadline", "")
             for m in messages if m.recipient.email in failed and m.key not in results],
        )
    summary = {"recipients": len(recipients), "sent": sent, "rejected": rejected, "failed": failed}
    if sent == 0:
        raise StepFailed(f"no message could be delivered ({len(rejected)} rejected, {len(failed)} failed)")
    return summary
