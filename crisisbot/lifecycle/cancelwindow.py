"""Cancel window for manual presses: the playbook waits a few seconds during which the
person who pressed can cancel (console, or pressing again); the incident is then
recorded as cancelled. Never for panel alarms unless the playbook says so."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from crisisbot.errors import CancelRefused  # noqa: F401 - re-exported for existing importers
from crisisbot.clock import Clock
from crisisbot.lifecycle.schema import CancelWindow
from crisisbot.models import Alarm, Incident, IncidentStatus, PlaybookOutcome

if TYPE_CHECKING:
    from crisisbot.config.settings import DaemonConfig
    from crisisbot.store.base import Store

log = logging.getLogger(__name__)


def from_panel(window: CancelWindow, alarm: Alarm, config: "DaemonConfig") -> bool:
    """Raised by a panel-class input (DC-09, Modbus, Contact ID…), not by a person's button."""
    trigger = config.triggers.get(alarm.source) or {}
    return str(trigger.get("type", "")) in window.panel_types


def applies(window: CancelWindow | None, alarm: Alarm, config: "DaemonConfig") -> bool:
    if window is None:
        return False
    return window.panels or not from_panel(window, alarm, config)


def pressed_again(window: CancelWindow, first: Alarm, alarm: Alarm, config: "DaemonConfig") -> bool:
    """A second press of the same button. A panel sending the same event again (new
    sequence number) or a sender resending one event (same dedup key) is a repeat, never a cancel."""
    if first.id == alarm.id or from_panel(window, alarm, config):
        return False
    if alarm.dedup_key is not None and alarm.dedup_key == first.dedup_key:
        return False
    return (first.source, first.input, first.zone) == (alarm.source, alarm.input, alarm.zone)


class CancelWindows:
    def __init__(self, store: "Store", clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._events: dict[str, asyncio.Event] = {}

    async def wait(self, incident: Incident, alarm: Alarm, window: CancelWindow) -> bool:
        """True when the window closed without a cancel: the playbook may run."""
        store = self.store
        fresh = await store.get_incident(incident.id)
        until_text = (fresh.data if fresh else incident.data).get("cancel_until")
        if until_text is None:
            until = self.clock.now() + timedelta(seconds=window.duration)
            await store.update_incident_data(incident.id, {"cancel_until": until.isoformat()})
            await store.audit("cancel_window.opened", incident.id,
                              {"until": until.isoformat(), "seconds": window.duration, "source": alarm.source})
        else:
            until = datetime.fromisoformat(until_text)
        event = self._events.setdefault(incident.id, asyncio.Event())
        sleeper = asyncio.ensure_future(self.clock.sleep_until(until))
        cancelled = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeper, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            cancelled.cancel()
            self._events.pop(incident.id, None)
        current = await store.get_incident(incident.id)
        if current is not None and current.status is IncidentStatus.cancelled:
            return False
        await store.audit("cancel_window.closed", incident.id, {"cancelled": False})
        return True

    async def cancel(self, incident_id: str, by: str, via: str) -> Incident:
        store = self.store
        incident = await store.get_incident(incident_id)
        if incident is None:
            raise CancelRefused(f"no incident '{incident_id}'")
        until = incident.data.get("cancel_until")
        if incident.status is not IncidentStatus.open or until is None or self.clock.now() >= datetime.fromisoformat(until):
            raise CancelRefused("the cancel window is over: stand the incident down as a false alarm instead")
        await store.set_incident_status(incident.id, IncidentStatus.cancelled, f"cancelled by {by} ({via})")
        await store.finish_playbook(incident.id, PlaybookOutcome.stopped, "cancelled during its cancel window")
        await store.audit("incident.cancelled", incident.id, {"by": by, "via": via})
        event = self._events.get(incident.id)
        if event is not None:
            event.set()
        log.info("incident %s cancelled by %s during its cancel window", incident.id, by)
        return incident

    def open_for(self, incident: Incident) -> bool:
        until = incident.data.get("cancel_until")
        return (incident.status is IncidentStatus.open and until is not None
                and self.clock.now() < datetime.fromisoformat(until))
