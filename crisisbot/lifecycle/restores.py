"""Follow-ups from inputs: a panel's restore event (kind restore, or action resolve)
closes or annotates the open incident as its playbook says; an input's own
acknowledge is noted. Not handled (None) when no open incident is found."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Coroutine

from crisisbot.lifecycle.acks import CLOSED
from crisisbot.lifecycle.standdown import stand_down
from crisisbot.models import Alarm, AlarmAction, EventKind, Incident, IncidentStatus

if TYPE_CHECKING:
    from crisisbot.runtime import Runtime

log = logging.getLogger(__name__)


def is_follow_up(alarm: Alarm) -> bool:
    return alarm.kind is EventKind.restore or alarm.action is not AlarmAction.trigger


async def find_incident(runtime: "Runtime", alarm: Alarm) -> Incident | None:
    """The open incident this follow-up is about: same dedup key, else same site and input/zone."""
    store = runtime.store
    if alarm.dedup_key:
        found = await store.find_open_incident(alarm.site, None, runtime.clock.now(), alarm.dedup_key,
                                               drill=alarm.drill)
        if found is not None:
            return found
    for incident in reversed(await store.active_incidents(alarm.site)):  # the latest first
        first = next(iter(await store.incident_alarms(incident.id)), None)
        if first is None or incident.drill != alarm.drill:
            continue
        same_point = (alarm.input and alarm.input == first.input) or (
            not alarm.input and alarm.zone and alarm.zone == first.zone)
        if first.source == alarm.source and same_point:
            return incident
    return None


async def handle(runtime: "Runtime", alarm: Alarm,
                 spawn: "Callable[[Coroutine[Any, Any, Any], str], None] | None" = None) -> Incident | None:
    """`spawn`: runs the all-clear beside the alarm queue (the lifecycle's); None: awaited here."""
    incident = await find_incident(runtime, alarm)
    if incident is None or incident.status in CLOSED:
        return None
    store = runtime.store
    await store.join_incident(incident.id, alarm)
    if alarm.action is AlarmAction.acknowledge:
        await store.audit("incident.acknowledged_by_input", incident.id, {"alarm_id": alarm.id, "source": alarm.source})
        return incident
    playbook = runtime.bundle.playbook(incident.playbook)
    mode = playbook.lifecycle.on_restore if playbook else "annotate"
    await store.audit("incident.restored", incident.id,
                      {"alarm_id": alarm.id, "source": alarm.source, "input": alarm.input, "on_restore": mode})
    if mode == "close":
        closing = stand_down(runtime, incident.id, IncidentStatus.resolved,
                             f"restore received from {alarm.source}" + (f" ({alarm.input})" if alarm.input else ""),
                             by=alarm.source, via="restore")
        if spawn is not None:  # the end-of-alert emails must not hold the alarm queue
            spawn(closing, f"stand-down of {incident.id} after a restore")
        else:
            await closing
    log.info("incident %s: restore from %s (%s)", incident.id, alarm.source, mode)
    return incident
