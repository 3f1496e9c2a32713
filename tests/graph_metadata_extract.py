"""Regenerate tests/graph_v1_metadata.json from Microsoft's published Graph v1.0 CSDL.

    git --git-dir=<clone of microsoftgraph/msgraph-metadata> show HEAD:clean_v10_metadata/cleanMetadata.xml > /tmp/m.xml
    python tests/graph_metadata_extract.py /tmp/m.xml > tests/graph_v1_metadata.json

The CSDL is 3.5 MB; the strict test server (tests/graph_server.py) only needs the types
our requests can carry, so only those are kept: the ROOTS below, the complex and enum
types their structural properties reach, and the parameters of the ACTIONS we call.
Navigation properties are listed with their target type (deep insert of attachments,
extended properties); their targets are kept only when they are ROOTS themselves.
The file is written from the CSDL alone - never from the SDK's models or our own code -
so the server rejects what Graph rejects, not what we expect.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from typing import Any

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
NAMESPACE = "microsoft.graph"
ROOTS = [
    "onlineMeeting", "meetingParticipants", "meetingParticipantInfo", "lobbyBypassSettings", "event", "attendee",
    "message", "itemBody", "recipient", "emailAddress", "attachment", "fileAttachment", "attachmentItem",
    "chatMessage", "dateTimeTimeZone", "internetMessageHeader", "singleValueLegacyExtendedProperty",
]
# bound actions we call: name -> binding type (several actions share a name)
ACTIONS = {"createOrGet": "Collection(graph.onlineMeeting)", "sendMail": "graph.user",
           "createUploadSession": "Collection(graph.attachment)", "send": "graph.message"}


def _local(type_name: str) -> str:
    """'graph.x' / 'microsoft.graph.x' / 'Collection(graph.x)' -> 'x' (Edm types unchanged)."""
    inner = type_name[len("Collection("):-1] if type_name.startswith("Collection(") else type_name
    for prefix in ("graph.", NAMESPACE + "."):
        if inner.startswith(prefix):
            return inner[len(prefix):]
    return inner


def _property(element: ET.Element, navigation: bool = False) -> dict[str, Any]:
    type_name = element.get("Type", "")
    entry: dict[str, Any] = {"type": _local(type_name), "collection": type_name.startswith("Collection(")}
    entry["nullable"] = element.get("Nullable", "true") != "false"
    if navigation:
        entry["navigation"] = True
    return entry


def extract(csdl_path: str) -> dict[str, Any]:
    root = ET.parse(csdl_path).getroot()
    schema = next(s for s in root.iter(EDM + "Schema") if s.get("Namespace") == NAMESPACE)
    structured = {e.get("Name"): e for e in schema if e.tag in (EDM + "EntityType", EDM + "ComplexType")}
    enums = {e.get("Name"): e for e in schema if e.tag == EDM + "EnumType"}
    types: dict[str, Any] = {}
    wanted_enums: set[str] = set()
    pending = list(ROOTS)
    while pending:
        name = pending.pop()
        if name in types:
            continue
        element = structured[name]
        entry: dict[str, Any] = {
            "kind": "entity" if element.tag == EDM + "EntityType" else "complex",
            "base": _local(element.get("BaseType", "")) or None,
            "abstract": element.get("Abstract") == "true",
            "properties": {},
        }
        for child in element:
            if child.tag == EDM + "Property":
                entry["properties"][child.get("Name")] = _property(child)
            elif child.tag == EDM + "NavigationProperty":
                entry["properties"][child.get("Name")] = _property(child, navigation=True)
            else:
                continue
            target = entry["properties"][child.get("Name")]["type"]
            if target in enums:
                wanted_enums.add(target)
            elif target in structured and (child.tag == EDM + "Property" or target in ROOTS):
                pending.append(target)
        if entry["base"]:
            pending.append(entry["base"])
        types[name] = entry
    actions: dict[str, Any] = {}
    for action in schema.iter(EDM + "Action"):
        name = action.get("Name")
        params = action.findall(EDM + "Parameter")
        if name not in ACTIONS or not params or params[0].get("Type") != ACTIONS[name]:
            continue
        actions[name] = {p.get("Name"): _property(p) for p in params[1:]}
        for p in actions[name].values():
            if p["type"] in enums:
                wanted_enums.add(p["type"])
            elif p["type"] in structured and p["type"] not in types:
                raise SystemExit(f"action {name} takes {p['type']}: add it to ROOTS")
    return {
        "source": "microsoftgraph/msgraph-metadata clean_v10_metadata/cleanMetadata.xml",
        "types": dict(sorted(types.items())),
        "enums": {n: [m.get("Name") for m in enums[n].findall(EDM + "Member")] for n in sorted(wanted_enums)},
        "actions": dict(sorted(actions.items())),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python tests/graph_metadata_extract.py PATH/cleanMetadata.xml > tests/graph_v1_metadata.json",
              file=sys.stderr)
        return 2
    json.dump(extract(argv[1]), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
