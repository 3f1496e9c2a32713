"""Post-incident report (Markdown, HTML, optionally PDF) for the post-crisis review:
timeline, deliveries, acknowledgements with response times, meeting, snapshots, and
the audit chain's hash so the reader can check the log it was built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from crisisbot.errors import CrisisbotError, MissingExtra, ReportError
from crisisbot.lifecycle.context import get_incident, incident_context
from crisisbot.models import Alarm, DeliveryStatus, Incident
from crisisbot.rendering import clean_text
from crisisbot.timeline import _describe
from crisisbot.runtime import Runtime
from crisisbot.steps.snapshot import SnapshotSet
from crisisbot.store.base import DeliveryRecord, Store

FORMATS = ("md", "html", "pdf")
_SKIP = {"step.running", "delivery.sending"}


@dataclass
class Report:
    incident: Incident
    alarms: list[Alarm]
    timeline: list[dict[str, Any]]
    deliveries: list[DeliveryRecord]
    failed: list[DeliveryRecord]
    acks: list[dict[str, Any]]
    meeting: dict[str, Any] | None
    snapshots: list[dict[str, Any]]
    audit_ok: bool
    audit_head: str
    audit_last: str | None
    generated_at: datetime
    stand_down: dict[str, Any] = field(default_factory=dict)
    real_incidents: list[dict[str, Any]] = field(default_factory=list)  # of a drill: real alarms meanwhile

    @property
    def first_ack_seconds(self) -> float | None:
        return self.acks[0]["after_seconds"] if self.acks else None


async def build(runtime: Runtime, incident_id: str, now: datetime) -> Report:
    store: Store = runtime.store
    incident = await get_incident(runtime, incident_id)
    entries = await store.audit_entries(incident.id)
    deliveries = list((await store.get_deliveries(incident.id)).values())
    first_sent: dict[str, datetime] = {}
    for entry in entries:
        if entry.kind == "delivery.sent":
            first_sent.setdefault(entry.data.get("person", ""), entry.at)
    acks = []
    for ack in await store.get_acks(incident.id):
        person = runtime.bundle.people.get(ack.person_id)
        alerted = first_sent.get(ack.person_id)
        acks.append({
            "person": ack.person_id, "name": person.name if person else ack.person_id,
            "roles": ", ".join(person.roles) if person else "", "response": ack.response, "via": ack.via,
            "at": ack.at, "after_seconds": round((ack.at - incident.opened_at).total_seconds(), 1),
            "after_alert_seconds": round((ack.at - alerted).total_seconds(), 1) if alerted else None,
        })
    meeting, snapshots = None, []
    steps = await store.get_steps(incident.id)
    for record in steps.values():
        output = record.output or {}
        if "join_url" in output:
            meeting = {"provider": output.get("provider"), "join_url": output["join_url"]}
    playbook = runtime.bundle.playbook(incident.playbook)
    if playbook is not None:
        try:
            ctx = await incident_context(runtime, incident)
            for step_id, out in ctx.outputs.items():
                if isinstance(out, SnapshotSet):
                    snapshots += [{"step": step_id, "camera": s.camera, "taken_at": s.taken_at,
                                   "file": s.image.filename, "bytes": len(s.image.data)} for s in out.snapshots]
                    snapshots += [{"step": step_id, "camera": c, "failed": why} for c, why in out.failures.items()]
        except CrisisbotError:
            pass  # the playbook changed since: the report shows what the store still holds
    verdict = await store.verify_audit()
    return Report(
        incident=incident, alarms=await store.incident_alarms(incident.id),
        timeline=[{"at": e.at, "kind": e.kind, "text": _describe(e.kind, e.data), "hash": e.hash}
                  for e in entries if e.kind not in _SKIP],
        deliveries=deliveries,
        failed=[d for d in deliveries if d.status in (DeliveryStatus.failed, DeliveryStatus.rejected)],
        acks=acks, meeting=meeting, snapshots=snapshots, audit_ok=verdict.ok, audit_head=verdict.head,
        audit_last=entries[-1].hash if entries else None, generated_at=now,
        stand_down=incident.data.get("stand_down", {}),
        real_incidents=[e.data for e in entries if e.kind == "drill.real_incident"],
    )


def _one_line(value: Any) -> Any:
    """Every value printed in a report is one line: a label or a stand-down reason
    with CR/LF must not add lines (a fake link) of its own choosing."""
    return clean_text(value) if isinstance(value, str) and value != "\n" else value


_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|#"})


def _markdown_safe(value: Any) -> Any:
    """Also no Markdown of its own: `[Click](https://evil)` stays text, `|` stays in its cell."""
    value = _one_line(value)
    return value.translate(_MARKDOWN) if isinstance(value, str) and value != "\n" else value


def render(report: Report, fmt: str) -> bytes:
    if fmt not in FORMATS:
        raise ReportError(f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}")
    env = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "report_templates")),
                      autoescape=select_autoescape(enabled_extensions=("html",)), trim_blocks=True, lstrip_blocks=True,
                      finalize=_markdown_safe if fmt == "md" else _one_line)
    if fmt == "md":
        return env.get_template("report.md").render(r=report).encode()
    page = env.get_template("report.html").render(r=report)
    if fmt == "html":
        return page.encode()
    try:
        from weasyprint import HTML  # optional: PDF only where the package is installed
    except ImportError as exc:
        missing = MissingExtra("a PDF report", "pdf", "weasyprint")
        raise ReportError(f"{missing} (or use --format html and print it)") from exc
    return HTML(string=page).write_pdf()
