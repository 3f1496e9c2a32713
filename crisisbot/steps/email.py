"""Email each member of the named groups a personal message, at least once.

Every message has an idempotency key (incident, step, person) and a Message-ID
derived from it. Its verdict is committed right after the server's answer, so a
restart resends only what no server confirmed — plus, after a crash, at most the
message in flight on each open session, with the same Message-ID. What is not
delivered by the step deadline goes on in the background (crisisbot.notify);
when fewer people than `require` were reached, the mail.fallback people are told.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from connectors.base import Mailer
from crisisbot.config.types import Identifier, Reference
from crisisbot import outgoing
from crisisbot.delivery import FINAL, VerdictJournal, deliver
from crisisbot.executors import PoolFull
from crisisbot.imaging import EmailImages
from crisisbot.lifecycle import acks as links  # personal signed links
from crisisbot.mime import freeze
from crisisbot.models import (
    Attachment,
    DeliveryResult,
    DeliveryStatus,
    Meeting,
    OutgoingEmail,
    Recipient,
)
from crisisbot.steps.base import StepContext, StepFailed, StepSpec, StepType
from crisisbot.steps.snapshot import SnapshotSet
from crisisbot.notify import Notify, Shortfall
from crisisbot.store.base import DeliveryRecord, SpooledMessage
from crisisbot.web.liveview import liveview_link


class EmailStep(StepSpec):
    consumes = True

    action: Literal["email"]
    to: Annotated[list[Identifier], Reference("contacts")] = Field(min_length=1, description="contact groups or people")
    template: Annotated[Identifier, Reference("templates")] = Field(description="directory under templates/")
    attach: Annotated[list[Identifier] | None, Reference("steps", of="snapshot")] = Field(
        None, description="snapshot step ids whose images to attach (default: all)"
    )
    via: Annotated[list[Identifier] | None, Reference("connectors", of="mail")] = Field(
        None, description="mail connectors (default: mail.via)")
    max_attachment_bytes: int = Field(10_000_000, ge=0, description="total image budget per email")
    require: Literal["any", "all"] | Annotated[int, Field(ge=1)] = Field(
        "any", description="how many people must be reached; fewer raises the mail.fallback meta-alert"
    )


class Delivered(BaseModel):
    """Who the step reached, as the journal keeps it (lifecycle/outcome.py judges by it)."""

    recipients: int
    reached: int
    required: int
    sent: int
    rejected: list[str]
    retrying: list[str]
    failed: list[str]
    resumed: bool = False


RENDER_CHUNK = 5
LIVEVIEW_TTL = 86400.0


def _liveview_url(runtime: Any, incident_id: str, person: Recipient) -> str | None:
    """Personal live-view link (blurred for external people), when the web server is public."""
    base = links.public_url(runtime)
    if base is None or getattr(runtime, "services", None) is None:
        return None
    return liveview_link(links.signer_of(runtime), base, incident_id, person, ttl=LIVEVIEW_TTL)


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


def required(rule: str | int, total: int) -> int:
    """How many people a step must reach: `any` (one), `all`, or a number (at most everyone)."""
    if rule == "any":
        return min(1, total)
    if rule == "all":
        return total
    return min(int(rule), total)


def _notify(runtime: Any) -> Notify | None:
    return getattr(runtime, "notify", None)


async def run(spec: EmailStep, ctx: StepContext) -> dict[str, Any]:
    runtime = ctx.runtime
    store = runtime.store
    step_id = spec.id or "email"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (spec.timeout or runtime.bundle.config.incidents.step_timeout)  # rendering counts too
    recipients = runtime.recipients(spec.to)
    done = await store.get_deliveries(ctx.incident.id, step_id)
    previous = {r.person_id: done.get(delivery_key(ctx.incident.id, step_id, r.person_id)) for r in recipients}
    # a message still in flight at a crash (sending) or between attempts (pending) is sent again,
    # with the same Message-ID; one already handed to the background (retrying) stays there
    todo = [r for r in recipients
            if (rec := previous[r.person_id]) is None or rec.status in (DeliveryStatus.pending, DeliveryStatus.sending)]
    earlier = [rec for rec in previous.values() if rec is not None and rec.status not in (
        DeliveryStatus.pending, DeliveryStatus.sending)]
    if earlier:
        ctx.log.info("%d recipient(s) already handled before a restart; not sending again", len(earlier))

    mail = runtime.bundle.config.mail
    channels = list(spec.via or mail.via)
    notify = _notify(runtime)
    journal = notify.journal if notify is not None else VerdictJournal(store)
    results: dict[str, DeliveryResult] = {}
    messages: list[OutgoingEmail] = []
    if todo:
        people = {delivery_key(ctx.incident.id, step_id, r.person_id): r for r in todo}
        attempts: dict[str, int] = {k: (done[k].attempts if k in done else 0) for k in people}

        def record(key: str, status: DeliveryStatus, detail: str = "", transport: str = "") -> DeliveryRecord:
            person = people[key]
            return DeliveryRecord(key, ctx.incident.id, step_id, person.person_id, person.email,
                                  status, detail, transport, attempts[key])

        first = channels[0] if channels else ""
        # "sending" is on disk before any DATA; its commit overlaps with the rendering
        announced = asyncio.create_task(journal.write(
            [record(k, DeliveryStatus.sending, f"handed to {first}", first) for k in people]))
        try:
            messages = await _render(spec, ctx, todo, channels, mail.sender)
        finally:
            await announced

        async def on_attempt(batch: list[OutgoingEmail], mailer: Mailer) -> None:
            if mailer.name == first and all(attempts[m.key] == (done[m.key].attempts if m.key in done else 0)
                                            for m in batch):
                return  # the first attempt, announced above
            await journal.write([record(m.key, DeliveryStatus.sending, f"handed to {mailer.name}", mailer.name)
                                 for m in batch])

        async def on_result(result: DeliveryResult) -> None:
            attempts[result.key] += 1
            status = result.status if result.status in FINAL else DeliveryStatus.pending
            await journal.write([record(result.key, status, result.detail, result.transport)])

        mailers = [m for m in (runtime.connectors.get(n) for n in channels) if isinstance(m, Mailer)]
        results = await deliver(
            messages, mailers, sender=mail.sender, deadline=deadline,
            retries=mail.retries, backoff=mail.backoff, on_result=on_result, on_attempt=on_attempt,
        )
        await journal.flush()
        undelivered = [m for m in messages if m.key not in results or results[m.key].status not in FINAL]
        if undelivered:
            why = {m.key: (results[m.key].detail if m.key in results else "no transport took it") for m in undelivered}
            handed = [record(m.key, DeliveryStatus.retrying, f"{why[m.key]}; retrying in the background")
                      for m in undelivered]
            if notify is not None:
                await notify.hand_over(ctx.incident.id, step_id, mail.sender, channels, undelivered, handed)
            else:  # no daemon around (a one-shot command): the spool waits for the next start
                await store.spool([SpooledMessage(m.key, ctx.incident.id, step_id, mail.sender, channels,
                                                  outgoing.encode(m)) for m in undelivered], handed)
    statuses = {rec.key: rec.status for rec in earlier}
    statuses.update({m.key: (results[m.key].status if m.key in results and results[m.key].status in FINAL
                             else DeliveryStatus.retrying) for m in messages})
    address = {delivery_key(ctx.incident.id, step_id, r.person_id): r.email for r in recipients}
    by_status = {status: sorted(address[k] for k, v in statuses.items() if v is status and k in address)
                 for status in DeliveryStatus}
    reached = len(by_status[DeliveryStatus.sent])
    needed = required(spec.require, len(recipients))
    summary = {"recipients": len(recipients), "reached": reached, "required": needed,
               "sent": reached, "rejected": by_status[DeliveryStatus.rejected],
               "retrying": by_status[DeliveryStatus.retrying], "failed": by_status[DeliveryStatus.failed],
               "resumed": bool(earlier)}
    if reached >= needed:
        return summary
    if notify is not None:
        await notify.note_shortfall(Shortfall(ctx.incident.id, step_id, needed, reached, len(recipients)))
    # the meta-alert's own budget: the committee's attempts may have used the whole deadline
    # (the step's outer guard leaves half a deadline more)
    alerted = await meta_alert(ctx, step_id, summary, 0.4 * (spec.timeout or runtime.bundle.config.incidents.step_timeout))
    raise StepFailed(
        f"reached {reached} of {len(recipients)} ({needed} required): {len(summary['rejected'])} rejected, "
        f"{len(summary['retrying'])} retrying in the background; {alerted}"
    )


def _frozen(spec: EmailStep, ctx: StepContext, recipients: list[Recipient], images: EmailImages,
            fallbacks: list[str], sender: str) -> list[OutgoingEmail]:
    """Render and serialize some messages (on the rendering pool: CPU work, off the loop)."""
    return [freeze(m, sender) for m in build_messages(spec, ctx, recipients, images, fallbacks)]


async def _render(spec: EmailStep, ctx: StepContext, todo: list[Recipient], channels: list[str],
                  sender: str) -> list[OutgoingEmail]:
    """Render and serialize every message before the first DATA (while the sessions connect)."""
    runtime = ctx.runtime
    mailers = [m for m in (runtime.connectors.get(n) for n in channels) if isinstance(m, Mailer)]
    if mailers:
        mailers[0].prepare(len(todo))  # connect while we render
    images = email_images(spec, ctx)
    for external in sorted({person.external for person in todo}) if images.snapshots else ():
        await asyncio.to_thread(images.for_recipient, external)  # resize/blur off the event loop
    messages: list[OutgoingEmail] = []
    fallbacks: list[str] = []
    rendering = runtime.executors.rendering if hasattr(runtime, "executors") else None
    for start in range(0, len(todo), RENDER_CHUNK):
        chunk = todo[start:start + RENDER_CHUNK]
        try:  # off the event loop, on the rendering pool (time budget and cap: render_limits.py)
            if rendering is None:
                raise PoolFull("no pool")
            messages += await rendering.run(_frozen, spec, ctx, chunk, images, fallbacks, sender)
        except PoolFull:  # hundreds of incidents rendering at once: render here rather than wait
            messages += _frozen(spec, ctx, chunk, images, fallbacks, sender)
            await asyncio.sleep(0)  # let the connections progress between chunks
    for why in fallbacks:  # the message still goes out (built-in text); the failure is not silent
        await runtime.store.audit("template.fallback", ctx.incident.id,
                                  {"step": spec.id or "email", "template": spec.template, "error": why})
    return messages


async def meta_alert(ctx: StepContext, step_id: str, summary: dict[str, Any], budget: float) -> str:
    """Tell the configured fallback people, through their own path, that the committee was not reached."""
    runtime = ctx.runtime
    mail = runtime.bundle.config.mail
    fallback = mail.fallback
    incident = ctx.incident
    detail = {"step": step_id, "reached": summary["reached"], "required": summary["required"],
              "recipients": summary["recipients"], "rejected": summary["rejected"], "retrying": summary["retrying"]}
    if fallback is None:
        await runtime.store.audit("delivery.meta_alert_unconfigured", incident.id, detail)
        ctx.log.error("incident %s: step %s reached %d of %d people and no mail.fallback is configured",
                      incident.id, step_id, summary["reached"], summary["recipients"])
        return "no mail.fallback configured for a meta-alert"
    fallback_step = f"{step_id}-fallback"
    people = runtime.recipients(fallback.to)
    done = await runtime.store.get_deliveries(incident.id, fallback_step)
    todo = [p for p in people if (rec := done.get(delivery_key(incident.id, fallback_step, p.person_id))) is None
            or rec.status in (DeliveryStatus.pending, DeliveryStatus.sending)]
    messages = [freeze(_meta_message(ctx, fallback_step, person, summary), mail.sender) for person in todo]
    await runtime.store.audit("delivery.meta_alert", incident.id, {**detail, "to": [p.email for p in people],
                                                                    "via": list(fallback.via)})
    notify = _notify(runtime)
    journal = notify.journal if notify is not None else VerdictJournal(runtime.store)
    by_key = {m.key: m for m in messages}
    attempts = {m.key: 0 for m in messages}

    def record(key: str, status: DeliveryStatus, text: str, transport: str) -> DeliveryRecord:
        m = by_key[key]
        return DeliveryRecord(key, incident.id, fallback_step, m.recipient.person_id, m.recipient.email,
                              status, text, transport, attempts[key])

    async def on_result(result: DeliveryResult) -> None:
        attempts[result.key] += 1
        status = result.status if result.status in FINAL else DeliveryStatus.pending
        await journal.write([record(result.key, status, result.detail, result.transport)])

    mailers = [m for m in (runtime.connectors.get(n) for n in fallback.via) if isinstance(m, Mailer)]
    results = await deliver(messages, mailers, sender=mail.sender, deadline=asyncio.get_running_loop().time() + budget,
                            retries=mail.retries, backoff=mail.backoff, on_result=on_result)
    await journal.flush()
    undelivered = [m for m in messages if m.key not in results or results[m.key].status not in FINAL]
    if undelivered:
        handed = [record(m.key, DeliveryStatus.retrying, "meta-alert not delivered yet; retrying in the background", "")
                  for m in undelivered]
        if notify is not None:
            await notify.hand_over(incident.id, fallback_step, mail.sender, list(fallback.via), undelivered, handed)
        else:
            await runtime.store.spool([SpooledMessage(m.key, incident.id, fallback_step, mail.sender,
                                                      list(fallback.via), outgoing.encode(m)) for m in undelivered],
                                      handed)
    sent = sum(1 for r in results.values() if r.status is DeliveryStatus.sent)
    return f"meta-alert sent to {sent} of {len(people)} fallback recipient(s)" + (
        f", {len(undelivered)} retrying" if undelivered else "")


def _meta_message(ctx: StepContext, step_id: str, person: Recipient, summary: dict[str, Any]) -> OutgoingEmail:
    """A built-in plain message: it must go out even when templates are the problem."""
    incident = ctx.incident
    base = ctx.template_context()
    french = ctx.runtime.bundle.config.organization.language == "fr"
    if french:
        subject = f"[crisisbot] ALERTE NON TRANSMISE : {incident.title}"
        lines = [f"La cellule de crise n'a pas pu être jointe pour l'incident « {incident.title} ».",
                 f"Site : {base['site_name']}",
                 f"Ouvert le : {incident.opened_at.isoformat(timespec='seconds')}",
                 f"Personnes jointes : {summary['reached']} sur {summary['recipients']} "
                 f"({summary['required']} requises)",
                 f"Refusées : {', '.join(summary['rejected']) or '-'}",
                 f"En attente (nouvel essai en continu) : {', '.join(summary['retrying']) or '-'}"]
        if base["join_url"]:
            lines.append(f"Réunion de crise : {base['join_url']}")
        lines.append("Prévenez ces personnes par un autre moyen.")
    else:
        subject = f"[crisisbot] ALERT NOT DELIVERED: {incident.title}"
        lines = [f"The crisis committee could not be reached for incident '{incident.title}'.",
                 f"Site: {base['site_name']}",
                 f"Opened: {incident.opened_at.isoformat(timespec='seconds')}",
                 f"People reached: {summary['reached']} of {summary['recipients']} ({summary['required']} required)",
                 f"Refused: {', '.join(summary['rejected']) or '-'}",
                 f"Waiting (retried continuously): {', '.join(summary['retrying']) or '-'}"]
        if base["join_url"]:
            lines.append(f"Crisis meeting: {base['join_url']}")
        lines.append("Reach these people another way.")
    if incident.drill:
        subject = ("[EXERCICE] " if french else "[DRILL] ") + subject
    key = delivery_key(incident.id, step_id, person.person_id)
    return OutgoingEmail(key=key, recipient=person, subject=subject, text="\n".join(lines) + "\n", html="",
                         message_id=message_id(key), headers={"X-Crisisbot-Incident": incident.id})


async def run_step(ctx: StepContext, spec: EmailStep) -> Delivered:
    """The plugin's entry: `run` keeps its (spec, ctx) order for the lifecycle's callers."""
    return Delivered.model_validate(await run(spec, ctx))


STEP = StepType(EmailStep, run_step, Delivered)
