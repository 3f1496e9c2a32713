"""False alarms per input, so a chattering button or a flaky detector can be found."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from crisisbot.models import IncidentStatus
from crisisbot.store.base import Store


@dataclass(slots=True)
class InputStats:
    site: str
    source: str
    point: str  # input, else zone, else "-"
    false_alarms: int
    cancelled: int
    incidents: int


async def false_alarms(store: Store, since: datetime, limit: int = 10_000) -> list[InputStats]:
    counts: dict[tuple[str, str, str], Counter[str]] = {}
    for incident in await store.list_incidents(limit=limit):
        if incident.opened_at < since:
            continue
        alarms = await store.incident_alarms(incident.id)
        if not alarms:
            continue
        first = alarms[0]
        key = (incident.site, first.source, first.input or first.zone or "-")
        counts.setdefault(key, Counter())[incident.status.value] += 1
    rows = [InputStats(s, src, p, c[IncidentStatus.false_alarm.value], c[IncidentStatus.cancelled.value],
                       sum(c.values())) for (s, src, p), c in counts.items()]
    return sorted(rows, key=lambda r: (-(r.false_alarms + r.cancelled), r.site, r.source, r.point))
