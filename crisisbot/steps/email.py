"""Email each member of the named groups a personal message, at least once.

The step says who, which template, which snapshots and how many must be reached;
the notify service (crisisbot.notify) does the rest: rendering per person, the
idempotency key (incident, step, person) and Message-ID, the verdict journal, the
background retries past the deadline and the mail.fallback meta-alert when fewer
people than `require` were reached (then the step fails).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from crisisbot.config.types import Identifier
from crisisbot.imaging import EmailImages
from crisisbot.models import OutgoingEmail, Recipient
from crisisbot.notify import Request, notify_of
from crisisbot.notify.render import build_messages as render_messages
from crisisbot.steps.base import StepContext, StepSpec


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
    require: Literal["any", "all"] | Annotated[int, Field(ge=1)] = Field(
        "any", description="how many people must be reached; fewer raises the mail.fallback meta-alert"
    )


def request_of(spec: EmailStep, ctx: StepContext) -> Request:
    return Request(context=ctx, step_id=spec.id or "email", to=list(spec.to), template=spec.template,
                   via=spec.via, attach=spec.attach, max_attachment_bytes=spec.max_attachment_bytes,
                   require=spec.require, timeout=spec.timeout)


def build_messages(spec: EmailStep, ctx: StepContext, recipients: list[Recipient],
                   images: EmailImages | None = None, fallbacks: list[str] | None = None) -> list[OutgoingEmail]:
    """The messages the step would send (`simulate` shows them; nothing is sent)."""
    return render_messages(ctx.runtime, request_of(spec, ctx), recipients, images, fallbacks)


async def run(spec: EmailStep, ctx: StepContext) -> dict[str, Any]:
    return await notify_of(ctx.runtime).send(request_of(spec, ctx))
