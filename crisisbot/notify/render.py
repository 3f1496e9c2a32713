"""Render one message per person: language, personal links, images, drill marking.

Pure work (no I/O): the service runs it on the rendering pool, `simulate` and the
template pre-flight call it directly with dry step services (no keys, hence no links).
Templates, settings and links come from the message context's `services`.
"""

from __future__ import annotations

from typing import Any

from crisisbot.imaging import EmailImages
from crisisbot.models import Attachment, Meeting, OutgoingEmail, Recipient
from crisisbot.notify.keys import delivery_key, message_id
from crisisbot.notify.request import ImageOutput, MessageContext, Request


def image_outputs(request: Request) -> list[ImageOutput]:
    """The outputs whose images go along: those named in `attach`, or all of them."""
    return [out for step_id, out in request.context.outputs.items()
            if isinstance(out, ImageOutput) and (request.attach is None or step_id in request.attach)]


def images_of(request: Request) -> EmailImages:
    """The snapshots to attach, sized once per variant (internal, external/blurred)."""
    snapshots = [s for group in image_outputs(request) for s in group.snapshots]
    return EmailImages(snapshots, request.max_attachment_bytes)


def drill_marked(subject: str, drill: bool, language: str) -> str:
    if drill and not subject.startswith(("[EXERCICE]", "[DRILL]")):  # also before [CRISE]
        return ("[EXERCICE] " if language == "fr" else "[DRILL] ") + subject
    return subject


def build_messages(request: Request, recipients: list[Recipient],
                   images: EmailImages | None = None, fallbacks: list[str] | None = None) -> list[OutgoingEmail]:
    """Render each recipient's message; pass `images` prepared off the event loop
    (the service does) or they are sized here, synchronously (`simulate` does). Why a
    template failed (and the built-in message went instead) is added to `fallbacks`."""
    ctx = request.context
    templates, config, links = ctx.services.bundle.templates, ctx.services.bundle.config, ctx.services.links
    images = images or images_of(request)
    base = ctx.template_context()
    failures = {name: why for group in image_outputs(request) for name, why in group.failures.items()}
    meeting: Meeting | None = base["meeting"]
    meeting_failed = any(
        step.opens_meeting and step.id not in ctx.outputs for step in ctx.playbook.steps
    )
    messages = []
    for person in recipients:
        language = templates.pick_language(
            request.template,
            [person.language, ctx.playbook.language, ctx.site.language if ctx.site else None,
             config.organization.language],
        )
        context: dict[str, Any] = {
            **base, "recipient": person, "language": language,
            "camera_failures": failures, "meeting_failed": meeting_failed and meeting is None,
            "ack_url": links.ack(ctx.incident.id, person.person_id) if links else None,
            "stand_down_url": links.stand_down(ctx.incident.id, person) if links else None,
            "liveview_url": links.liveview(ctx.incident.id, person) if links and images.snapshots else None,
        }
        rendered = templates.render(request.template, language, context)
        if rendered.fallback and fallbacks is not None and rendered.fallback not in fallbacks:
            fallbacks.append(rendered.fallback)
        attachments = images.for_recipient(person.external)
        if meeting is not None and meeting.ics:
            attachments.append(Attachment("invite.ics", "text/calendar; method=REQUEST", meeting.ics))
        key = delivery_key(ctx.incident.id, request.step_id, person.person_id)
        messages.append(OutgoingEmail(
            key=key, recipient=person, subject=drill_marked(rendered.subject, ctx.incident.drill, language),
            text=rendered.text, html=rendered.html, attachments=attachments, message_id=message_id(key),
            headers={"X-Crisisbot-Incident": ctx.incident.id},
        ))
    return messages


def meta_message(ctx: MessageContext, step_id: str, person: Recipient, summary: dict[str, Any]) -> OutgoingEmail:
    """A built-in plain message: it must go out even when templates are the problem."""
    incident = ctx.incident
    base = ctx.template_context()
    french = ctx.services.bundle.config.organization.language == "fr"
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
