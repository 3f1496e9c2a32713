"""The Graph SDK side parses answers without importing every model of msgraph (issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys

from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory

from connectors import graph_sdk


def test_entity_fields_are_those_of_the_generated_method() -> None:
    from msgraph.generated.models.entity import Entity

    node = JsonParseNodeFactory().get_root_parse_node(
        "application/json", json.dumps({"id": "e1", "@odata.type": "#microsoft.graph.entity"}).encode())
    ours, generated = Entity(), Entity()
    ours_fields, generated_fields = Entity.get_field_deserializers(ours), graph_sdk.GENERATED_ENTITY_FIELDS(generated)
    assert ours_fields.keys() == generated_fields.keys()
    for name in ours_fields:
        child = node.get_child_node(name)
        ours_fields[name](child)
        generated_fields[name](child)
    assert (ours.id, ours.odata_type) == (generated.id, generated.odata_type) == ("e1", "#microsoft.graph.entity")


def test_first_meeting_answer_imports_only_what_it_uses() -> None:
    """The first OnlineMeeting parsed (and its nested identities) is complete, and a fresh
    process imports a few dozen model modules for it, not msgraph's ~1,200 entities."""
    code = """
import json, sys
from connectors import graph_sdk
from connectors import graph_models as m
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
before = sum(name.startswith("msgraph.generated.models.") for name in sys.modules)
node = JsonParseNodeFactory().get_root_parse_node("application/json", json.dumps(graph_sdk._SAMPLES["OnlineMeeting"]).encode())
meeting = node.get_object_value(m.OnlineMeeting)
after = sum(name.startswith("msgraph.generated.models.") for name in sys.modules)
print(json.dumps({"added": after - before, "id": meeting.id, "url": meeting.join_web_url,
                  "organizer": meeting.participants.organizer.identity.user.display_name}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert out["id"] == "x" and out["url"].startswith("https://teams.microsoft.com/") and out["organizer"] == "d"
    assert out["added"] < 200
