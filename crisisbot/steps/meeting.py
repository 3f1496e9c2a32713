"""Open the crisis meeting, falling back to the next provider when one fails.

The meeting is a produced output: message steps wait for it (up to its deadline)
so the join link is in the first email. The result is journaled (as its `Meeting` fields), so a restart
reuses the meeting instead of opening a second one.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Iterator, Literal

from pydantic import Field

from connectors.base import MeetingProvider, MeetingRequest
from crisisbot.config.types import Identifier, Reference, Seconds, Templated
from crisisbot.models import Meeting
from crisisbot.steps.base import StepContext, StepFailed, StepSpec, StepType


class MeetingStep(StepSpec):
    produces = True
    opens_meeting = True
    urgent = True

    action: Literal["meeting"]
    connector: Annotated[Identifier, Reference("connectors", of="meeting")] = Field(
        description="meeting connector, e.g. teams or jitsi")
    fallback: Annotated[list[Identifier], Reference("connectors", of="meeting")] = Field(
        default_factory=list, description="tried in order if it fails")
    subject: Annotated[str, Templated()] = Field("{{ incident.title }}", description="Jinja2 expression for the subject")
    duration: Seconds = 7200.0
    attendees: Annotated[list[Identifier], Reference("contacts")] = Field(
        default_factory=list, description="groups/people invited by providers that send invitations"
    )
    attempt_timeout: Seconds | None = Field(
        None, description="deadline per provider (default: the step deadline shared among them)"
    )


async def run(ctx: StepContext, spec: MeetingStep) -> Meeting:
    subject = ctx.templates.render_field(spec.subject, ctx.template_context(), "meeting subject")
    start = ctx.clock.now()
    request = MeetingRequest(
        incident_id=ctx.incident.id,
        subject=subject or ctx.incident.title,
        start=start,
        end=start + timedelta(seconds=spec.duration),
        attendees=ctx.recipients(spec.attendees),
    )
    providers = [spec.connector, *spec.fallback]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (spec.timeout or ctx.config.incidents.meeting_timeout)
    errors: list[str] = []
    for index, name in enumerate(providers):
        provider = ctx.connector(name)
        if not isinstance(provider, MeetingProvider):
            errors.append(f"{name}: not a meeting connector")
            continue
        remaining = deadline - loop.time()
        share = remaining / (len(providers) - index)
        budget = min(spec.attempt_timeout or share, remaining) if index < len(providers) - 1 else remaining
        if budget <= 0:
            errors.append(f"{name}: no time left before the step deadline")
            continue
        try:
            async with asyncio.timeout(budget):
                meeting = await provider.open_meeting(request)
        except TimeoutError:
            reason = f"no answer within {budget:.1f}s"
        except Exception as exc:  # noqa: BLE001 - any provider failure means: try the next one
            reason = f"{type(exc).__name__}: {exc}"
        else:
            await ctx.store.audit(
                "meeting.opened", ctx.incident.id,
                {"provider": name, "join_url": meeting.join_url, "meeting_id": meeting.meeting_id,
                 "fallback": index > 0, "failed_before": errors},
            )
            for warning in meeting.warnings:  # the meeting is usable, but not as configured
                await ctx.store.audit("meeting.degraded", ctx.incident.id, {"provider": name, "reason": warning})
                ctx.log.warning("meeting provider %s: %s", name, warning)
            return meeting
        errors.append(f"{name}: {reason}")
        await ctx.store.audit("meeting.failed", ctx.incident.id, {"provider": name, "reason": reason})
        ctx.log.warning("meeting provider %s failed: %s", name, reason)
    raise StepFailed("no meeting could be opened (" + "; ".join(errors) + ")")


def describe(ctx: StepContext, spec: MeetingStep, bodies: bool) -> Iterator[str]:
    fallback = f", fallback {', '.join(spec.fallback)}" if spec.fallback else ""
    yield f"  opens a meeting with {spec.connector}{fallback}"


def placeholder(ctx: StepContext, spec: MeetingStep) -> Meeting:
    """A dry run opens no meeting: its messages show a placeholder link."""
    now = ctx.clock.now()
    return Meeting(provider=spec.connector, join_url="<meeting link>", meeting_id="-",
                   subject=ctx.incident.title, start=now, end=now)


# journaled: a restart reuses the meeting
STEP = StepType(MeetingStep, run, Meeting, describe=describe, placeholder=placeholder)
