"""Second validation layer: names that must point at something that exists.

The per-file schemas cannot know that a playbook's `to: [comite]` names a group
defined in another file; these checks do, and point at the exact field.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from pydantic import BaseModel

from connectors.base import Camera, Connector, Mailer
from crisisbot.config.types import Reference
from crisisbot.config.yamlpos import Located
from crisisbot.errors import Problem

if TYPE_CHECKING:
    from crisisbot.config.bundle import Bundle


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else (f"; known: {', '.join(known)}" if known else "; none is defined")
    return f"unknown {kind} '{name}'{hint}"


def check_references(
    bundle: "Bundle",
    config_doc: Located,
    playbook_docs: dict[str, Located],
    contact_docs: dict[tuple[str, str], Located],
) -> list[Problem]:
    problems: list[Problem] = []
    config = bundle.config
    contact_ids = set(bundle.people) | set(bundle.groups)

    def connectors_of(kind: str | None) -> set[str]:
        """Connector names, of one capability (`Connector.kind`: mail, meeting…) or all."""
        return {n for n, pc in bundle.connectors.items()
                if kind is None or (issubclass(pc.cls, Connector) and pc.cls.kind == kind)}

    mailers = connectors_of(Mailer.kind)

    # config.yaml
    for index, name in enumerate(config.mail.via):
        if name not in mailers:
            problems.append(config_doc.problem(("mail", "via", index), _unknown("mail connector", name, mailers)))
    if config.mail.fallback is not None:
        for index, contact in enumerate(config.mail.fallback.to):
            if contact not in contact_ids:
                problems.append(config_doc.problem(("mail", "fallback", "to", index),
                                                   _unknown("contact group or person", contact, contact_ids)))
        for index, name in enumerate(config.mail.fallback.via):
            if name not in mailers:
                problems.append(config_doc.problem(("mail", "fallback", "via", index),
                                                   _unknown("mail connector", name, mailers)))
    for site_id, site in config.sites.items():
        for zone_id, zone in site.zones.items():
            for index, cam in enumerate(zone.cameras):
                if cam not in site.cameras:
                    problems.append(config_doc.problem(("sites", site_id, "zones", zone_id, "cameras", index),
                                                       _unknown("camera", cam, site.cameras)))
        for cam_id, pc in ((c, bundle.cameras.get((site_id, c))) for c in site.cameras):
            if pc is not None and not issubclass(pc.cls, Camera):
                problems.append(config_doc.problem(("sites", site_id, "cameras", cam_id, "type"),
                                                   "connector type is not a camera"))
    for name, pc in bundle.triggers.items():  # the sites an input's configuration declares (Reference("sites"))
        sites = [(path, site_name) for path, ref, site_name in declared_references(pc.config, ("triggers", name))
                 if ref.what == "sites"]
        if not sites and isinstance(pc.config.model_dump().get("site"), str):  # an input that declares none
            sites = [(("triggers", name, "site"), pc.config.model_dump()["site"])]
        for path, site_name in sites:
            if site_name not in config.sites:
                problems.append(config_doc.problem(path, _unknown("site", site_name, config.sites)))

    # contacts
    for group_id, group in bundle.groups.items():
        doc = contact_docs[("id", group_id)]
        for index, member in enumerate(group.members):
            if member not in contact_ids:
                problems.append(doc.problem(("groups", group_id, "members", index), _unknown("person or group", member, contact_ids)))
            elif member == group_id or group_id in _reachable_groups(bundle, member):
                problems.append(doc.problem(("groups", group_id, "members", index), f"group '{member}' contains '{group_id}': groups must not form a cycle"))

    # playbooks
    trigger_zones = {z for pc in bundle.triggers.values() for z in _static_zones(pc.config.model_dump())}
    all_cameras = {cam for site in config.sites.values() for cam in site.cameras}
    templates = bundle.templates.names()

    def lookup(ref: Reference, name: str, step_id: str | None, step_ids: dict[str, int],
               match_sites: list[str]) -> tuple[str, Iterable[str], bool]:
        """(what it is called in messages, the names it may take, whether `name` is one)."""
        if ref.what == "contacts":
            return "contact group or person", contact_ids, name in contact_ids
        if ref.what == "templates":
            return "template", templates, name in templates
        if ref.what == "cameras":  # a camera of one of the sites the playbook matches
            found = any(name in config.sites[s].cameras for s in match_sites if s in config.sites)
            return "camera", all_cameras, found
        if ref.what == "steps":  # an earlier step (this one is already in step_ids)
            label = f"earlier {ref.of} step" if ref.of else "earlier step"
            return label, step_ids, name in step_ids and name != step_id
        kinds = connectors_of(ref.of)
        return (f"{ref.of} connector" if ref.of else "connector"), kinds, name in kinds

    for playbook in bundle.playbooks:
        doc = playbook_docs[playbook.id]
        match_sites = playbook.match.sites or list(config.sites)
        step_ids: dict[str, int] = {}
        for index, site_name in enumerate(playbook.match.sites or []):
            if site_name not in config.sites:
                problems.append(doc.problem(("match", "sites", index), _unknown("site", site_name, config.sites)))
        zone_sites = [config.sites[s] for s in (playbook.match.sites or config.sites) if s in config.sites]
        if not any(site.dynamic_zones for site in zone_sites):
            known_zones = {z for site in zone_sites for z in site.zones} | trigger_zones
            for index, zone_name in enumerate(playbook.match.zones or []):
                if zone_name not in known_zones:
                    problems.append(doc.problem(("match", "zones", index), _unknown("zone", zone_name, known_zones) + (
                        " (zones are listed under sites.<site>.zones; set `dynamic_zones: true` on a site "
                        "whose inputs name zones at run time)")))
        inputs = _known_inputs(bundle, playbook.match.sources) if playbook.match.inputs else None
        if inputs is not None:  # None: a source names its inputs at run time, nothing to check
            for index, name in enumerate(playbook.match.inputs or []):
                if name not in inputs:
                    problems.append(doc.problem(("match", "inputs", index), _unknown("input", name, inputs) + (
                        " (inputs of the playbook's sources: Modbus `device/input` names and devices, "
                        "DC-09 accounts, demo inputs)")))
        for index, source in enumerate(playbook.match.sources or []):
            if source not in config.triggers and source != "manual":
                problems.append(doc.problem(("match", "sources", index), _unknown("alarm source", source, [*config.triggers, "manual"])))
        for s_index, step in enumerate(playbook.steps):
            at = ("steps", s_index)
            assert step.id is not None  # the playbook's validator gives every step an id
            if step.id in step_ids:
                problems.append(doc.problem(at + ("id",), f"duplicate step id '{step.id}'"))
            for n_index, need in enumerate(step.needs or []):
                if need not in step_ids:
                    problems.append(doc.problem(at + ("needs", n_index), _unknown("earlier step", need, step_ids)))
            step_ids[step.id] = s_index
            for path, ref, name in declared_references(step, at):
                label, known, found = lookup(ref, name, step.id, step_ids, match_sites)
                if not found:
                    problems.append(doc.problem(path, _unknown(label, name, known)))
    from crisisbot.lifecycle.validation import check_lifecycle  # tiers, duty slots, drills

    problems.extend(check_lifecycle(bundle, config_doc, playbook_docs, contact_docs))
    return problems


def declared_references(model: BaseModel, at: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Reference, str]]:
    """(field path, its Reference, a name it gives) for every name in a step or an input's
    configuration, nested models (escalation tiers, Modbus devices) included: what is
    declared is what gets checked."""
    for field_name, info in type(model).model_fields.items():
        value = getattr(model, field_name)
        path = at + (field_name,)
        ref = next((m for m in info.metadata if isinstance(m, Reference)), None)
        if ref is not None:
            if isinstance(value, str) and value not in ref.keywords:
                yield path, ref, value
            elif isinstance(value, list):
                yield from ((path + (i,), ref, v) for i, v in enumerate(value) if isinstance(v, str))
        elif isinstance(value, BaseModel):
            yield from declared_references(value, path)
        elif isinstance(value, (list, dict)):  # a list of tiers, a mapping of Modbus devices
            for key, item in (enumerate(value) if isinstance(value, list) else value.items()):
                if isinstance(item, BaseModel):
                    yield from declared_references(item, path + (key,))


def _known_inputs(bundle: "Bundle", sources: list[str] | None) -> set[str] | None:
    """Input names the playbook's sources can send, or None when one of them names
    inputs at run time (manual alarms, webhook, MQTT topics): then nothing is checked."""
    names = sources if sources is not None else [*bundle.triggers, "manual"]
    known: set[str] = set()
    for name in names:
        pc = bundle.triggers.get(name)
        if pc is None:
            return None  # `manual`, or an unknown source (reported on its own)
        data = pc.config.model_dump()
        kind = data.get("type")
        if kind == "modbus":
            for device, spec in data.get("devices", {}).items():
                known |= {device, *(f"{device}/{i['name']}" for i in spec.get("inputs", []))}
        elif kind == "sia-dc09":
            known |= {a["account"] for a in data.get("accounts", [])}
        elif kind == "demo":
            known |= {data["input"]} if data.get("input") else set()
        else:
            return None
    return known


def _static_zones(node: Any) -> Iterator[str]:
    """Zone names a trigger's configuration spells out (`zone: accueil`, DC-09 `zones:`),
    not templates such as MQTT's `'{topic[1]}'`, which only the site's `dynamic_zones` covers."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "zone" and isinstance(value, str) and "{" not in value:
                yield value
            elif key == "zones" and isinstance(value, dict):
                yield from (str(k) for k in value)
                yield from (v for v in value.values() if isinstance(v, str))
            else:
                yield from _static_zones(value)
    elif isinstance(node, list):
        for item in node:
            yield from _static_zones(item)


def _reachable_groups(bundle: "Bundle", start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        group = bundle.groups.get(stack.pop())
        if group is None:
            continue
        for member in group.members:
            if member in bundle.groups and member not in seen:
                seen.add(member)
                stack.append(member)
    return seen
