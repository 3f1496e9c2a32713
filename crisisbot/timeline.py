"""Human-readable incident listings and timelines, built from the store and audit log."""

from __future__ import annotations

from crisisbot.models import Incident
from crisisbot.store.base import Store

_SKIP = {"step.running"}


ROW_HEADER = f"{'ID':<12}  {'OPENED (UTC)':<20} {'STATE':<12} {'PLAYBOOK OUTCOME':<18} {'SITE':<12} {'PLAYBOOK':<20} TITLE"


def incident_row(incident: Incident) -> str:
    """One line: the incident's state and its playbook's outcome in separate columns."""
    opened = incident.opened_at.strftime("%Y-%m-%d %H:%M:%S")
    drill = " [drill]" if incident.drill else ""
    return (f"{incident.id[:12]}  {opened}Z {incident.status.value:<12} {incident.outcome.value:<18} "
            f"{incident.site:<12} {incident.playbook:<20} {incident.title}{drill}")


def _describe(kind: str, data: dict) -> str:
    if kind.startswith("delivery."):
        via = f" via {data['transport']}" if data.get("transport") else ""
        return f"{data.get('address')} ({data.get('person')}){via}: {data.get('detail', '')}"
    if kind.startswith("step."):
        return f"{data.get('step')}" + (f": {data['detail']}" if data.get("detail") else "")
    if kind.startswith("meeting."):
        return ", ".join(f"{k}={v}" for k, v in data.items() if v not in (None, [], ""))
    return ", ".join(f"{k}={v}" for k, v in data.items() if v not in (None, [], "", {}))


async def timeline_lines(store: Store, incident: Incident) -> list[str]:
    lines = [
        f"Incident {incident.id}",
        f"  title:    {incident.title}",
        f"  site:     {incident.site}    playbook: {incident.playbook}",
        f"  state:    {incident.status.value}",
        f"  playbook outcome: {incident.outcome.value}"
        + (f" — {incident.data['outcome_reason']}" if incident.data.get("outcome_reason") else ""),
        f"  opened:   {incident.opened_at.isoformat(timespec='seconds')}",
        "",
        "Alarms:",
    ]
    for alarm in await store.incident_alarms(incident.id):
        where = "/".join(x for x in (alarm.zone, alarm.input) if x)
        lines.append(f"  {alarm.received_at.isoformat(timespec='milliseconds')}  {alarm.source}  {alarm.kind.value}/"
                     f"{alarm.severity.value}  {alarm.label}  {where}")
    lines += ["", "Timeline:"]
    for entry in await store.audit_entries(incident.id):
        if entry.kind in _SKIP:
            continue
        lines.append(f"  {entry.at.isoformat(timespec='milliseconds')}  {entry.kind:<22} {_describe(entry.kind, entry.data)}")
    deliveries = await store.get_deliveries(incident.id)
    if deliveries:
        lines += ["", "Deliveries:"]
        for record in deliveries.values():
            lines.append(f"  {record.step_id:<14} {record.person_id:<14} {record.address:<32} {record.status.value:<9} "
                         f"{record.transport:<10} {record.detail}")
    return lines
