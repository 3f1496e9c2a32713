"""Lifecycle safety rules with real peers: a real SIA DC-09 panel over TCP, the real
acknowledgement links, aiosmtpd: drills and real incidents never join each other, a
panel repeating an event never cancels, drills follow crontab and reloads, and
`simulate --at` reads duty schedules at that time."""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable
from zoneinfo import ZoneInfo

import httpx
import pytest

from crisisbot.cli import main
from crisisbot.lifecycle.drills import next_run
from crisisbot.lifecycle.report import build, render
from crisisbot.lifecycle.schema import DrillSpec
from crisisbot.models import IncidentStatus, PlaybookOutcome
from dc09_panel import TcpPanel, message
from lifecycle_helpers import ROOT, Workspace, lifecycle_daemon, link, smtp_recorder, start_clock

PARIS = ZoneInfo("Europe/Paris")
COMMITTEE = {"alice.martin@exemple.fr", "chloe.dubois@exemple.fr", "david.smith@exemple.fr",
             "bruno.leroy@exemple.fr"}
DRILL = {"accueil": {"cron": "0 10 * * 2", "site": "paris-hq", "zone": "accueil", "label": "Exercice panique"}}
DRILL_PREFIXES = ("[EXERCICE]", "[DRILL]")


def with_panel(ws: Workspace) -> None:
    """A DC-09 receiver on a free port for account 1234 of the Paris site."""
    def change(data: dict[str, Any]) -> None:
        data["triggers"]["panel-paris"] = {"type": "sia-dc09", "host": "127.0.0.1", "port": 0, "udp": False,
                                           "accounts": [{"account": "1234", "site": "paris-hq"}]}
    ws.edit_config(change)


async def panic_from_panel(daemon: Any, *sequences: int) -> None:
    """The panel reports a panic alarm (SIA `PA`), once per sequence number, each acknowledged."""
    panel = await TcpPanel.connect(daemon.runtime.triggers["panel-paris"].port)
    try:
        for seq in sequences:
            await panel.send(message(seq, "Nri1/PA01"))
            assert f'"ACK"{seq:04d}' in await panel.reply()
    finally:
        await panel.close()
    await daemon.engine.idle()


async def eventually(probe: Callable[[], Awaitable[Any]]) -> Any:
    """The probe's first truthy answer (waits for a fact; the test timeout bounds it)."""
    while not (found := await probe()):
        await asyncio.sleep(0.01)
    return found


async def joined(store: Any, incident_id: str) -> bool:
    return len(await store.incident_alarms(incident_id)) == 2


def subjects(smtp: Any, since: int = 0) -> list[str]:
    return [str(m["Subject"]) for _, m in smtp.messages[since:]]


async def test_real_panel_alarm_during_a_drill_is_a_separate_real_incident(tmp_path):
    ws = Workspace(tmp_path)
    clock = start_clock()
    with smtp_recorder() as (smtp, port):
        ws.setup(port, drills=DRILL)
        with_panel(ws)
        async with lifecycle_daemon(ws, clock) as daemon:
            store = daemon.runtime.store
            drill = await daemon.engine.wait_processed(await daemon.lifecycle.drills.run_now("accueil"))
            await daemon.engine.idle()
            during_drill = len(smtp.messages)
            await panic_from_panel(daemon, 1)
            (real,) = [i for i in await store.list_incidents() if not i.drill]
            real_subjects = subjects(smtp, during_drill)
            alice_real = [m for a, m in smtp.messages[during_drill:] if a == "alice.martin@exemple.fr"][0]
            async with httpx.AsyncClient() as http:
                answer = await http.post(link(alice_real, "ack"), data={"response": "on_it"},
                                         headers={"Accept": "application/json"})
            real, drill = await store.get_incident(real.id), await store.get_incident(drill.id)
            report = render(await build(daemon.runtime, drill.id, clock.now()), "md").decode()

    assert drill.drill and not real.drill and real.id != drill.id
    assert all(s.startswith(DRILL_PREFIXES) for s in subjects(smtp)[:during_drill])
    assert len(real_subjects) == len(COMMITTEE)  # the committee got the real alarm, as real
    assert not any(s.startswith(DRILL_PREFIXES) for s in real_subjects), real_subjects
    assert answer.status_code == 200, answer.text
    assert real.status is IncidentStatus.acknowledged and drill.status is IncidentStatus.open  # the link is the real one
    assert "## Real incidents during this drill" in report and f"`{real.id}`" in report


async def test_drill_during_a_real_incident_is_a_separate_drill(tmp_path):
    ws = Workspace(tmp_path)
    clock = start_clock()
    with smtp_recorder() as (smtp, port):
        ws.setup(port, drills=DRILL)
        with_panel(ws)
        async with lifecycle_daemon(ws, clock) as daemon:
            store = daemon.runtime.store
            await panic_from_panel(daemon, 1)
            (real,) = await store.list_incidents()
            before = len(smtp.messages)
            drill = await daemon.engine.wait_processed(await daemon.lifecycle.drills.run_now("accueil"))
            await daemon.engine.idle()
            real_alarms = await store.incident_alarms(real.id)
            report = render(await build(daemon.runtime, drill.id, clock.now()), "md").decode()
    assert drill.id != real.id and drill.drill and [a.source for a in real_alarms] == ["panel-paris"]
    assert subjects(smtp, before) and all(s.startswith(DRILL_PREFIXES) for s in subjects(smtp, before))
    assert f"`{real.id}`" in report


PANIC_WITH_WINDOW = """
lifecycle:
  cancel_window: {duration: 5s%s}
"""


@pytest.mark.parametrize("panels", [False, True], ids=["default", "panels-true"])
async def test_panel_sending_the_same_event_again_never_cancels(tmp_path, panels):
    ws = Workspace(tmp_path)
    playbook = ws.root / "playbooks" / "panic.yaml"
    playbook.write_text(playbook.read_text() + PANIC_WITH_WINDOW % (", panels: true" if panels else ""))
    clock = start_clock()
    with smtp_recorder() as (smtp, port):
        ws.setup(port)
        with_panel(ws)
        async with lifecycle_daemon(ws, clock) as daemon:
            store = daemon.runtime.store
            panel = await TcpPanel.connect(daemon.runtime.triggers["panel-paris"].port)
            await panel.send(message(1, "Nri1/PA01"))
            assert '"ACK"0001' in await panel.reply()
            (incident,) = await eventually(store.list_incidents)
            await clock.advance(seconds=2)  # the panel repeats the event, new sequence number, 2 s later
            await panel.send(message(2, "Nri1/PA01"))
            assert '"ACK"0002' in await panel.reply()
            await panel.close()
            await eventually(lambda: joined(store, incident.id))
            during = await store.get_incident(incident.id)  # still inside a cancel window, if any
            await clock.advance(seconds=10)  # past any cancel window
            await daemon.engine.idle()
            final = await store.get_incident(incident.id)
            kinds = [e.kind for e in await store.audit_entries(incident.id)]
            alarms = await store.incident_alarms(incident.id)
    assert len(alarms) == 2 and during.status is IncidentStatus.open  # the repeat joined the incident…
    assert final.status is IncidentStatus.open and final.outcome is PlaybookOutcome.done  # …and cancelled nothing
    assert "incident.cancelled" not in kinds
    assert ("cancel_window.opened" in kinds) is panels  # only when the playbook asks for it
    assert {a for a, _ in smtp.messages} == COMMITTEE


@pytest.mark.parametrize("cron, weekdays, note", [
    ("0 10 * * 2", {"Tue"}, "Tuesdays"),
    ("0 10 * * 0", {"Sun"}, "0 is Sunday"),
    ("0 10 * * 7", {"Sun"}, "7 is Sunday too"),
    ("0 10 * * 1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}, "working days"),
])
def test_drill_cron_reads_days_of_week_as_crontab_does(cron, weekdays, note):
    spec = DrillSpec(cron=cron, site="paris-hq")
    at, runs = datetime(2026, 3, 1, tzinfo=PARIS), []  # a Sunday; spans the spring DST change
    for _ in range(30):
        at = next_run(spec, "Europe/Paris", at)
        runs.append(at)
    assert {r.strftime("%a") for r in runs} == weekdays, note
    assert {(r.hour, r.minute) for r in runs} == {(10, 0)}  # local time, before and after DST


def test_first_tuesday_of_the_month_and_the_day_or_rule():
    first_tuesday = DrillSpec(cron="0 10 * * 2#1", site="paris-hq")
    at, runs = datetime(2026, 11, 29, tzinfo=PARIS), []
    for _ in range(12):
        at = next_run(first_tuesday, "Europe/Paris", at)
        runs.append(at)
    assert all(r.strftime("%a") == "Tue" and r.day <= 7 for r in runs)
    assert [r.month for r in runs] == [12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    # both day fields restricted: cron runs on either (1st-7th OR Tuesdays), not on both only
    either = DrillSpec(cron="0 10 1-7 * 2", site="paris-hq")
    start = datetime(2026, 12, 1, 11, 0, tzinfo=PARIS)  # Tuesday 1st, after 10:00
    assert next_run(either, "Europe/Paris", start).date().isoformat() == "2026-12-02"  # a Wednesday, the 2nd
    assert next_run(either, "Europe/Paris", datetime(2026, 12, 7, 11, 0, tzinfo=PARIS)).date().isoformat() == \
        "2026-12-08"  # the 8th: a Tuesday


async def test_tuesday_drill_fires_on_tuesday_and_a_reload_schedules_added_and_changed_drills(tmp_path):
    ws = Workspace(tmp_path)
    clock = start_clock()
    with smtp_recorder() as (smtp, port):
        ws.setup(port)
        async with lifecycle_daemon(ws, clock) as daemon:
            store = daemon.runtime.store

            async def drill_timers() -> list[Any]:
                return [t for t in await store.list_timers() if t.kind == "drill.run"]

            assert await drill_timers() == []
            ws.edit_config(lambda d: d["lifecycle"].update(drills=DRILL))
            assert await daemon.reload()
            (added,) = await drill_timers()
            await clock.set(added.due_at)
            await daemon.lifecycle.timers.fire_due()
            await daemon.engine.idle()
            (incident,) = await store.list_incidents()
            (following,) = await drill_timers()

            ws.edit_config(lambda d: d["lifecycle"]["drills"]["accueil"].update(cron="30 9 * * 4"))
            assert await daemon.reload()
            (changed,) = await drill_timers()
            ws.edit_config(lambda d: d["lifecycle"]["drills"]["accueil"].update(enabled=False))
            assert await daemon.reload()
            disabled = await drill_timers()
    local = added.due_at.astimezone(PARIS)
    assert (local.strftime("%a"), local.hour, local.minute) == ("Tue", 10, 0)
    assert incident.drill and smtp.messages
    assert following.due_at.astimezone(PARIS) == local + timedelta(days=7)
    new = changed.due_at.astimezone(PARIS)
    assert (new.strftime("%a"), new.hour, new.minute) == ("Thu", 9, 30)
    assert disabled == []


def _escalation_workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path)
    shutil.copy(ROOT / "examples/lifecycle/contacts/astreinte.yaml", ws.root / "contacts/astreinte.yaml")
    shutil.copy(ROOT / "examples/lifecycle/playbooks/panic-escalation.yaml",
                ws.root / "playbooks/panic-escalation.yaml")
    ws.edit_config(lambda d: d["triggers"].clear())
    return ws


@pytest.mark.parametrize("at, tier1", [
    ("2025-06-04T10:00", ["Bruno Leroy", "Alice Martin"]),  # a Wednesday morning: business hours
    ("2025-06-10T03:00", ["David Smith"]),  # a night: David's rota week
    ("2025-12-25T10:00", ["Prestataire sécurité (PC)"]),  # Christmas morning: public holiday rota
])
def test_simulate_at_reads_duty_at_that_time_and_shows_escalation_recipients(tmp_path, capsys, at, tier1):
    ws = _escalation_workspace(tmp_path)
    assert main(["-c", str(ws.config_path), "simulate", "--site", "paris-hq", "--zone", "accueil",
                 "--brief", "--at", at]) == 0
    out = capsys.readouterr().out
    assert "Playbook: panic-escalation" in out and "{'tiers'" not in out
    assert "until 1 acknowledgement(s), 1 manager" in out
    lines = out.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("  tier 1 (astreinte-securite), at once")))
    second = lines.index(next(line for line in lines if line.startswith("  tier 2 (direction), after 0:10:00")))
    names = [line.split("<")[0].strip(" -") for line in lines[first + 1:second] if line.startswith("    - ")]
    assert names == tier1
    assert "    - Alice Martin <alice.martin@exemple.fr>" in lines[second + 1]
