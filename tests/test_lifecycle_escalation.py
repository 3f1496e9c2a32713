"""Escalation end to end with real SMTP (aiosmtpd) and real HTTP (uvicorn): tier 1 stays
silent, tier 2 acknowledges through its personal link, the escalation stops, the
stand-down reaches everyone alerted; a restart mid-escalation fires the next tier once."""

from __future__ import annotations

import httpx
import pytest

from crisisbot.models import IncidentStatus
from crisisbot.timeline import timeline_lines
from daemon_helpers import fire_manual
from lifecycle_helpers import Workspace, lifecycle_daemon, link, smtp_recorder, start_clock, text_of

BRUNO, ALICE, DAVID, CHLOE = ("bruno.leroy@exemple.fr", "alice.martin@exemple.fr",
                              "david.smith@exemple.fr", "chloe.dubois@exemple.fr")

PLAYBOOK = """
id: escalade
name: Bouton panique avec escalade
priority: 100
match: {kinds: [panic]}
steps:
  - id: meeting
    action: meeting
    connector: jitsi
  - id: escalade
    action: escalate
    until: {count: 1, roles: {manager: 1}}
    tiers:
      - to: [securite]
      - to: [direction]
        after: 10m
        reminders: {every: 5m, count: 1}
      - to: [communication]
        after: 20m
"""

GROUPS = """
groups:
  direction: {name: Direction, members: [alice, david]}
  communication: {name: Communication, members: [chloe]}
"""


@pytest.fixture
def ws(tmp_path):
    workspace = Workspace(tmp_path)
    workspace.write("playbooks/escalade.yaml", PLAYBOOK)
    workspace.write("contacts/escalation-groups.yaml", GROUPS)
    return workspace


async def test_tier2_acknowledges_by_link_escalation_stops_and_stand_down_reaches_everyone(ws):
    clock = start_clock()
    with smtp_recorder() as (smtp, port):
        ws.setup(port)
        async with lifecycle_daemon(ws, clock) as daemon:
            store, timers = daemon.runtime.store, daemon.lifecycle.timers
            incident = await fire_manual(daemon)

            # tier 1 only, with a personal acknowledgement link
            assert [a for a, _ in smtp.messages] == [BRUNO]
            bruno_ack = link(smtp.to(BRUNO)[0], "ack")

            # tier 1 stays silent: ten minutes later tier 2 is alerted, once
            await clock.advance(minutes=10, seconds=1)
            await timers.fire_due()
            assert sorted(a for a, _ in smtp.messages) == sorted([BRUNO, ALICE, DAVID])
            alice_mail = smtp.to(ALICE)[0]
            assert "Escalade (niveau 2)" in text_of(alice_mail)
            alice_ack = link(alice_mail, "ack")
            assert alice_ack != bruno_ack

            async with httpx.AsyncClient() as http:
                page = await http.get(alice_ack)  # a GET (mail scanners) changes nothing
                assert page.status_code == 200 and "<form" in page.text
                assert await store.get_acks(incident.id) == []
                tampered = alice_ack[:-3] + ("AAA" if not alice_ack.endswith("AAA") else "BBB")
                assert (await http.post(tampered, data={"response": "joining"})).status_code == 403
                answer = await http.post(alice_ack, data={"response": "joining"}, headers={"Accept": "application/json"})
                assert answer.status_code == 200, answer.text
                assert answer.json()["person"] == "alice" and answer.json()["rule_satisfied"] is True
                again = await http.post(alice_ack, data={"response": "joining"}, headers={"Accept": "application/json"})
                assert again.json()["new"] is False  # replay by the same person: counted once

            # escalation stopped: no reminder, no tier 3, whatever the clock says
            assert await store.list_timers(incident.id) == []
            await clock.advance(hours=2)
            await timers.fire_due()
            assert smtp.to(CHLOE) == [] and len(smtp.to(ALICE)) == 1

            # stand-down through the manager's personal link (HTTP), as a false alarm
            stand_down = link(alice_mail, "stand-down")
            async with httpx.AsyncClient() as http:
                done = await http.post(stand_down, data={"outcome": "false_alarm", "reason": "appui accidentel"},
                                       headers={"Accept": "application/json"})
            assert done.status_code == 200, done.text
            assert done.json()["notified"] == 3

            final = await store.get_incident(incident.id)
            acks = await store.get_acks(incident.id)
            lines = "\n".join(await timeline_lines(store, final))

    assert final.status is IncidentStatus.false_alarm
    for address in (BRUNO, ALICE, DAVID):
        ends = [s for s in smtp.subjects(address) if s.startswith(("[FIN D'ALERTE]", "[ALL CLEAR]"))]
        assert len(ends) == 1, (address, smtp.subjects(address))
    assert "appui accidentel" in text_of(smtp.to(BRUNO)[-1])
    assert smtp.subjects(DAVID)[-1].startswith("[ALL CLEAR]")  # David reads English
    assert smtp.to(CHLOE) == []
    assert [(a.person_id, a.response, a.via) for a in acks] == [("alice", "joining", "link")]
    for kind in ("incident.acknowledged", "escalation.stopped", "incident.stood_down", "escalation.tier"):
        assert kind in lines


async def test_rule_needs_a_manager_so_a_non_manager_ack_does_not_stop_it(ws):
    clock = start_clock()
    with smtp_recorder() as (smtp, port):
        ws.setup(port)
        async with lifecycle_daemon(ws, clock) as daemon:
            incident = await fire_manual(daemon)
            async with httpx.AsyncClient() as http:
                answer = await http.post(link(smtp.to(BRUNO)[0], "ack"), data={"response": "on_it"},
                                         headers={"Accept": "application/json"})
            assert answer.json()["rule_satisfied"] is False  # bruno is security, not a manager
            await clock.advance(minutes=10, seconds=1)
            await daemon.lifecycle.timers.fire_due()
            # the reminder five minutes later goes to tier 2 members who have not answered
            await clock.advance(minutes=5)
            await daemon.lifecycle.timers.fire_due()
            pending = await daemon.runtime.store.list_timers(incident.id)
    assert len(smtp.to(ALICE)) == 2 and "[RAPPEL CRISE]" in smtp.subjects(ALICE)[1]
    assert smtp.to(DAVID)[1]["Subject"].startswith("[CRISIS REMINDER]")
    assert [t.kind for t in pending] == ["escalate.tier"]  # tier 3 still to come


async def test_restart_in_the_middle_fires_the_next_tier_exactly_once(ws):
    clock = start_clock()
    with smtp_recorder() as (smtp, port):
        ws.setup(port)
        async with lifecycle_daemon(ws, clock) as daemon:
            incident = await fire_manual(daemon)
        assert [a for a, _ in smtp.messages] == [BRUNO]

        # the daemon was down when tier 2 was due: it fires once, late, at start
        await clock.advance(minutes=12)
        async with lifecycle_daemon(ws, clock) as daemon:
            await daemon.lifecycle.timers.fire_due()  # waits for the start-up firing, finds nothing more
            assert sorted(a for a, _ in smtp.messages) == sorted([BRUNO, ALICE, DAVID])
            # a crash after sending but before the timer was marked done leaves it `firing`
            store = daemon.runtime.store
            tier2 = f"{incident.id}:escalade:tier2"
            await store.finish_timer(tier2, "firing")

        async with lifecycle_daemon(ws, clock) as daemon:  # recovered, fired again: deliveries are idempotent
            await daemon.lifecycle.timers.fire_due()
            audit = await daemon.runtime.store.audit_entries(incident.id)
            status = {t.id: t.status for t in await daemon.runtime.store.list_timers(incident.id, status=None)}

    assert len(smtp.to(ALICE)) == 1 and len(smtp.to(DAVID)) == 1
    assert status[tier2] == "done"
    assert sum(1 for e in audit if e.kind == "delivery.sent" and e.data["person"] == "alice") == 1
