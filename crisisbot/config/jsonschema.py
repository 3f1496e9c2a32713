"""JSON Schemas of the YAML files, for editors' YAML language server.

The shipped files start with `# yaml-language-server: $schema=...` so a security
manager gets completion and red squiggles while typing. Trigger, connector and
camera entries are unions of every installed plugin's own `Config` model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crisisbot import plugins
from crisisbot.config.contacts import ContactsFile
from crisisbot.config.settings import DaemonConfig
from crisisbot.config.playbook import Playbook

REF = "#/$defs/{model}"


def _plugin_union(group: str, defs: dict[str, Any]) -> dict[str, Any]:
    variants = []
    for name in sorted(plugins.available(group)):
        try:
            cls = plugins.load(group, name)
        except Exception:  # noqa: BLE001 - a broken third-party plugin must not break the schema
            continue
        schema = cls.Config.model_json_schema(ref_template=REF)
        defs.update(schema.pop("$defs", {}))
        variants.append(schema)
    return {"anyOf": variants} if variants else {"type": "object"}


def config_schema() -> dict[str, Any]:
    schema = DaemonConfig.model_json_schema(ref_template=REF, by_alias=True)
    defs = schema.setdefault("$defs", {})
    triggers = _plugin_union(plugins.TRIGGERS, defs)
    connectors = _plugin_union(plugins.CONNECTORS, defs)
    schema["properties"]["triggers"]["additionalProperties"] = triggers
    schema["properties"]["connectors"]["additionalProperties"] = connectors
    defs["Site"]["properties"]["cameras"]["additionalProperties"] = connectors
    schema["title"] = "crisisbot config.yaml"
    return schema


def schemas() -> dict[str, dict[str, Any]]:
    playbook = Playbook.model_json_schema(ref_template=REF)
    playbook["title"] = "crisisbot playbook"
    contacts = ContactsFile.model_json_schema(ref_template=REF)
    contacts["title"] = "crisisbot contacts"
    return {"config.schema.json": config_schema(), "playbook.schema.json": playbook,
            "contacts.schema.json": contacts}


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
