"""Stand-down: an operator ends the incident as resolved or as a false alarm.

Everyone who was alerted (any sent delivery of the incident) receives the
end-of-alert message through the notify service (idempotent: running it again after
a crash sends only what is missing), pending timers are cancelled, and the
meeting is ended or left open as the playbook says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors.base import EndsMeetings
from crisisbot.errors import StandDownRefused, StepFailed
from crisisbot.lifecycle.acks import CLOSED
from crisisbot.lifecycle.context import get_incident, incident_context
from crisisbot.models import DeliveryStatus, IncidentStatus, Meeting, PlaybookOutcome
from crisisbot.notify import Request

if TYPE_CHECKING:
    from crisisbot.runtime import Runtime

log = logging.getLogger(__name__)

STEP_ID = "stand-down"
OUTCOMES = (IncidentStatus.resolved, IncidentStatus.false_alarm)


@dataclass(slots=True)
class StandDownResult:
    incident_id: str
    outcome: str
    notified: int
    sent: int
    meeting: str


async def stand_down(runtime: "Runtime", incident_id: str, outcome: IncidentStatus, reason: str, by: str,
                     via: str = "cli") -> StandDownResult:
    if outcome not in OUTCOMES:
        raise StandDownRefused(f"an incident stands down as resolved or false_alarm, not {outcome.value}")
    if not reason.strip():
        raise StandDownRefused("give a reason: it goes to the committee and to the post-crisis review")
    store = runtime.store
    incident = await get_incident(runtime, incident_id)
    if incident.status in CLOSED and incident.status is not outcome:
        raise StandDownRefused(f"incident {incident.id} is already {incident.status.value}")
    at = runtime.clock.now()
    if incident.status is not outcome:
        await store.set_incident_status(incident.id, outcome, reason)
        await store.update_incident_data(incident.id, {"stand_down": {
            "outcome": outcome.value, "reason": reason, "by": by, "via": via, "at": at.isoformat()}})
        await store.audit("incident.stood_down", incident.id,
                          {"outcome": outcome.value, "reason": reason, "by": by, "via": via})
    cancelled = await store.cancel_timers(incident.id)
    if cancelled:
        await store.audit("escalation.stopped", incident.id, {"reason": "stood down", "timers_cancelled": cancelled})
    await runtime.runs.interrupt(incident.id)  # its playbook, if it still runs in this process
    await store.finish_playbook(incident.id, PlaybookOutcome.stopped, f"stood down as {outcome.value} before it ended")
    incident = await get_incident(runtime, incident.id)
    data = incident.data.get("stand_down", {})
    ctx = await incident_context(runtime, incident)
    meeting = await _meeting(runtime, ctx, incident.id)
    ctx.extra.update({"outcome": outcome.value, "reason": data.get("reason", reason),
                      "stood_down_by": data.get("by", by), "stood_down_at": at,
                      "meeting_ended": meeting == "ended"})
    people = await alerted(runtime, incident.id)
    summary: dict[str, Any] = {"sent": 0}
    if people:
        request = Request(context=ctx, step_id=STEP_ID, to=people, template=ctx.playbook.lifecycle.stand_down.template)
        try:
            summary = await runtime.notify.send(request)
        except StepFailed as exc:
            await store.audit("stand_down.failed", incident.id, {"error": str(exc)})
            raise
    log.info("incident %s stood down as %s by %s; %d person(s) notified", incident.id, outcome.value, by, len(people))
    return StandDownResult(incident.id, outcome.value, len(people), summary.get("sent", 0), meeting)


async def alerted(runtime: "Runtime", incident_id: str) -> list[str]:
    """Every person who received at least one message of the incident, in first-alerted order."""
    people: list[str] = []
    for record in (await runtime.store.get_deliveries(incident_id)).values():
        if record.step_id != STEP_ID and record.status is DeliveryStatus.sent and record.person_id not in people:
            people.append(record.person_id)
    return [p for p in people if p in runtime.bundle.people]


async def _meeting(runtime: "Runtime", ctx: Any, incident_id: str) -> str:
    meeting = next((o for o in ctx.outputs.values() if isinstance(o, Meeting)), None)
    if meeting is None:
        return "none"
    wanted = ctx.playbook.lifecycle.stand_down.meeting
    provider = runtime.connectors.get(meeting.provider)
    if wanted == "end" and isinstance(provider, EndsMeetings):
        await provider.end_meeting(meeting)
        await runtime.store.audit("meeting.ended", incident_id, {"provider": meeting.provider})
        return "ended"
    why = "playbook says leave" if wanted == "leave" else f"{meeting.provider} cannot end meetings"
    await runtime.store.audit("meeting.left_open", incident_id, {"provider": meeting.provider, "reason": why})
    return "left open"
