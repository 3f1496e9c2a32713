"""Load config.yaml, contacts, playbooks and templates into one validated `Bundle`.

Every problem of every file is collected (not just the first), so `crisisbot
validate` shows the security manager the whole list at once.
"""

from __future__ import annotations

import gc
import hashlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from pydantic import BaseModel

from crisisbot import extras, plugins
from crisisbot.config.contacts import ContactsFile, Group, Person
from crisisbot.config.settings import DaemonConfig
from crisisbot.config.errors import validate_model
from crisisbot.config.playbook import Playbook
from crisisbot.config.secrets import Policy, model_policy, never, resolve_refs
from crisisbot.config.yamlpos import Located, load_yaml
from crisisbot.errors import ConfigError, MissingExtra, Problem
from crisisbot.lifecycle import schedules
from crisisbot.models import Recipient, utcnow
from crisisbot.rendering import TemplateSet


@dataclass
class PluginConfig:
    cls: type
    config: BaseModel


@dataclass
class Bundle:
    root: Path
    config: DaemonConfig
    people: dict[str, Person]
    groups: dict[str, Group]
    playbooks: list[Playbook]
    templates: TemplateSet
    triggers: dict[str, PluginConfig] = field(default_factory=dict)
    connectors: dict[str, PluginConfig] = field(default_factory=dict)
    cameras: dict[tuple[str, str], PluginConfig] = field(default_factory=dict)
    docs: dict[str, Located] = field(default_factory=dict)
    digest: str = ""
    files: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        path = Path(self.config.paths.data)
        return path if path.is_absolute() else self.root / path

    @property
    def control_socket(self) -> Path:
        return Path(self.config.control.socket.replace("{data}", str(self.data_dir)))

    def playbook(self, playbook_id: str) -> Playbook | None:
        return next((p for p in self.playbooks if p.id == playbook_id), None)

    def members(self, ref: str, _seen: frozenset[str] = frozenset(), at: datetime | None = None) -> list[str]:
        """Person ids behind a person or group id, groups expanded recursively; duty
        schedules read at `at` (default: now)."""
        if ref in self.people:
            return [ref]
        group = self.groups.get(ref)
        if group is None or ref in _seen:
            return []
        out: list[str] = []
        listed = schedules.on_duty(self, ref, at or utcnow())[0] if group.duty else group.members  # who is on duty
        for member in listed:
            out.extend(self.members(member, _seen | {ref}, at))
        return out

    def recipients(self, refs: list[str], at: datetime | None = None) -> list[Recipient]:
        """Enabled people behind the refs, each once, in the order first named (duty at `at`)."""
        domains = {d.lower() for d in self.config.organization.domains}
        seen: dict[str, Recipient] = {}
        for ref in refs:
            for pid in self.members(ref, at=at):
                person = self.people[pid]
                if pid in seen or not person.enabled:
                    continue
                external = person.external
                if external is None:
                    external = bool(domains) and person.email.rsplit("@", 1)[-1].lower() not in domains
                seen[pid] = Recipient(pid, person.name, person.email, person.language or "",
                                      tuple(person.roles), external)
        return list(seen.values())


def _yaml_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading builds hundreds of thousands of small objects and no cycles: the cyclic
    garbage collector would rescan them again and again (3x the CPU time for 10,000
    sites, benchmarks/bench_scale.py). Reference counting still frees them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_bundle(config_path: Path, env: Mapping[str, str] | None = None) -> Bundle:
    """Load and validate everything; raise ConfigError listing every problem."""
    with _collector_paused():
        return _load_bundle(config_path, env)


def _load_bundle(config_path: Path, env: Mapping[str, str] | None) -> Bundle:
    from crisisbot.config.crossref import check_references

    config_path = Path(config_path).resolve()
    root = config_path.parent
    problems: list[Problem] = []
    hasher = hashlib.sha256()
    files: list[str] = []

    def read(path: Path, refs: Callable[[Any], Policy] = lambda data: never) -> Located | None:
        doc, found = load_yaml(path, _rel(path, root))
        files.append(doc.file)
        if path.is_file():
            hasher.update(doc.file.encode() + b"\0" + path.read_bytes() + b"\0")
        problems.extend(found)
        if found or doc.data is None:
            return None
        problems.extend(resolve_refs(doc, root, env, refs(doc.data)))
        if not isinstance(doc.data, dict):
            problems.append(doc.problem((), "expected a mapping of keys at the top of the file"))
            return None
        return doc

    if not config_path.is_file():
        raise ConfigError([Problem(str(config_path), 1, 1, "", "configuration file not found")])
    config_doc = read(config_path, lambda data: model_policy(DaemonConfig, _plugin_owner(data)))
    config = DaemonConfig()
    config_ok = False
    if config_doc is not None:
        parsed, found = validate_model(DaemonConfig, config_doc)
        problems.extend(found)
        config_ok = parsed is not None
        config = parsed if parsed is not None else config
    docs: dict[str, Located] = {config_doc.file: config_doc} if config_doc else {}

    def under(name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else root / path

    people: dict[str, Person] = {}
    groups: dict[str, Group] = {}
    origin: dict[tuple[str, str], Located] = {}
    for path in _yaml_files(under(config.paths.contacts)):
        doc = read(path)
        if doc is None:
            continue
        docs[doc.file] = doc
        contacts, found = validate_model(ContactsFile, doc)
        problems.extend(found)
        if contacts is None:
            continue
        sections: tuple[tuple[str, dict[str, Any], dict[str, Any]], ...] = (  # the same rule for both kinds of id
            ("people", people, contacts.people), ("groups", groups, contacts.groups))
        for section, target, entries in sections:
            for key, value in entries.items():
                if key in people or key in groups:
                    first = origin[("id", key)]
                    problems.append(doc.problem((section, key), f"duplicate id '{key}' (already defined in {first.file})", at_key=True))
                    continue
                target[key] = value
                origin[("id", key)] = doc

    playbooks: list[Playbook] = []
    playbook_docs: dict[str, Located] = {}
    for path in _yaml_files(under(config.paths.playbooks)):
        doc = read(path)
        if doc is None:
            continue
        docs[doc.file] = doc
        playbook, found = validate_model(Playbook, doc)
        problems.extend(found)
        if playbook is None:
            continue
        if playbook.id in playbook_docs:
            problems.append(doc.problem(("id",), f"duplicate playbook id '{playbook.id}' (already defined in {playbook_docs[playbook.id].file})"))
            continue
        playbook_docs[playbook.id] = doc
        playbooks.append(playbook)

    templates = TemplateSet(under(config.paths.templates), root)
    template_problems = templates.check(root)  # kept apart: the checks below do not depend on them
    for file in sorted(templates.directory.rglob("*")) if templates.directory.is_dir() else []:
        if file.is_file():
            hasher.update(_rel(file, root).encode() + b"\0" + file.read_bytes() + b"\0")

    bundle = Bundle(root, config, people, groups, playbooks, templates, docs=docs,
                    digest=hasher.hexdigest(), files=files)
    if config_doc is not None:
        problems.extend(_load_plugins(bundle, config_doc))
        problems.extend(_check_blur_installed(bundle, config_doc))
    if config_ok and not problems:
        # cross-references only mean something once every file is valid on its own;
        # before that they would mostly repeat the problems above
        assert config_doc is not None  # config_ok implies config.yaml was read
        problems.extend(check_references(bundle, config_doc, playbook_docs, origin))
    if config_ok and not problems:
        from crisisbot.config.templatecheck import check_templates  # renders: only once names resolve

        problems.extend(check_templates(bundle, playbook_docs))
    problems.extend(template_problems)
    if problems:
        raise ConfigError(_sorted(problems))
    bundle.docs = {}  # positions only serve the checks above: ~100 MB for 10,000 sites
    return bundle


def _plugin_owner(raw: Any) -> Callable[[tuple[Any, ...]], tuple[Any, tuple[Any, ...]] | None]:
    """For the secret-reference policy: which plugin's `Config` owns a config.yaml path."""

    def owner(path: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]] | None:
        if len(path) >= 2 and path[0] in ("triggers", "connectors"):
            group = plugins.TRIGGERS if path[0] == "triggers" else plugins.CONNECTORS
            node, rest = raw.get(path[0], {}), path[2:]
            node = node.get(path[1]) if isinstance(node, dict) else None
        elif len(path) >= 4 and path[0] == "sites" and path[2] == "cameras":
            group, rest = plugins.CONNECTORS, path[4:]
            node = raw.get("sites", {})
            for part in path[1:4]:
                node = node.get(part) if isinstance(node, dict) else None
        else:
            return None
        try:
            return plugins.load(group, str(node["type"])).Config, rest
        except Exception:  # noqa: BLE001 - no or unknown type: reported by _load_plugins
            return None, rest

    return owner if isinstance(raw, dict) else (lambda path: None)


def _load_plugins(bundle: Bundle, doc: Located) -> list[Problem]:
    """Validate each trigger/connector/camera mapping with the plugin's own Config model.

    Works on the raw YAML so plugin problems are reported even when another part
    of config.yaml is invalid.
    """
    problems: list[Problem] = []
    raw = doc.data if isinstance(doc.data, dict) else {}

    def section(*path: str) -> dict[str, Any]:
        node: Any = raw
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}

    def one(group: str, mapping: Any, path: tuple[Any, ...]) -> PluginConfig | None:
        if not isinstance(mapping, dict) or "type" not in mapping:
            problems.append(doc.problem(path + ("type",), "required field is missing"))
            return None
        try:
            cls = plugins.load(group, str(mapping["type"]))
        except (plugins.UnknownPlugin, plugins.MissingExtra) as exc:
            problems.append(doc.problem(path + ("type",), str(exc)))
            return None
        except ImportError as exc:
            problems.append(doc.problem(path + ("type",), f"plugin cannot be imported: {exc}"))
            return None
        parsed, found = validate_model(cls.Config, doc, path)
        problems.extend(found)
        return PluginConfig(cls, parsed) if parsed is not None else None

    for name, mapping in section("triggers").items():
        if (pc := one(plugins.TRIGGERS, mapping, ("triggers", name))) is not None:
            bundle.triggers[name] = pc
    for name, mapping in section("connectors").items():
        if (pc := one(plugins.CONNECTORS, mapping, ("connectors", name))) is not None:
            bundle.connectors[name] = pc
    for site_id in section("sites"):
        for cam_id, mapping in section("sites", site_id, "cameras").items():
            if (pc := one(plugins.CONNECTORS, mapping, ("sites", site_id, "cameras", cam_id))) is not None:
                bundle.cameras[(site_id, cam_id)] = pc
    return problems


def _check_blur_installed(bundle: Bundle, doc: Located) -> list[Problem]:
    """Snapshots reach external people only with their faces blurred, which needs OpenCV:
    without the 'blur' extra such a site must not validate (it would fail at the alarm)."""
    if not bundle.cameras or extras.installed("blur"):
        return []
    if not any(r.external for r in bundle.recipients(list(bundle.people))):
        return []
    site_id, _ = next(iter(bundle.cameras))
    why = "blurring faces in the snapshots sent to external people"
    return [doc.problem(("sites", site_id, "cameras"), str(MissingExtra(why, "blur", "cv2")), at_key=True)]


def _sorted(problems: list[Problem]) -> list[Problem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.file, p.line, p.column))
