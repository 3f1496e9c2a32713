"""What the engine asks the lifecycle while it processes an alarm (one small protocol,
so the engine knows nothing of silences, restores or cancel windows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from crisisbot.models import Alarm, Incident

if TYPE_CHECKING:
    from crisisbot.config.playbook import Playbook


@dataclass(slots=True)
class Handled:
    """The lifecycle dealt with the alarm itself (restore, silenced); `incident` it touched."""

    incident: Incident | None


class EngineHooks(Protocol):
    async def intercept(self, alarm: Alarm) -> Handled | None:
        """Before matching: restores/resolves of an open incident, record-only silences."""

    async def route(self, alarm: Alarm, playbook: "Playbook | None") -> "Playbook | None":
        """After matching: a maintenance window's reduced playbook, a drill's chosen playbook."""

    async def joined(self, incident: Incident, alarm: Alarm) -> None:
        """An alarm joined an open incident: pressing again inside the cancel window cancels."""

    async def before_run(self, incident: Incident, alarm: Alarm, playbook: "Playbook") -> bool:
        """False: do not run the playbook (cancelled during its cancel window)."""
