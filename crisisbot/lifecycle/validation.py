"""Cross-reference checks of the lifecycle options, so a typo in a duty slot or a drill is refused at validation rather than discovered when nobody is alerted."""

from __future__ import annotations

import difflib
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from crisisbot.config.yamlpos import Located
from crisisbot.errors import Problem
from crisisbot.lifecycle.drills import next_run

if TYPE_CHECKING:
    from crisisbot.config.bundle import Bundle


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"unknown {kind} '{name}'" + (f"; did you mean '{close[0]}'?" if close else "")


def check_lifecycle(bundle: "Bundle", config_doc: Located, playbook_docs: dict[str, Located],
                    contact_docs: dict[tuple[str, str], Located]) -> list[Problem]:
    problems: list[Problem] = []
    contacts = set(bundle.people) | set(bundle.groups)
    templates = bundle.templates.names()
    playbooks = {p.id for p in bundle.playbooks}
    config = bundle.config
    for playbook in bundle.playbooks:
        doc = playbook_docs[playbook.id]
        if playbook.lifecycle.stand_down.template not in templates:
            problems.append(doc.problem(("lifecycle", "stand_down", "template"),
                                        _unknown("template", playbook.lifecycle.stand_down.template, templates)))
    for group_id, group in bundle.groups.items():
        doc = contact_docs[("id", group_id)]
        if group.site is not None and group.site not in config.sites:
            problems.append(doc.problem(("groups", group_id, "site"), _unknown("site", group.site, config.sites)))
        for d_index, slot in enumerate(group.duty):
            names: list[tuple[tuple[str | int, ...], str]] = [(("members", i), m) for i, m in enumerate(slot.members or [])]
            if slot.rota:
                names += [(("rota", "shifts", k, i), m) for k, shift in enumerate(slot.rota.shifts) for i, m in enumerate(shift)]
            for path, ref in names:
                if ref not in contacts:
                    problems.append(doc.problem(("groups", group_id, "duty", d_index) + path,
                                                _unknown("person or group", ref, contacts)))
    lifecycle = config.lifecycle
    if lifecycle.maintenance_playbook and lifecycle.maintenance_playbook not in playbooks:
        problems.append(config_doc.problem(("lifecycle", "maintenance_playbook"),
                                           _unknown("playbook", lifecycle.maintenance_playbook, playbooks)))
    for drill_id, drill in lifecycle.drills.items():
        at = ("lifecycle", "drills", drill_id)
        if drill.site not in config.sites:
            problems.append(config_doc.problem(at + ("site",), _unknown("site", drill.site, config.sites)))
        if drill.playbook and drill.playbook not in playbooks:
            problems.append(config_doc.problem(at + ("playbook",), _unknown("playbook", drill.playbook, playbooks)))
        try:
            next_run(drill, "UTC", datetime.now(timezone.utc))
        except ValueError as exc:
            problems.append(config_doc.problem(at + ("cron",), f"invalid crontab expression: {exc}"))
    return problems
