"""Escalation timers: fire the later tiers and reminders the escalate step scheduled.

The step (crisisbot.steps.escalate) plans every tier and reminder up front and alerts
tier 1; here a due timer rebuilds the incident's context and sends its tier, unless
the incident is closed or the acknowledgement rule is already met.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from crisisbot.errors import StepFailed
from crisisbot.lifecycle.acks import CLOSED, rule_of, satisfied
from crisisbot.lifecycle.context import LifecycleContext, incident_context
from crisisbot.steps.escalate import REMINDER, TIER, EscalateStep, send_tier
from crisisbot.store.records import TimerRecord

if TYPE_CHECKING:
    from crisisbot.runtime import Runtime

log = logging.getLogger(__name__)


def _spec_of(ctx: LifecycleContext, step_id: str) -> EscalateStep:
    spec = next((s for s in ctx.playbook.steps if s.id == step_id), None)
    if not isinstance(spec, EscalateStep):
        raise StepFailed(f"playbook {ctx.playbook.id} has no escalate step '{step_id}' any more")
    return spec


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
