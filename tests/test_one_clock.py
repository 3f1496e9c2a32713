"""One injected clock drives the whole daemon: the engine's join windows and the duty
rosters read the same `ManualClock` as timers and links, so a test moves a night, a
week or ten minutes forward without sleeping (issue 13: one clock everywhere)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from crisisbot.clock import ManualClock
from crisisbot.models import Alarm
from lifecycle_helpers import Workspace, lifecycle_daemon, smtp_recorder



def paris(*when: int) -> datetime:
    """A Paris wall time, as the UTC instant a system clock reads (a step across the
    change to summer time is then an ordinary 54 days, not a clock step)."""
    return datetime(*when, tzinfo=ZoneInfo("Europe/Paris")).astimezone(timezone.utc)


WEDNESDAY_10H = paris(2026, 3, 4, 10, 0)  # a working day, no public holiday in France
ALICE, BRUNO, DAVID = "alice.martin@exemple.fr", "bruno.leroy@exemple.fr", "david.smith@exemple.fr"

PLAYBOOK = """
id: astreinte
name: Bouton panique, personne d'astreinte
priority: 100
match: {kinds: [panic]}
join_window: 10m
steps:
  - id: appel
    action: email
    to: [astreinte]
    template: committee_alert
"""

GROUPS = """
groups:
  astreinte:
    name: Astreinte sécurité
    site: paris-hq
    members: [david]
    duty:
      - name: heures ouvrées
        windows: [{days: [mon, tue, wed, thu, fri], start: "08:00", end: "18:30"}]
        holidays: false
        members: [alice]
      - name: nuits
        windows: [{start: "18:30", end: "08:00"}]
        members: [bruno]
"""


@pytest.fixture
def ws(tmp_path):
    workspace = Workspace(tmp_path)
    workspace.write("playbooks/astreinte.yaml", PLAYBOOK)
    workspace.write("contacts/astreinte.yaml", GROUPS)
    return workspace


async def press(daemon, label: str = "Bouton panique accueil"):
    alarm = Alarm(source="manual", site="paris-hq", zone="accueil", label=label)
    await daemon.engine.submit(alarm)
    incident = await daemon.engine.wait_processed(alarm.id)
    assert incident is not None
    await daemon.engine.wait_incident(incident.id)
    return incident


async def test_the_join_window_counts_on_the_injected_clock(ws):
    clock = ManualClock(WEDNESDAY_10H)
    with smtp_recorder() as (smtp, port):
        ws.setup(port)
        async with lifecycle_daemon(ws, clock) as daemon:
            first = await press(daemon)
            assert first.opened_at == WEDNESDAY_10H  # the incident is stamped by the daemon's clock

            await clock.advance(minutes=9)
            again = await press(daemon, "pressed again")
            assert again.id == first.id  # within 10 minutes of the last alarm: the same crisis

            await clock.advance(minutes=9)  # 18 min after the first, 9 after the last: still joins
            assert (await press(daemon, "and again")).id == first.id

            await clock.advance(minutes=11)  # 11 min of quiet: the window is closed
            later = await press(daemon, "a new alarm")
            assert later.id != first.id
            assert len(await daemon.runtime.store.incident_alarms(first.id)) == 3
    assert len(smtp.subjects(ALICE)) == 2  # one message per incident, not per press


async def test_the_duty_roster_reads_the_injected_clock(ws):
    clock = ManualClock(WEDNESDAY_10H)
    with smtp_recorder() as (smtp, port):
        ws.setup(port)
        async with lifecycle_daemon(ws, clock) as daemon:
            await press(daemon)  # Wednesday 10:00: business hours
            assert [a for a, _ in smtp.messages] == [ALICE]

            await clock.set(paris(2026, 3, 4, 23, 0))  # the same day, at night
            await press(daemon)
            assert [a for a, _ in smtp.messages] == [ALICE, BRUNO]

            await clock.set(paris(2026, 5, 1, 10, 0))  # 1 May: a public holiday, daytime
            incident = await press(daemon)
            assert [a for a, _ in smtp.messages] == [ALICE, BRUNO, DAVID]  # no slot holds: the plain members
            opened = [e for e in await daemon.runtime.store.audit_entries(incident.id) if e.kind == "incident.opened"]
            assert opened[0].at == paris(2026, 5, 1, 10, 0)  # the audit chain reads the same clock
