"""The shortfall rule: a message that reached fewer people than its `require` says
keeps /health degraded until background retries reach enough of them.

Kept in the incident's data too, so a restart keeps /health degraded; the timeline
says when the rule was met afterwards (`delivery.rule_met`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from crisisbot.models import IncidentStatus
from crisisbot.store.base import Store

log = logging.getLogger(__name__)

ENDED = (IncidentStatus.resolved, IncidentStatus.false_alarm, IncidentStatus.cancelled)
SHORTFALL_KEY = "delivery_shortfall"  # in Incident.data: steps short of their `require` rule


@dataclass
class Shortfall:
    """A step reached fewer people than its rule requires; cleared when enough are reached."""

    incident_id: str
    step_id: str
    required: int
    reached: int
    total: int

    def describe(self) -> str:
        return f"incident {self.incident_id} step {self.step_id}: reached {self.reached} of {self.total}, {self.required} required"


class Shortfalls:
    """The open shortfalls, by (incident, step)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.open: dict[tuple[str, str], Shortfall] = {}

    def __bool__(self) -> bool:
        return bool(self.open)

    def incidents(self) -> set[str]:
        return {incident_id for incident_id, _ in self.open}

    def describe(self) -> list[str]:
        return [s.describe() for s in self.open.values()]

    async def note(self, shortfall: Shortfall) -> None:
        """Remember (in the incident's data too, so a restart keeps /health degraded)."""
        self.open[(shortfall.incident_id, shortfall.step_id)] = shortfall
        await self._save(shortfall.incident_id)

    def forget(self, incident_id: str) -> None:
        for key in [k for k in self.open if k[0] == incident_id]:
            del self.open[key]

    async def reached(self, incident_id: str, step_id: str) -> None:
        """One more person of that step was reached by a background retry."""
        shortfall = self.open.get((incident_id, step_id))
        if shortfall is None:
            return
        shortfall.reached += 1
        if shortfall.reached >= shortfall.required:
            del self.open[(incident_id, step_id)]
            log.info("%s: rule met", shortfall.describe())
            # The playbook's outcome was judged at its end and stays as it was (the step did
            # miss its deadline); the timeline says that the rule was met afterwards.
            await self.store.audit("delivery.rule_met", incident_id, {
                "step": step_id, "reached": shortfall.reached, "required": shortfall.required,
                "of": shortfall.total})
        await self._save(incident_id)

    async def load(self) -> None:
        for incident in await self.store.list_incidents(limit=1000):
            if incident.status in ENDED:
                continue
            for step, s in (incident.data.get(SHORTFALL_KEY) or {}).items():
                self.open[(incident.id, step)] = Shortfall(incident.id, step, s["required"], s["reached"], s["total"])

    async def _save(self, incident_id: str) -> None:
        mine = {step: {"required": s.required, "reached": s.reached, "total": s.total}
                for (incident, step), s in self.open.items() if incident == incident_id}
        await self.store.update_incident_data(incident_id, {SHORTFALL_KEY: mine})
