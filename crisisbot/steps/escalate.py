"""Alert tier after tier until the acknowledgement rule is met.

Tier 1 is alerted at once; later tiers and reminders are persisted timers (they
survive restarts and fire once), cancelled as soon as enough people — by count and
role — have acknowledged, or the incident is stood down. Timer ids are deterministic
(incident, step, tier, reminder), so a step re-run after a restart schedules nothing
twice; each tier is sent through the notify service with its own step id, so a timer
fired again after a crash resends nothing. The lifecycle fires the timers
(crisisbot.lifecycle.escalation) and calls `send_tier` here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Iterator, Literal

from pydantic import BaseModel, Field

from crisisbot.config.types import Identifier, Reference, Seconds, Strict
from crisisbot.lifecycle.schema import AckRule
from crisisbot.notify import Request, notify_of
from crisisbot.steps.base import StepContext, StepSpec, StepType, TemplateExtras
from crisisbot.store.records import TimerRecord

TIER, REMINDER = "escalate.tier", "escalate.reminder"  # timer kinds, fired by the lifecycle


class Reminders(Strict):
    every: Seconds = Field(description="remind those of the tier who have not answered, e.g. 5m")
    count: int = Field(1, ge=1, le=20)
    template: Annotated[Identifier, Reference("templates")] = "reminder"


class Tier(Strict):
    to: Annotated[list[Identifier], Reference("contacts")] = Field(
        min_length=1, description="groups (duty schedules apply) or people")
    after: Seconds = Field(0.0, description="delay since the escalation started, e.g. 10m")
    template: Annotated[Identifier, Reference("templates")] = "committee_alert"
    reminders: Reminders | None = None


class EscalateStep(StepSpec):
    consumes = True
    urgent = True
    notifies = True

    action: Literal["escalate"]
    tiers: list[Tier] = Field(min_length=1)
    until: AckRule = Field(default_factory=AckRule, description="acknowledgements that stop the escalation")
    via: Annotated[list[Identifier] | None, Reference("connectors", of="mail")] = Field(
        None, description="mail connectors (default: mail.via)")


def plan(spec: EscalateStep, incident_id: str, start: datetime) -> list[TimerRecord]:
    timers: list[TimerRecord] = []
    for index, tier in enumerate(spec.tiers):
        due = start + timedelta(seconds=tier.after)
        base = f"{incident_id}:{spec.id}:tier{index + 1}"
        if index > 0:
            timers.append(TimerRecord(base, TIER, due, incident_id, {"step": spec.id, "tier": index}))
        for k in range(1, (tier.reminders.count if tier.reminders else 0) + 1):
            assert tier.reminders is not None
            timers.append(TimerRecord(f"{base}:r{k}", REMINDER, due + timedelta(seconds=tier.reminders.every * k),
                                      incident_id, {"step": spec.id, "tier": index, "n": k}))
    return timers


class Escalation(BaseModel):
    """What the step leaves in the journal: later tiers are timers of their own."""

    scheduled: int = Field(0, description="timers set for the later tiers and reminders")
    tier1: dict[str, Any] = Field(default_factory=dict, description="delivery summary of the first tier")


async def run(ctx: StepContext, spec: EscalateStep) -> Escalation:
    """Schedule the later tiers first (a failing tier 1 must not stop them), then alert tier 1."""
    start = ctx.clock.now()
    timers = plan(spec, ctx.incident.id, start)
    scheduler = ctx.services.timers  # None (a bare test context): straight into the store
    added = await (scheduler.schedule(timers) if scheduler is not None else ctx.store.add_timers(timers))
    if added:
        await ctx.store.audit("escalation.scheduled", ctx.incident.id, {
            "step": spec.id, "tiers": len(spec.tiers), "timers": added,
            "rule": {"count": spec.until.count, "roles": spec.until.roles},
            "next": min((t.due_at for t in timers), default=None),
        })
    summary = await send_tier(ctx, spec, 0)
    return Escalation(scheduled=added, tier1=summary)


def on_duty(ctx: StepContext, refs: list[str], at: datetime) -> list[str]:
    """Person ids behind refs at `at` (groups and their duty schedules expanded), each once."""
    bundle = ctx.services.bundle
    return list(dict.fromkeys(person for ref in refs for person in bundle.members(ref, at=at)))


async def send_tier(ctx: StepContext, spec: EscalateStep, tier_index: int, reminder: int = 0) -> dict[str, Any]:
    tier = spec.tiers[tier_index]
    people = on_duty(ctx, tier.to, ctx.clock.now())
    if reminder:
        acked = {a.person_id for a in await ctx.store.get_acks(ctx.incident.id)}
        people = [p for p in people if p not in acked]
        if not people:
            return {"recipients": 0, "sent": 0}
    step_id = f"{spec.id}.tier{tier_index + 1}" + (f".r{reminder}" if reminder else "")
    template = tier.reminders.template if reminder and tier.reminders else tier.template
    if isinstance(ctx, TemplateExtras):  # a lifecycle context: its templates see the tier
        ctx.extra.update({"tier": tier_index + 1, "reminder": reminder, "escalated": tier_index > 0})
    await ctx.store.audit("escalation.reminder" if reminder else "escalation.tier", ctx.incident.id,
                          {"step": spec.id, "tier": tier_index + 1, "reminder": reminder, "people": people})
    return await notify_of(ctx.services).send(Request(context=ctx, step_id=step_id, to=people or tier.to,
                                                      template=template, via=spec.via, timeout=spec.timeout))


def describe(ctx: StepContext, spec: EscalateStep, bodies: bool) -> Iterator[str]:
    """Each tier's people as duty schedules give them when that tier would fire."""
    bundle, start = ctx.services.bundle, ctx.clock.now()
    rule = spec.until
    roles = "".join(f", {n} {role}" for role, n in rule.roles.items())
    yield f"  until {rule.count} acknowledgement(s){roles}"
    for number, tier in enumerate(spec.tiers, 1):
        when = start + timedelta(seconds=tier.after)
        delay = "at once" if not tier.after else f"after {timedelta(seconds=round(tier.after))}"
        people = bundle.recipients(tier.to, at=when)
        yield (f"  tier {number} ({', '.join(tier.to)}), {delay}, template '{tier.template}': "
               f"{len(people)} recipient(s) on duty at {when.isoformat(timespec='minutes')}")
        for person in people:
            yield f"    - {person.name} <{person.email}>" + (" [external]" if person.external else "")
        if tier.reminders:
            yield (f"    reminded every {timedelta(seconds=round(tier.reminders.every))}, "
                   f"{tier.reminders.count} time(s), if they have not answered")


STEP = StepType(EscalateStep, run, Escalation, describe=describe)
