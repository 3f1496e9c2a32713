"""Dry run: which playbook an alarm would run, who would be contacted, what they would read.

Nothing is sent and nothing is stored; meeting links are shown as placeholders.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Iterator

from crisisbot import matching
from crisisbot.config.bundle import Bundle
from crisisbot.models import Alarm, Incident, IncidentStatus, Meeting
from crisisbot.steps.base import StepContext, StepServices


def simulate(bundle: Bundle, alarm: Alarm, at: datetime, show_bodies: bool = True) -> Iterator[str]:
    found = matching.candidates(alarm, bundle.playbooks, bundle.config.sites, at)
    yield f"Alarm: {alarm.kind.value}/{alarm.severity.value} at site {alarm.site} from {alarm.source}" + (
        f", zone {alarm.zone}" if alarm.zone else "") + f" — {at.isoformat(timespec='minutes')}"
    if not found:
        yield "No playbook matches: the alarm would be stored and logged, nobody contacted."
        return
    playbook = found[0]
    yield f"Playbook: {playbook.id} — {playbook.name} (priority {playbook.priority})"
    for other in found[1:]:
        yield f"  also matching but not run: {other.id} (priority {other.priority})"
    site = bundle.config.sites.get(alarm.site)
    incident = Incident(id="SIMULATION", site=alarm.site, playbook=playbook.id, status=IncidentStatus.open,
                        opened_at=at, updated_at=at, drill=alarm.drill,
                        title=f"{alarm.label or alarm.kind.value} — {site.name if site else alarm.site}")
    # no keys, hence no personal links in a dry run; duty rosters read at `at`
    ctx = StepContext(StepServices.dry(bundle, at), incident=incident, alarm=alarm, playbook=playbook, site=site)
    for step in playbook.steps:
        yield ""
        yield f"Step {step.id} ({step.action})" + (f", waits for {', '.join(step.needs)}" if step.needs else "")
        if step.action == "meeting":
            yield f"  opens a meeting with {step.connector}" + (f", fallback {', '.join(step.fallback)}" if step.fallback else "")  # type: ignore[attr-defined]
            ctx.outputs[step.id] = Meeting(provider=step.connector, join_url="<meeting link>", meeting_id="-",  # type: ignore[attr-defined,index]
                                           subject=incident.title, start=at, end=at)
        elif step.action == "snapshot":
            from crisisbot.steps.snapshot import select_cameras

            yield f"  cameras: {', '.join(select_cameras(step, ctx)) or 'none'}"  # type: ignore[arg-type]
        elif step.action == "email":
            yield from _email(bundle, step, ctx, show_bodies, at)
        elif step.action == "escalate":
            yield from _escalate(bundle, step, at)
        else:
            yield f"  {step.model_dump(exclude={'id', 'action'}, exclude_none=True)}"


def _escalate(bundle: Bundle, step, at: datetime) -> Iterator[str]:
    """Each tier's people as duty schedules give them when that tier would fire."""
    rule = step.until
    roles = "".join(f", {n} {role}" for role, n in rule.roles.items())
    yield f"  until {rule.count} acknowledgement(s){roles}"
    for number, tier in enumerate(step.tiers, 1):
        when = at + timedelta(seconds=tier.after)
        delay = "at once" if not tier.after else f"after {timedelta(seconds=round(tier.after))}"
        people = bundle.recipients(tier.to, at=when)
        yield (f"  tier {number} ({', '.join(tier.to)}), {delay}, template '{tier.template}': "
               f"{len(people)} recipient(s) on duty at {when.isoformat(timespec='minutes')}")
        for person in people:
            yield f"    - {person.name} <{person.email}>" + (" [external]" if person.external else "")
        if tier.reminders:
            yield (f"    reminded every {timedelta(seconds=round(tier.reminders.every))}, "
                   f"{tier.reminders.count} time(s), if they have not answered")


def _email(bundle: Bundle, step, ctx: StepContext, show_bodies: bool, at: datetime) -> Iterator[str]:
    from crisisbot.steps.email import build_messages

    recipients = bundle.recipients(step.to, at=at)
    yield f"  emails {len(recipients)} recipient(s) with template '{step.template}':"
    fallbacks: list[str] = []
    messages = build_messages(step, ctx, recipients, fallbacks=fallbacks)
    for why in fallbacks:
        yield f"  WARNING: {why}; the built-in message would be sent instead"
    for message in messages:
        person = message.recipient
        tag = " [external]" if person.external else ""
        yield f"    - {person.name} <{person.email}>{tag}: {message.subject}"
    if show_bodies and recipients:
        first = build_messages(step, ctx, recipients[:1])[0]
        yield "  --- message (as the first recipient would read it, text part) ---"
        for line in first.text.splitlines():
            yield f"  | {line}"
