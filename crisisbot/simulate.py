"""Dry run: which playbook an alarm would run, who would be contacted, what they would read.

Nothing is sent and nothing is stored; meeting links are shown as placeholders. Each step
describes itself (`StepType.describe`/`placeholder`), so a plugin step is shown like a built-in one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterator

from crisisbot import matching
from crisisbot.config.bundle import Bundle
from crisisbot.models import Alarm, Incident, IncidentStatus
from crisisbot.playbook_run import step_id
from crisisbot.steps import step_type
from crisisbot.steps.base import StepContext, StepServices


def simulate(bundle: Bundle, alarm: Alarm, at: datetime, show_bodies: bool = True) -> Iterator[str]:
    found = matching.candidates(alarm, bundle.playbooks, bundle.config.sites, at)
    yield f"Alarm: {alarm.kind.value}/{alarm.severity.value} at site {alarm.site} from {alarm.source}" + (
        f", zone {alarm.zone}" if alarm.zone else "") + f" — {at.isoformat(timespec='minutes')}"
    if not found:
        yield "No playbook matches: the alarm would be stored and logged, nobody contacted."
        return
    playbook = found[0]
    yield f"Playbook: {playbook.id} — {playbook.name} (priority {playbook.priority})"
    for other in found[1:]:
        yield f"  also matching but not run: {other.id} (priority {other.priority})"
    site = bundle.config.sites.get(alarm.site)
    incident = Incident(id="SIMULATION", site=alarm.site, playbook=playbook.id, status=IncidentStatus.open,
                        opened_at=at, updated_at=at, drill=alarm.drill,
                        title=f"{alarm.label or alarm.kind.value} — {site.name if site else alarm.site}")
    # no keys, hence no personal links in a dry run; duty rosters read at `at`
    ctx = StepContext(StepServices.dry(bundle, at), incident=incident, alarm=alarm, playbook=playbook, site=site)
    for step in playbook.steps:
        yield ""
        yield f"Step {step.id} ({step.action})" + (f", waits for {', '.join(step.needs)}" if step.needs else "")
        kind = step_type(step.action)
        if kind.describe is None:
            yield f"  {step.model_dump(exclude={'id', 'action'}, exclude_none=True)}"
        else:
            yield from kind.describe(ctx, step, show_bodies)
        if kind.placeholder is not None:
            ctx.outputs[step_id(step)] = kind.placeholder(ctx, step)
