"""Pre-flight of templates and templated playbook fields (issue 15).

An unknown filter, a syntax error or an undefined variable must be found by
`crisisbot validate`, at daemon start and at reload — never by the first real
alarm, when nobody would be emailed. Every playbook's templates are rendered, in
every language they exist in, against a sample alarm of each kind the playbook
matches, with undefined variables as errors (StrictUndefined).

`alarm.details` is whatever the input sent, so its keys cannot be known here: any
key renders as a placeholder. A template that fails on real details at send time
falls back to the built-in message (see `rendering.FALLBACK`), and says so.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterator

from jinja2 import Template, TemplateSyntaxError
from pydantic import BaseModel

from crisisbot.config.types import Templated
from crisisbot.config.yamlpos import Located
from crisisbot.errors import Problem
from crisisbot.models import Alarm, EventKind, Incident, IncidentStatus, Meeting, Recipient, Severity
from crisisbot.render_limits import render_capped, time_budget
from crisisbot.rendering import PARTS, error_line
from crisisbot.steps.base import StepContext, StepServices

if TYPE_CHECKING:
    from crisisbot.config.bundle import Bundle
    from crisisbot.config.playbook import Playbook


SAMPLE_TIME = datetime(2026, 3, 3, 9, 30, tzinfo=timezone.utc)


class AnyDetails(dict):
    """`alarm.details` in a pre-flight render: every key exists, as a placeholder."""

    def __missing__(self, key: Any) -> str:
        return f"<details.{key}>"


def templated_fields(step: BaseModel) -> list[str]:
    """The fields a step declares `Templated` (rendered with Jinja at run time)."""
    return [name for name, info in type(step).model_fields.items()
            if any(isinstance(m, Templated) for m in info.metadata)]


def email_variables(language: str) -> dict[str, Any]:
    """What the email step and the lifecycle (escalation, stand-down) add to the
    step context; documented in docs/playbooks.md."""
    return {
        "recipient": Recipient("sample", "Sample Person", "sample@example.org", language),
        "language": language, "camera_failures": {}, "meeting_failed": False,
        "ack_url": "https://crisisbot.example/ack/sample", "stand_down_url": "https://crisisbot.example/stand-down/sample",
        "liveview_url": None,
        # lifecycle messages
        "tier": 1, "reminder": 0, "escalated": False, "outcome": "resolved", "reason": "sample",
        "stood_down_by": "sample", "stood_down_at": SAMPLE_TIME, "meeting_ended": False,
    }


def _samples(bundle: "Bundle", playbook: "Playbook") -> Iterator[Alarm]:
    match = playbook.match
    sites = match.sites or list(bundle.config.sites) or ["sample-site"]
    site_id = sites[0]
    site = bundle.config.sites.get(site_id)
    zones: list[str | None] = [*(match.zones or list(site.zones if site else []))]
    zone = (zones or [None])[0]
    for kind in match.kinds or [EventKind.panic]:
        alarm = Alarm(source=(match.sources or ["manual"])[0], site=site_id, zone=zone,
                      input=match.inputs[0] if match.inputs else None, kind=kind,
                      severity=match.min_severity or Severity.critical, label="Sample alarm",
                      occurred_at=SAMPLE_TIME, received_at=SAMPLE_TIME, drill=bool(match.drill))
        alarm.details = AnyDetails()
        yield alarm


def _template_names(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "template" and isinstance(value, str):
                yield value
            else:
                yield from _template_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _template_names(item)


def check_templates(bundle: "Bundle", playbook_docs: dict[str, Located]) -> list[Problem]:
    templates = bundle.templates
    env = templates.strict_env
    problems: list[Problem] = []
    seen: set[tuple[str, int, str]] = set()
    services = StepServices.dry(bundle, SAMPLE_TIME)

    def report(file: str, line: int, why: str, playbook_id: str, kind: str) -> None:
        if (file, line, why) not in seen:  # once, for the first playbook that shows it
            seen.add((file, line, why))
            problems.append(Problem(file, line, 1, "", f"template fails with a sample '{kind}' alarm "
                                                       f"(playbook '{playbook_id}'): {why}"))

    for playbook in bundle.playbooks:
        doc = playbook_docs[playbook.id]
        names = sorted({*_template_names([s.model_dump() for s in playbook.steps]),
                        *_template_names(playbook.lifecycle.model_dump())} & templates.names())
        fields: list[tuple[tuple[Any, ...], Template]] = []  # compiled once, rendered per sample alarm
        for index, step in enumerate(playbook.steps):
            for name in templated_fields(step):
                source = getattr(step, name, None)
                if not isinstance(source, str):
                    continue
                path = ("steps", index, name)
                try:
                    template = env.from_string(source)
                except TemplateSyntaxError as exc:
                    problems.append(doc.problem(path, f"template error: {exc.message}"))
                    continue
                fields.append((path, template))
        for alarm in _samples(bundle, playbook):
            site = bundle.config.sites.get(alarm.site)
            incident = Incident(id="PREFLIGHT", site=alarm.site, playbook=playbook.id, status=IncidentStatus.open,
                                opened_at=SAMPLE_TIME, updated_at=SAMPLE_TIME, drill=alarm.drill,
                                title=f"{alarm.label} — {site.name if site else alarm.site}")
            meeting = Meeting("sample", "https://meet.example/sample-room", "sample", incident.title,
                              SAMPLE_TIME, SAMPLE_TIME + timedelta(hours=2))
            ctx = StepContext(services=services, incident=incident, alarm=alarm, playbook=playbook,
                              site=site, outputs={"meeting": meeting})
            base = ctx.template_context()
            for path, template in fields:
                try:
                    with time_budget():  # a runaway template is a problem, not a hung validate
                        render_capped(template, base)
                except Exception as exc:  # noqa: BLE001 - any failure here is the template's
                    problems.append(doc.problem(path, f"template fails with a sample '{alarm.kind.value}' alarm: "
                                                      f"{_why(exc, base)}"))
            for name in names:
                for language in sorted(templates.languages(name)):
                    context = {**base, **email_variables(language)}
                    for part in PARTS:
                        rel = f"{name}/{language}/{part}"
                        if not (templates.directory / rel).is_file():
                            continue
                        try:
                            with time_budget():
                                render_capped(env.get_template(rel), context)
                        except TemplateSyntaxError:
                            pass  # reported with its position by TemplateSet.check
                        except Exception as exc:  # noqa: BLE001 - UndefinedError, SecurityError, TypeError…
                            file, line = error_line(exc, templates.directory, rel)
                            report(templates.display(file), line, _why(exc, context), playbook.id, alarm.kind.value)
    return problems


_NO_ATTRIBUTE = re.compile(r"^'(?P<type>[^']+?)(?: object)?' has no attribute '(?P<attr>[^']+)'$")
_UNDEFINED = re.compile(r"^'(?P<name>[^']+)' is undefined$")
_GUARD = "; or guard it with `{% if x is defined %}` / `x | default('…')`"


def _fields(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [str(k) for k in value]
    if hasattr(type(value), "model_fields"):
        return list(type(value).model_fields)
    if dataclasses.is_dataclass(value):
        return [f.name for f in dataclasses.fields(value)]
    return []


def _why(exc: Exception, context: dict[str, Any]) -> str:
    """The error in the words of the template's author: variable and attribute names,
    with a did-you-mean, never a Python class name."""
    text = str(exc)
    if (m := _UNDEFINED.match(text)) is not None:
        close = difflib.get_close_matches(m["name"], list(context), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; variables: {', '.join(sorted(context))}"
        return f"unknown variable '{m['name']}'{hint}"
    if (m := _NO_ATTRIBUTE.match(text)) is not None:
        owner = next((k for k, v in context.items()
                      if v is not None and m["type"] in (type(v).__qualname__, f"{type(v).__module__}.{type(v).__qualname__}")), None)
        known = _fields(context[owner]) if owner else []
        close = difflib.get_close_matches(m["attr"], known, n=1)
        what = f"'{owner}'" if owner else "this value"
        hint = f"; did you mean '{owner}.{close[0]}'?" if close and owner else (
            f"; it has: {', '.join(known)}" if known else _GUARD)
        return f"{what} has no '{m['attr']}'{hint}"
    if type(exc).__name__ == "UndefinedError":
        return f"undefined value ({text}){_GUARD}"
    return text
