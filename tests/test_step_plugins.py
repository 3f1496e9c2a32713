"""Steps are plugins: found through the `crisisbot.steps` entry points, each with a Config
model, `run(ctx, config)` and a typed output that the journal keeps for crash resume."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from importlib.metadata import EntryPoint
from types import SimpleNamespace

import pytest

import crisisbot.steps as steps
from crisisbot.models import Meeting
from crisisbot.steps.meeting import MeetingStep
from crisisbot.store.base import StepRecord

AT = datetime(2030, 5, 1, 8, 0, tzinfo=timezone.utc)
BUILT_IN = {"meeting", "snapshot", "email", "escalate", "channel_card", "modbus_write", "follow_up_snapshots"}


def record(output: object) -> StepRecord:
    return StepRecord("inc-1", "1-meeting", "done", output, "", AT, AT)


def test_built_in_steps_come_from_the_installed_entry_points() -> None:
    found = steps.step_types()
    assert BUILT_IN <= set(found)
    assert all(step.action == name and step.Config.model_fields["action"] for name, step in found.items())


def test_built_in_steps_declare_what_the_runner_and_the_judge_used_to_list() -> None:
    found = steps.step_types()
    urgent = {name for name in BUILT_IN if found[name].Config.urgent}
    notifies = {name for name in BUILT_IN if found[name].Config.notifies}
    assert urgent == {"meeting", "snapshot", "email", "channel_card", "escalate"}  # not the long follow-ups
    assert notifies == {"email", "escalate", "channel_card"}


def test_a_meeting_journaled_by_an_older_release_is_read_back() -> None:
    """The shape meeting.to_json wrote before steps had typed outputs."""
    old = {"provider": "jitsi", "join_url": "https://meet.example/room", "meeting_id": "room",
           "subject": "Panic", "start": "2030-05-01T08:00:00+00:00", "end": "2030-05-01T10:00:00+00:00",
           "dial_in": None, "ics": "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"}
    step = MeetingStep(action="meeting", id="1-meeting", connector="jitsi")
    meeting = steps.kept_output(step, record(old))
    assert isinstance(meeting, Meeting)
    assert meeting.join_url == old["join_url"] and meeting.start == AT and meeting.ics.startswith(b"BEGIN:VCALENDAR")

    again = steps.step_type("meeting").dump(meeting)  # what this release writes reads back the same
    assert steps.kept_output(step, record(again)) == meeting


async def test_typed_outputs_survive_the_store(tmp_path) -> None:
    """Through SQLite and back, as after a restart: the meeting, and a summary a step returns."""
    from crisisbot.steps.email import Delivered, EmailStep
    from crisisbot.store import open_store

    meeting = Meeting("jitsi", "https://meet.example/room", "room", "Panic", AT, AT, ics=b"BEGIN:VCALENDAR")
    delivered = Delivered(recipients=2, reached=1, required=1, sent=1, rejected=["b@x.fr"], retrying=[], failed=[])
    email = EmailStep(action="email", id="2-email", to=["comite"], template="committee_alert")
    store = open_store("sqlite:///{data}/crisisbot.db", tmp_path)
    await store.open()
    try:
        await store.save_step(record(steps.step_type("meeting").dump(meeting)))
        await store.save_step(StepRecord("inc-1", "2-email", "done", steps.step_type("email").dump(delivered), "", AT, AT))
        journal = await store.get_steps("inc-1")
    finally:
        await store.close()
    step = MeetingStep(action="meeting", id="1-meeting", connector="jitsi")
    assert steps.kept_output(step, journal["1-meeting"]) == meeting
    assert steps.kept_output(email, journal["2-email"]) == delivered
    assert journal["2-email"].output["reached"] == 1  # the plain JSON lifecycle/outcome.py judges


def test_an_unreadable_journaled_output_counts_as_not_kept(caplog: pytest.LogCaptureFixture) -> None:
    step = MeetingStep(action="meeting", id="1-meeting", connector="jitsi")
    with caplog.at_level(logging.WARNING):
        assert steps.kept_output(step, record({"provider": "jitsi"})) is None
    assert "1-meeting: its journaled output is unreadable" in caplog.text


def test_snapshots_are_not_journaled() -> None:
    snapshot = steps.step_type("snapshot")
    assert snapshot.journal is False and snapshot.dump(snapshot.Output()) is None


@pytest.fixture
def with_plugins(monkeypatch: pytest.MonkeyPatch):
    def install(**extra: str) -> None:
        installed = dict(steps.available(steps.STEPS))
        installed.update({name: EntryPoint(name, value, steps.STEPS) for name, value in extra.items()})
        monkeypatch.setattr(steps, "available", lambda group: installed)
        steps.step_types.cache_clear()

    yield install
    steps.step_types.cache_clear()


async def test_a_third_party_step_is_found_and_runs(with_plugins) -> None:
    with_plugins(ping="third_party_steps:STEP")
    ping = steps.step_type("ping")
    config = ping.Config.model_validate({"action": "ping", "host": "gateway"})
    output = await ping.run(SimpleNamespace(incident=SimpleNamespace(id="inc-9")), config)  # type: ignore[arg-type]
    assert ping.dump(output) == {"host": "gateway", "incident": "inc-9"}
    assert BUILT_IN <= set(steps.step_types())


def test_the_references_a_step_declares_are_what_validate_checks() -> None:
    from crisisbot.config.crossref import declared_references
    from crisisbot.steps.escalate import EscalateStep
    from third_party_steps import PingStep

    ping = PingStep(action="ping", host="gw", tell=["comite", "bob"], via="smtp")
    assert [(path, ref.what, ref.of, name) for path, ref, name in declared_references(ping, ("steps", 3))] == [
        (("steps", 3, "tell", 0), "contacts", None, "comite"), (("steps", 3, "tell", 1), "contacts", None, "bob"),
        (("steps", 3, "via"), "connectors", "mail", "smtp")]
    escalate = EscalateStep.model_validate({"action": "escalate", "tiers": [
        {"to": ["a"]}, {"to": ["b"], "after": "5m", "reminders": {"every": "1m"}}]})
    found = {(path, name) for path, _, name in declared_references(escalate, ())}
    assert found == {(("tiers", 0, "to", 0), "a"), (("tiers", 0, "template"), "committee_alert"),
                     (("tiers", 1, "to", 0), "b"), (("tiers", 1, "template"), "committee_alert"),
                     (("tiers", 1, "reminders", "template"), "reminder")}


def test_broken_step_plugins_are_named_in_the_log_and_left_out(with_plugins, caplog) -> None:
    with_plugins(ping="third_party_steps:NOT_A_STEP", pong="third_party_steps_gone:STEP",
                 beep="third_party_steps:STEP")
    with caplog.at_level(logging.ERROR):
        found = steps.step_types()
    assert not {"ping", "pong", "beep"} & set(found) and BUILT_IN <= set(found)
    assert "step plugin 'ping' (third_party_steps:NOT_A_STEP) is not a crisisbot.steps.base.StepType" in caplog.text
    assert "step plugin 'pong' (third_party_steps_gone:STEP) cannot be imported: ModuleNotFoundError" in caplog.text
    assert "step plugin 'beep' (third_party_steps:STEP) declares action 'ping'" in caplog.text


def test_an_install_without_step_entry_points_says_how_to_fix_it(monkeypatch) -> None:
    monkeypatch.setattr(steps, "available", lambda group: {})
    steps.step_types.cache_clear()
    try:
        with pytest.raises(steps.StepsNotInstalled, match="reinstall it"):
            steps.step_types()
    finally:
        steps.step_types.cache_clear()


def test_the_modbus_step_and_connector_load_without_pymodbus() -> None:
    """pymodbus is imported when a hub opens: a site without the Modbus extra still loads
    every step (the modbus_write step among them) and validates its playbooks."""
    import subprocess
    import sys

    code = ("import sys, crisisbot.steps.modbus_write, connectors.modbus_coil, crisisbot.hubs.modbus; "
            "print('pymodbus' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

