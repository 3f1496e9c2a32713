"""Email each member of the named groups a personal message, at least once.

The step says who, which template, which snapshots and how many must be reached;
the notify service (crisisbot.notify) does the rest: rendering per person, the
idempotency key (incident, step, person) and Message-ID, the verdict journal, the
background retries past the deadline and the mail.fallback meta-alert when fewer
people than `require` were reached (then the step fails).
"""

from __future__ import annotations

from typing import Annotated, Iterator, Literal

from pydantic import BaseModel, Field

from crisisbot.config.types import Identifier, Reference
from crisisbot.imaging import EmailImages
from crisisbot.models import OutgoingEmail, Recipient
from crisisbot.notify import Request, notify_of
from crisisbot.notify.render import build_messages as render_messages
from crisisbot.steps.base import StepContext, StepSpec, StepType


class EmailStep(StepSpec):
    consumes = True
    urgent = True
    notifies = True

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


def request_of(spec: EmailStep, ctx: StepContext) -> Request:
    return Request(context=ctx, step_id=spec.id or "email", to=list(spec.to), template=spec.template,
                   via=spec.via, attach=spec.attach, max_attachment_bytes=spec.max_attachment_bytes,
                   require=spec.require, timeout=spec.timeout)


def build_messages(spec: EmailStep, ctx: StepContext, recipients: list[Recipient],
                   images: EmailImages | None = None, fallbacks: list[str] | None = None) -> list[OutgoingEmail]:
    """The messages the step would send (`simulate` shows them; nothing is sent)."""
    return render_messages(request_of(spec, ctx), recipients, images, fallbacks)


async def run(ctx: StepContext, spec: EmailStep) -> Delivered:
    return Delivered.model_validate(await notify_of(ctx.services).send(request_of(spec, ctx)))


def describe(ctx: StepContext, spec: EmailStep, bodies: bool) -> Iterator[str]:
    """Who would get which subject, then (with `bodies`) the first recipient's text part."""
    recipients = ctx.recipients(list(spec.to))
    yield f"  emails {len(recipients)} recipient(s) with template '{spec.template}':"
    fallbacks: list[str] = []
    messages = build_messages(spec, ctx, recipients, fallbacks=fallbacks)
    for why in fallbacks:
        yield f"  WARNING: {why}; the built-in message would be sent instead"
    for message in messages:
        person = message.recipient
        tag = " [external]" if person.external else ""
        yield f"    - {person.name} <{person.email}>{tag}: {message.subject}"
    if bodies and recipients:
        first = build_messages(spec, ctx, recipients[:1])[0]
        yield "  --- message (as the first recipient would read it, text part) ---"
        for line in first.text.splitlines():
            yield f"  | {line}"


STEP = StepType(EmailStep, run, Delivered, describe=describe)
