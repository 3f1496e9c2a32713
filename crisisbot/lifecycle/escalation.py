"""Escalation timers: schedule every tier and reminder up front, fire them by the clock.

Timer ids are deterministic (incident, step, tier, reminder), so a step re-run after
a restart schedules nothing twice; each send goes through the email step with its
own delivery keys, so a timer fired again after a crash resends nothing.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from crisisbot.lifecycle.acks import CLOSED, rule_of, satisfied
from crisisbot.lifecycle.context import LifecycleContext, incident_context
from crisisbot.store.records import TimerRecord
from crisisbot.lifecycle.schedules import expand
from crisisbot.steps import email
from crisisbot.steps.base import StepContext, StepFailed
from crisisbot.steps.escalate import EscalateStep

if TYPE_CHECKING:
    from crisisbot.runtime import Runtime

log = logging.getLogger(__name__)

TIER, REMINDER = "escalate.tier", "escalate.reminder"


def plan(spec: EscalateStep, incident_id: str, start: Any) -> list[TimerRecord]:
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


async def begin(spec: EscalateStep, ctx: StepContext) -> dict[str, Any]:
    """Schedule the later tiers first (a failing tier 1 must not stop them), then alert tier 1."""
    start = ctx.clock.now()
    timers = plan(spec, ctx.incident.id, start)
    scheduler = ctx.services.timers
    added = await (scheduler.schedule(timers) if scheduler is not None else ctx.store.add_timers(timers))
    if added:
        await ctx.store.audit("escalation.scheduled", ctx.incident.id, {
            "step": spec.id, "tiers": len(spec.tiers), "timers": added,
            "rule": {"count": spec.until.count, "roles": spec.until.roles},
            "next": min((t.due_at for t in timers), default=None),
        })
    summary = await send_tier(ctx, spec, 0)
    return {"scheduled": added, "tier1": summary}


def _spec_of(ctx: StepContext, step_id: str) -> EscalateStep:
    spec = next((s for s in ctx.playbook.steps if s.id == step_id), None)
    if not isinstance(spec, EscalateStep):
        raise StepFailed(f"playbook {ctx.playbook.id} has no escalate step '{step_id}' any more")
    return spec


async def send_tier(ctx: StepContext, spec: EscalateStep, tier_index: int, reminder: int = 0) -> dict[str, Any]:
    tier = spec.tiers[tier_index]
    people = expand(ctx.services.bundle, tier.to, ctx.clock.now())
    if reminder:
        acked = {a.person_id for a in await ctx.store.get_acks(ctx.incident.id)}
        people = [p for p in people if p not in acked]
        if not people:
            return {"recipients": 0, "sent": 0}
    step_id = f"{spec.id}.tier{tier_index + 1}" + (f".r{reminder}" if reminder else "")
    template = tier.reminders.template if reminder and tier.reminders else tier.template
    message = email.EmailStep(action="email", id=step_id, to=people or tier.to, template=template,
                              via=spec.via, timeout=spec.timeout)
    if isinstance(ctx, LifecycleContext):
        ctx.extra.update({"tier": tier_index + 1, "reminder": reminder, "escalated": tier_index > 0})
    await ctx.store.audit("escalation.reminder" if reminder else "escalation.tier", ctx.incident.id,
                              {"step": spec.id, "tier": tier_index + 1, "reminder": reminder, "people": people})
    return await email.run(message, ctx)


async def _fire(runtime: "Runtime", timer: TimerRecord) -> None:
    assert timer.incident_id is not None
    incident = await runtime.store.get_incident(timer.incident_id)
    if incident is None or incident.status in CLOSED:
        return
    ctx = await incident_context(runtime, incident)
    if satisfied(rule_of(ctx.playbook), await runtime.store.get_acks(incident.id), runtime.bundle):
        return
    spec = _spec_of(ctx, timer.payload["step"])
    await send_tier(ctx, spec, timer.payload["tier"], timer.payload.get("n", 0))


def handlers(runtime: "Runtime") -> dict[str, Any]:
    async def fire(timer: TimerRecord) -> None:
        await _fire(runtime, timer)

    return {TIER: fire, REMINDER: fire}
