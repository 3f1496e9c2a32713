"""Rebuild a step context for an incident outside its playbook run (timers, stand-down),
so lifecycle messages see what the playbook's messages saw (meeting, snapshots) when
they go through the notify service: same templates, idempotent deliveries."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from crisisbot.errors import IncidentNotFound  # noqa: F401 - re-exported for existing importers
from crisisbot.models import Incident
from crisisbot.runtime import Runtime
from crisisbot.steps import kept_output
from crisisbot.steps.base import StepContext

log = logging.getLogger(__name__)


@dataclass
class LifecycleContext(StepContext):
    """A step context whose templates also see lifecycle variables (tier, outcome, reason…)."""

    extra: dict[str, Any] = field(default_factory=dict)

    def template_context(self) -> dict[str, Any]:
        return {**super().template_context(), **self.extra}


async def incident_context(runtime: Runtime, incident: Incident, extra: dict[str, Any] | None = None) -> LifecycleContext:
    playbook = runtime.bundle.playbook(incident.playbook)
    alarms = await runtime.store.incident_alarms(incident.id)
    if playbook is None or not alarms:
        raise IncidentNotFound(f"incident {incident.id}: its playbook or first alarm is gone")
    outputs: dict[str, Any] = {}
    for step_id, record in (await runtime.store.get_steps(incident.id)).items():
        spec = next((s for s in playbook.steps if s.id == step_id), None)
        output = kept_output(spec, record) if spec is not None and record.status == "done" else None
        if output is not None:
            outputs[step_id] = output
    return LifecycleContext(
        services=runtime.step_services(), incident=incident, alarm=alarms[0], playbook=playbook,
        site=runtime.bundle.config.sites.get(alarms[0].site), outputs=outputs, log=log, extra=extra or {},
    )


async def get_incident(runtime: Runtime, incident_id: str) -> Incident:
    incident = await runtime.store.get_incident(incident_id)
    if incident is None:
        raise IncidentNotFound(f"no incident '{incident_id}' (give the id or a unique prefix)")
    return incident
