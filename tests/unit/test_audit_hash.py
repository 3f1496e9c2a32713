"""The audit chain's hash and the alarm entry's text, written out by hand for speed, stay
byte for byte what json.dumps gives: every chain already stored was hashed that way, and
`crisisbot audit verify` recomputes it."""

from __future__ import annotations

import hashlib
import json

import pytest

from crisisbot.models import Alarm, AlarmAction, EventKind, Severity
from crisisbot.store.base import entry_hash
from crisisbot.store.sqlite import _alarm_audit


def reference_hash(prev_hash, seq, at, kind, incident_id, data):
    material = json.dumps([prev_hash, seq, at, kind, incident_id, data], separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()


TRICKY = ['plain', '"quoted" \\ back/slash', "tab\tnew\nline\x00\x1f", "café ☃ 𝄞 \u2028", "", "{\"a\":1}"]


@pytest.mark.parametrize("text", TRICKY)
@pytest.mark.parametrize("incident_id", [None, "inc-1", "é\"x"])
def test_entry_hash_is_the_json_dumps_formula(text, incident_id):
    for seq in (1, 12345, 2**40):
        args = ("0" * 64, seq, "2026-11-29T00:00:00+00:00", f"alarm.{text}", incident_id, text)
        assert entry_hash(*args) == reference_hash(*args)


def test_an_alarm_entry_is_the_sorted_dump_of_its_summary():
    for alarm in (
        Alarm(source="panel", site="paris", zone="3", input="3E8", kind=EventKind.intrusion,
              severity=Severity.critical, label='Réception "hall"', action=AlarmAction.resolve,
              raw='\n1234005A"*SIA-DCS"0012R1L0#3E8[\\x]'),
        Alarm(source="web", site="s"),  # zone, input and raw None
    ):
        summary = {
            "alarm_id": alarm.id, "source": alarm.source, "site": alarm.site, "zone": alarm.zone,
            "input": alarm.input, "kind": alarm.kind.value, "severity": alarm.severity.value,
            "label": alarm.label, "action": alarm.action.value, "raw": alarm.raw,
        }
        assert _alarm_audit(alarm) == json.dumps(summary, separators=(",", ":"), sort_keys=True, default=str)
