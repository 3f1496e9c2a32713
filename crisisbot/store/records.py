"""Rows the lifecycle keeps in the store: timers, acknowledgements, silences."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class TimerRecord:
    """A persisted timer; its id is deterministic so scheduling twice is a no-op."""

    id: str
    kind: str  # handler name, e.g. escalate.tier, escalate.reminder, drill.run, silence.end
    due_at: datetime
    incident_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"  # pending | firing | done | cancelled | failed


@dataclass(slots=True)
class AckRecord:
    incident_id: str
    person_id: str
    response: str  # on_it | joining | console
    via: str  # link | console | input
    at: datetime


@dataclass(slots=True)
class SilenceRecord:
    """A maintenance window: alarms of the site (or one input) go to a reduced playbook."""

    id: str
    site: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    input: str | None = None
    playbook: str | None = None
    ended_at: datetime | None = None

    def covers(self, site: str, input_: str | None, zone: str | None, at: datetime) -> bool:
        if self.ended_at is not None or not (self.starts_at <= at < self.ends_at) or site != self.site:
            return False
        return self.input is None or self.input in (input_, zone)
