"""Lifecycle parts: duty schedules, signed links, cancel window, restores, silences,
health, false-alarm statistics, and the example playbooks (input_fault routing)."""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import httpx
import pytest

from crisisbot import matching
from crisisbot.cli import main
from crisisbot.config.bundle import load_bundle
from crisisbot.lifecycle.cancelwindow import applies
from crisisbot.lifecycle.schedules import expand, on_duty
from crisisbot.lifecycle.schema import CancelWindow
from crisisbot.lifecycle.stats import false_alarms
from crisisbot.links import LinkError, LinkExpired, Signer
from crisisbot.models import Alarm, AlarmAction, EventKind, IncidentStatus, Severity
from lifecycle_helpers import HEALTH_TOKEN, ROOT, Workspace, lifecycle_daemon, smtp_recorder, start_clock

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
def examples(tmp_path):
    ws = Workspace(tmp_path)
    for kind in ("playbooks", "contacts"):
        for path in (ROOT / "examples" / "lifecycle" / kind).glob("*.yaml"):
            shutil.copy(path, tmp_path / kind / path.name)
    return ws


def test_example_playbooks_validate_and_input_faults_are_routed(examples):
    bundle = load_bundle(examples.config_path)
    fault = Alarm(source="manual", site="paris-hq", input="bp-accueil", kind=EventKind.input_fault,
                  severity=Severity.major, label="Bouton muet depuis 10 min")
    assert matching.select(fault, bundle.playbooks, bundle.config.sites, datetime.now(timezone.utc)).id == "input-fault"
    panic = Alarm(source="manual", site="paris-hq", kind=EventKind.panic)
    assert matching.select(panic, bundle.playbooks, bundle.config.sites, datetime.now(timezone.utc)).id == "panic-escalation"


@pytest.mark.parametrize("local, expected, slot", [
    (datetime(2025, 6, 4, 10, 0), ["bruno", "alice"], "heures ouvrées"),  # Wednesday morning
    (datetime(2025, 6, 4, 22, 0), ["bruno"], "nuits"),  # rota week 0 (2025-06-02 is 21 weeks after start)
    (datetime(2025, 6, 10, 3, 0), ["david"], "nuits"),  # next week's shift, at night
    (datetime(2025, 12, 25, 10, 0), ["prestataire"], "nuits"),  # Christmas: public holiday in FR
    (datetime(2025, 7, 14, 11, 0), ["bruno"], "nuits"),  # Bastille day, a Monday at 11:00: week 27
])
def test_duty_schedule_follows_hours_holidays_and_rota(examples, local, expected, slot):
    bundle = load_bundle(examples.config_path)
    at = local.replace(tzinfo=PARIS)
    people, name = on_duty(bundle, "astreinte-securite", at)
    assert name.startswith(slot) and expand(bundle, ["astreinte-securite"], at) == expected


def test_who_is_on_call_cli(examples, capsys):
    assert main(["-c", str(examples.config_path), "who-is-on-call", "astreinte-securite",
                 "--at", "2025-12-25T10:00"]) == 0
    out = capsys.readouterr().out
    assert "nuits, week-ends et jours fériés" in out and "pc@securite-prestataire.example.com" in out


def test_links_cannot_be_forged_moved_or_used_after_expiry():
    now = [datetime(2025, 1, 1, tzinfo=timezone.utc)]
    signer = Signer(b"k" * 32, lambda: now[0])
    token = signer.sign("inc1", "alice", "ack", ttl=3600)
    claims = signer.verify(token, "ack")
    assert (claims.incident_id, claims.recipient_id) == ("inc1", "alice")
    with pytest.raises(LinkError):
        signer.verify(token, "stand-down")  # another purpose
    with pytest.raises(LinkError):
        Signer(b"x" * 32, lambda: now[0]).verify(token, "ack")  # another installation's key
    forged = Signer(b"x" * 32, lambda: now[0]).sign("inc1", "bruno", "ack", 3600)
    with pytest.raises(LinkError):
        signer.verify(forged.split(".")[0] + "." + token.split(".")[1], "ack")  # bruno's body, alice's MAC
    now[0] += timedelta(hours=2)
    with pytest.raises(LinkExpired):
        signer.verify(token, "ack")


def test_cancel_window_never_applies_to_panels_unless_asked():
    config = SimpleNamespace(triggers={"centrale": {"type": "sia"}, "appli": {"type": "webhook"}})
    window = CancelWindow(duration=5)
    panel, app = Alarm(source="centrale", site="s"), Alarm(source="appli", site="s")
    assert applies(window, app, config) and not applies(window, panel, config)  # type: ignore[arg-type]
    assert applies(CancelWindow(duration=5, panels=True), panel, config)  # type: ignore[arg-type]
    assert not applies(None, app, config)  # type: ignore[arg-type]


CANCEL_PLAYBOOK = """
id: bouton
name: Bouton avec fenêtre d'annulation
priority: 100
match: {kinds: [panic]}
lifecycle:
  cancel_window: {duration: 5s}
  on_restore: close
steps:
  - id: alerte
    action: email
    to: [securite]
    template: committee_alert
"""


def button(**kw) -> Alarm:
    return Alarm(source="manual", site="paris-hq", zone="accueil", input="bp-1", label="Bouton accueil", **kw)


async def test_pressing_again_in_the_cancel_window_cancels_and_nothing_is_sent(tmp_path):
    ws = Workspace(tmp_path)
    ws.write("playbooks/bouton.yaml", CANCEL_PLAYBOOK)
    clock = start_clock()
    with smtp_recorder() as (smtp, port):
        ws.setup(port)
        async with lifecycle_daemon(ws, clock) as daemon:
            first = button()
            await daemon.engine.submit(first)
            incident = await daemon.engine.wait_processed(first.id)
            while "cancel_until" not in (await daemon.runtime.store.get_incident(incident.id)).data:
                await asyncio.sleep(0.01)
            second = button()
            await daemon.engine.submit(second)
            await daemon.engine.wait_processed(second.id)
            await daemon.engine.wait_incident(incident.id)
            final = await daemon.runtime.store.get_incident(incident.id)
            rows = await false_alarms(daemon.runtime.store, clock.now() - timedelta(days=1))
    assert final.status is IncidentStatus.cancelled and smtp.messages == []
    assert [(r.point, r.cancelled) for r in rows] == [("bp-1", 1)]


async def test_panel_restore_closes_the_incident_and_sends_the_all_clear(tmp_path):
    ws = Workspace(tmp_path)
    ws.write("playbooks/bouton.yaml", CANCEL_PLAYBOOK.replace("  cancel_window: {duration: 5s}\n", ""))
    clock = start_clock()
    with smtp_recorder() as (smtp, port):
        ws.setup(port)
        async with lifecycle_daemon(ws, clock) as daemon:
            first = button()
            await daemon.engine.submit(first)
            incident = await daemon.engine.wait_processed(first.id)
            await daemon.engine.wait_incident(incident.id)
            restore = button(kind=EventKind.restore, action=AlarmAction.resolve)
            await daemon.engine.submit(restore)
            assert (await daemon.engine.wait_processed(restore.id)).id == incident.id
            await daemon.lifecycle.idle()  # the stand-down runs beside the alarm queue
            final = await daemon.runtime.store.get_incident(incident.id)
            kinds = [e.kind for e in await daemon.runtime.store.audit_entries(incident.id)]
    assert final.status is IncidentStatus.resolved
    assert "incident.restored" in kinds and "incident.stood_down" in kinds
    assert [m["Subject"].split("]")[0] for _, m in smtp.messages] == ["[CRISE", "[FIN D'ALERTE"]


async def test_silence_records_without_alerting_and_expires_by_itself(tmp_path):
    ws = Workspace(tmp_path)
    clock = start_clock()
    with smtp_recorder() as (smtp, port):
        ws.setup(port)
        async with lifecycle_daemon(ws, clock) as daemon:
            store = daemon.runtime.store
            silence = await daemon.lifecycle.maintenance.add("paris-hq", 3600, "remplacement centrale", "tech")
            quiet = button()
            await daemon.engine.submit(quiet)
            assert await daemon.engine.wait_processed(quiet.id) is None
            await clock.advance(hours=1, seconds=1)
            await daemon.lifecycle.timers.fire_due()
            loud = button()
            await daemon.engine.submit(loud)
            incident = await daemon.engine.wait_processed(loud.id)
            await daemon.engine.wait_incident(incident.id)
            audit = [e for e in await store.audit_entries() if e.kind.startswith(("silence.", "alarm.silenced"))]
            async with httpx.AsyncClient() as http:
                health = await http.get(f"http://127.0.0.1:{ws.web_port}/health",
                                        headers={"Authorization": f"Bearer {HEALTH_TOKEN}"})
    assert [e.kind for e in audit] == ["silence.added", "alarm.silenced", "silence.expired"]
    assert audit[1].data["alarm_id"] == quiet.id and audit[2].data["silence_id"] == silence.id
    assert incident is not None and {m["X-Crisisbot-Incident"] for _, m in smtp.messages} == {incident.id}
    assert health.status_code == 200
    body = health.json()["checks"]["supervision"]
    assert body["status"] == "up" and body["store"] == "ok" and body["queue"] == 0 and body["last_alarm_at"]


def test_typos_in_tiers_duty_slots_and_drills_are_refused(examples):
    from crisisbot.errors import ConfigError

    path = examples.root / "playbooks" / "panic-escalation.yaml"
    path.write_text(path.read_text().replace("to: [direction]", "to: [directoin]"))
    contacts = examples.root / "contacts" / "astreinte.yaml"
    contacts.write_text(contacts.read_text().replace("[[bruno], [david]", "[[bruno], [davdi]"))
    examples.edit_config(lambda d: d.setdefault("lifecycle", {}).update(
        drills={"x": {"cron": "0 61 * * *", "site": "paris-hq"}}))
    with pytest.raises(ConfigError) as error:
        load_bundle(examples.config_path)
    text = str(error.value)
    assert "unknown contact group or person 'directoin'; did you mean 'direction'?" in text
    assert "unknown person or group 'davdi'" in text and "invalid crontab expression" in text
