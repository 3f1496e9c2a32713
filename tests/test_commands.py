"""Typed commands: one handler behind every front door (CLI through the daemon, CLI in
this process, console, JSON API, personal links), one wire form for the control socket."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from security.console_helpers import client, console_daemon, enable_console, login
from crisisbot.cli import main
from crisisbot.commands import (
    COMMANDS, Acknowledge, Acknowledged, AlarmTaken, AuditRecorded, Cancel, Cancelled, DaemonStatus, DrillStarted,
    AuditItem, AuditsRecorded, Health, HealthReport, LinksRevoked, ListSessions, RecordAudit, RecordAudits, Reload, Reloaded, RevokeLinks, RevokeSessions,
    RunDrill, SessionsListed, SessionsRevoked,
    SilenceAdd, SilenceAdded, SilenceEnd, SilenceEnded, StandDown, Status, StoodDown, TriggerAlarm, decode,
    decode_result, encode, encode_result,
)
from crisisbot.config.bundle import load_bundle
from crisisbot.control import ask_daemon
from crisisbot.errors import CommandInvalid
from crisisbot.lifecycle.acks import ACK, CANCEL, STAND_DOWN
from crisisbot.models import Alarm, IncidentStatus
from crisisbot.store import opened_store
from daemon_helpers import fire_manual, running_daemon

AT = datetime(2026, 12, 1, 14, 0, tzinfo=timezone.utc)

EXAMPLES = [
    (TriggerAlarm(alarm=Alarm(source="manual", site="paris-hq", zone="accueil", label="Panique")),
     AlarmTaken(alarm_id="a1", incident_id=None)),
    (Reload(), Reloaded(ok=False)),
    (Status(), DaemonStatus(digest="abc", inputs={"hook": {"type": "webhook", "counters": {"frames": 3}}})),
    (Acknowledge(incident_id="i1", person="alice", response="joining", actor="alice", via="link"),
     Acknowledged(incident_id="i1", person="alice", new=True, satisfied=False, person_name="Alice Martin")),
    (StandDown(incident_id="i1", outcome=IncidentStatus.false_alarm, reason="chat", actor="operator", via="console"),
     StoodDown(incident_id="i1", outcome="false_alarm", notified=4, sent=4, meeting="left open")),
    (Cancel(incident_id="i1", actor="bruno"), Cancelled(incident_id="i1")),
    (SilenceAdd(site="paris-hq", duration=3600, reason="travaux", input="porte-1", playbook="panic", starts_at=AT),
     SilenceAdded(silence_id="s1", ends_at=AT)),
    (SilenceEnd(silence_id="s1"), SilenceEnded(ended=True)),
    (RunDrill(drill="accueil"), DrillStarted(drill="accueil", alarm_id="a2")),
    (ListSessions(), SessionsListed(sessions=[{"id": "x", "user": "operator", "client": None}])),
    (RevokeSessions(user="operator", actor="admin"), SessionsRevoked(revoked=2)),
    (RevokeLinks(link="http://127.0.0.1/ack/token", reason="forwarded"),
     LinksRevoked(incident_id="i1", person="chloe", scope="link")),
    (RecordAudit(kind="link.refused", incident_id="i1", data={"client": "10.0.0.9", "count": 3}, hold=True,
                 actor="web", via="web"),
     AuditRecorded(seq=42, at=AT, prev_hash="0" * 64, hash="f" * 64)),
    (RecordAudits(entries=[AuditItem(kind="console.login_busy", data={"client": "10.0.0.9", "count": 40}),
                           AuditItem(kind="link.refused", incident_id="i1", data={"client": "10.0.0.8", "count": 2})],
                  hold=True, actor="web", via="web"),
     AuditsRecorded(count=2)),
    (Health(actor="web", via="web"),
     HealthReport(status="degraded", checks={"supervision": {"status": "degraded", "queue": 3}})),
]


def test_the_examples_cover_every_command():
    assert {type(command) for command, _ in EXAMPLES} == set(COMMANDS.values())


@pytest.mark.parametrize(("command", "result"), EXAMPLES, ids=[c.name for c, _ in EXAMPLES])
def test_every_command_and_its_result_round_trip_through_the_socket_wire_form(command, result):
    sent = json.loads(json.dumps(encode(command)))
    assert decode(sent) == command and type(decode(sent)) is type(command)
    answered = json.loads(json.dumps(encode_result(result)))
    assert decode_result(type(command), answered) == result


@pytest.mark.parametrize(("message", "says"), [
    ({"op": "trigger", "alarm": {}}, "older crisisbot"),
    ({"v": 99, "command": "status"}, "control protocol v99 is not spoken here"),
    ({"v": 1, "command": "explode"}, "unknown command 'explode'; known: acknowledge, audit-record, audit-records, cancel"),
    ({"v": 1, "command": "stand-down", "fields": {"incident_id": "x"}},
     "bad fields for command 'stand-down': outcome: Field required; reason: Field required"),
    ({"v": 1, "command": "status", "fields": {"bogus": 1}}, "bogus: Extra inputs are not permitted"),
    (["status"], "a control request is a JSON object"),
])
def test_a_bad_request_is_refused_in_words(message, says):
    with pytest.raises(CommandInvalid, match=says):
        decode(message)


async def test_the_daemon_answers_bad_requests_with_typed_refusals_and_keeps_serving(workspace):
    async with running_daemon(workspace) as daemon:
        path = daemon.bundle.control_socket
        old = await ask_daemon(path, {"op": "status"})
        unknown = await ask_daemon(path, {"v": 1, "command": "explode"})
        status = await ask_daemon(path, encode(Status()))
    assert old["ok"] is False and old["error"]["type"] == "CommandInvalid" and "older crisisbot" in old["error"]["message"]
    assert unknown["ok"] is False and "unknown command 'explode'" in unknown["error"]["message"]
    assert status["ok"] is True and status["result"]["digest"] == daemon.bundle.digest


async def test_a_resent_command_gets_the_first_answer_and_acts_once(workspace):
    async with running_daemon(workspace) as daemon:
        command = TriggerAlarm(alarm=Alarm(source="manual", site="paris-hq", zone="accueil", label="Une fois"))
        first = await daemon.commands.dispatch(command)
        again = await daemon.commands.dispatch(command)
        await daemon.engine.idle()
        incidents = await daemon.runtime.store.list_incidents()
        with pytest.raises(CommandInvalid, match="already used for another command"):
            await daemon.commands.dispatch(Status(command_id=command.command_id))
    assert first == again and first.incident_id is not None
    assert [i.id for i in incidents] == [first.incident_id]


def test_the_cli_refuses_in_process_what_only_the_daemon_can_do(workspace, capsys):
    assert main(["-c", str(workspace.config_path), "cancel", "deadbeef"]) == 1
    assert "cancelling needs the running daemon (the cancel window only lasts seconds)" in capsys.readouterr().err


async def test_a_refusal_by_the_daemon_is_a_clear_cli_error(workspace, capsys):
    argv = ["-c", str(workspace.config_path), "stand-down", "deadbeef", "--resolved", "--reason", "test"]
    async with running_daemon(workspace):
        code = await asyncio.to_thread(main, argv)
    err = capsys.readouterr().err
    assert code == 1 and "crisisbot: the daemon refused: IncidentNotFound: no incident 'deadbeef'" in err


# -- the --site the CLI was given, with and without a daemon ---------------------------------------

def add_montreal(ws: Any) -> None:
    ws.edit_config(lambda d: d["sites"].update(montreal={"name": "Bureau Montréal", "timezone": "America/Toronto"}))


async def silences(ws: Any) -> list[Any]:
    bundle = load_bundle(ws.config_path)
    async with opened_store(bundle.config.store.url, bundle.data_dir) as store:
        return await store.list_silences()


def silence_add(ws: Any, by: str) -> list[str]:
    return ["-c", str(ws.config_path), "silence", "add", "--site", "montreal", "--for", "1h",
            "--start", "2026-12-01T09:00", "--reason", "travaux", "--by", by]


def test_silence_add_without_daemon_reads_start_in_the_given_sites_time_zone(workspace, capsys):
    add_montreal(workspace)  # the second site: the first one (paris-hq) is in another time zone
    assert main(silence_add(workspace, "tech")) == 0
    (silence,) = asyncio.run(silences(workspace))
    assert silence.site == "montreal"
    assert silence.starts_at == datetime(2026, 12, 1, 9, 0, tzinfo=ZoneInfo("America/Toronto"))


async def test_silence_add_means_the_same_start_through_the_daemon_and_in_process(workspace):
    add_montreal(workspace)
    async with running_daemon(workspace):
        assert await asyncio.to_thread(main, silence_add(workspace, "through-daemon")) == 0
    assert await asyncio.to_thread(main, silence_add(workspace, "in-process")) == 0
    found = {s.created_by: s.starts_at for s in await silences(workspace)}
    assert found["through-daemon"] == found["in-process"] == datetime(2026, 12, 1, 9, 0,
                                                                       tzinfo=ZoneInfo("America/Toronto"))


# -- one command, one audit entry, whatever the front door -------------------------------------------

def _stood_down(entries: list[Any]) -> dict[str, Any]:
    (entry,) = [e.data for e in entries if e.kind == "incident.stood_down"]
    return entry


async def test_stand_down_audits_the_same_entry_from_every_front_door(workspace):
    enable_console(workspace)
    argv = ["-c", str(workspace.config_path)]
    doors: dict[str, dict[str, Any]] = {}
    async with console_daemon(workspace) as daemon:
        store = daemon.runtime.store
        incident = await fire_manual(daemon)
        assert await asyncio.to_thread(main, [*argv, "stand-down", incident.id, "--false-alarm", "--reason",
                                               "Levée de doute", "--by", "operator"]) == 0
        doors["cli through the daemon"] = _stood_down(await store.audit_entries(incident.id))

        incident = await fire_manual(daemon)
        async with client(daemon) as http:
            assert (await login(http, "operator")).status_code == 303
            form = await http.post(f"/console/incidents/{incident.id}/stand-down",
                                   data={"outcome": "false_alarm", "reason": "Levée de doute"})
        assert form.status_code == 303
        doors["console"] = _stood_down(await store.audit_entries(incident.id))

        incident = await fire_manual(daemon)
        token = daemon.runtime.signer.sign(incident.id, "operator", STAND_DOWN, 3600)
        async with client(daemon) as http:
            link = await http.post(f"/stand-down/{token}", data={"outcome": "false_alarm", "reason": "Levée de doute"},
                                   headers={"accept": "application/json"})
        assert link.status_code == 200, link.text
        doors["personal link"] = _stood_down(await store.audit_entries(incident.id))

    code = await asyncio.to_thread(main, [*argv, "trigger", "--site", "paris-hq", "--zone", "accueil"])
    assert code == 0
    bundle = load_bundle(workspace.config_path)
    async with opened_store(bundle.config.store.url, bundle.data_dir) as store:
        incident = next(i for i in await store.list_incidents() if i.status is IncidentStatus.open)
    assert await asyncio.to_thread(main, [*argv, "stand-down", incident.id, "--false-alarm", "--reason",
                                          "Levée de doute", "--by", "operator"]) == 0
    async with opened_store(bundle.config.store.url, bundle.data_dir) as store:
        doors["cli in-process"] = _stood_down(await store.audit_entries(incident.id))

    expected = {"outcome": "false_alarm", "reason": "Levée de doute", "by": "operator"}
    assert doors == {
        "cli through the daemon": {**expected, "via": "cli"},
        "console": {**expected, "via": "console"},
        "personal link": {**expected, "via": "web"},
        "cli in-process": {**expected, "via": "cli"},
    }


async def test_acknowledge_audits_the_same_entry_from_the_console_and_a_personal_link(workspace):
    enable_console(workspace)  # the console user "operator" is the contact alice
    async with console_daemon(workspace) as daemon:
        incident = await fire_manual(daemon)
        async with client(daemon) as http:
            assert (await login(http, "operator")).status_code == 303
            form = await http.post(f"/console/incidents/{incident.id}/ack", data={"response": "joining"})
            token = daemon.runtime.signer.sign(incident.id, "bruno", ACK, 3600)
            link = await http.post(f"/ack/{token}", data={"response": "joining"}, headers={"accept": "application/json"})
        entries = [e.data for e in await daemon.runtime.store.audit_entries(incident.id)
                   if e.kind == "incident.acknowledged"]
    assert form.status_code == 303 and link.status_code == 200
    by_console, by_link = entries
    assert set(by_console) == set(by_link)
    assert (by_console["person"], by_console["via"], by_console["response"]) == ("alice", "console", "joining")
    assert (by_link["person"], by_link["via"], by_link["response"]) == ("bruno", "link", "joining")


async def test_session_revocation_audits_the_same_entry_from_cli_console_and_api(workspace):
    enable_console(workspace)
    argv = ["-c", str(workspace.config_path), "sessions", "revoke"]
    async with console_daemon(workspace) as daemon:
        async with client(daemon) as admin:
            assert (await login(admin, "admin")).status_code == 303
            for _ in range(3):
                async with client(daemon, "127.0.0.7") as operator:
                    assert (await login(operator, "operator")).status_code == 303
            ids = [s["id"] for s in (await admin.get("/api/sessions")).json() if s["user"] == "operator"]
            assert await asyncio.to_thread(main, [*argv, ids[0], "--by", "admin"]) == 0
            page = await admin.post(f"/console/sessions/{ids[1]}/revoke")
            api = await admin.post(f"/api/sessions/{ids[2]}/revoke")
        audit = [e.data for e in await daemon.runtime.store.audit_entries() if e.kind == "console.session_revoked"]
    assert page.status_code == 303 and api.status_code == 200
    assert audit == [{"session": session, "user": "operator", "by": "admin", "via": via}
                     for session, via in zip(ids, ("cli", "console", "api"))]


def test_a_command_built_from_bad_input_says_which_field():
    with pytest.raises(CommandInvalid, match="bad fields for command 'acknowledge': response: Input should be 'on_it' or 'joining'"):
        Acknowledge(incident_id="i1", person="alice", response="maybe")


async def test_cancel_audits_the_same_entry_from_the_cli_and_a_cancel_token(tmp_path):
    from lifecycle_helpers import Workspace, lifecycle_daemon, smtp_recorder, start_clock
    from test_lifecycle_parts import CANCEL_PLAYBOOK, button

    ws = Workspace(tmp_path)
    ws.write("playbooks/bouton.yaml", CANCEL_PLAYBOOK)
    with smtp_recorder() as (smtp, port):
        ws.setup(port)
        async with lifecycle_daemon(ws, start_clock()) as daemon:  # a manual clock: the windows stay open
            store = daemon.runtime.store
            cancelled = []
            for door in ("cli", "token"):
                alarm = button()
                await daemon.engine.submit(alarm)
                incident = await daemon.engine.wait_processed(alarm.id)
                while "cancel_until" not in (await store.get_incident(incident.id)).data:
                    await asyncio.sleep(0.01)
                if door == "cli":
                    argv = ["-c", str(ws.config_path), "cancel", incident.id, "--by", "bruno"]
                    assert await asyncio.to_thread(main, argv) == 0
                else:
                    token = daemon.runtime.signer.sign(incident.id, "bruno", CANCEL, 600)
                    async with httpx.AsyncClient() as http:
                        answer = await http.post(f"http://127.0.0.1:{ws.web_port}/incidents/{incident.id}/cancel",
                                                 headers={"authorization": f"Bearer {token}",
                                                          "accept": "application/json"})
                    assert answer.status_code == 200, answer.text
                await daemon.engine.wait_incident(incident.id)
                cancelled += [e.data for e in await store.audit_entries(incident.id) if e.kind == "incident.cancelled"]
    assert smtp.messages == []
    assert cancelled == [{"by": "bruno", "via": "cli"}, {"by": "bruno", "via": "console"}]


async def test_a_command_carried_out_again_elsewhere_acts_once(tmp_path):
    """Another instance (here: a second bus with no memory of the first) receiving the same
    command adds no second silence, raises no second drill alarm, and a cancel twice is no refusal."""
    from crisisbot.command_bus import CommandBus
    from lifecycle_helpers import Workspace, lifecycle_daemon, smtp_recorder, start_clock
    from test_lifecycle_parts import CANCEL_PLAYBOOK, button
    from test_lifecycle_safety import DRILL

    ws = Workspace(tmp_path)
    ws.write("playbooks/bouton.yaml", CANCEL_PLAYBOOK)
    with smtp_recorder() as (smtp, port):
        ws.setup(port, drills=DRILL)
        async with lifecycle_daemon(ws, start_clock()) as daemon:
            store = daemon.runtime.store
            other = CommandBus(daemon.runtime, daemon.engine, daemon.lifecycle)
            alarm = button()
            await daemon.engine.submit(alarm)
            incident = await daemon.engine.wait_processed(alarm.id)
            while "cancel_until" not in (await store.get_incident(incident.id)).data:
                await asyncio.sleep(0.01)
            commands = [SilenceAdd(site="paris-hq", duration=3600, reason="travaux", input="porte-9"),
                        RunDrill(drill="accueil"), Cancel(incident_id=incident.id, actor="bruno")]
            answers = [(await daemon.commands.dispatch(c), await other.dispatch(c)) for c in commands]
            await daemon.engine.wait_processed(answers[1][0].alarm_id)  # the drill waits in its cancel window
            silences = await store.list_silences()
            drills = [i for i in await store.list_incidents() if i.drill]
            cancelled = [e for e in await store.audit_entries(incident.id) if e.kind == "incident.cancelled"]
    assert all(first == again for first, again in answers)
    assert len(silences) == 1 and len(drills) == 1 and len(cancelled) == 1


async def test_reload_from_the_cli_answers_whether_the_daemon_took_the_files(workspace, capsys):
    argv = ["-c", str(workspace.config_path), "reload"]
    async with running_daemon(workspace) as daemon:
        playbook = workspace.root / "playbooks" / "panic.yaml"
        playbook.write_text(playbook.read_text().replace("priority: 10", "priority: 20"))
        assert await asyncio.to_thread(main, argv) == 0
        out = capsys.readouterr().out
        priority = daemon.runtime.bundle.playbook("panic").priority
        digest = daemon.runtime.bundle.digest
    assert priority == 20 and f"runs configuration {digest[:12]}" in out
    assert await asyncio.to_thread(main, argv) == 1
    assert "no crisisbot daemon answers on" in capsys.readouterr().err
