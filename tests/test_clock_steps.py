"""Steps of the system clock (NTP correction, `date -s`, a VM resumed) with an injected
clock: an escalation keeps its delay — a forward step does not fire tiers early, a
backward one does not hold them back — while time-of-day timers (the end of a
silence) follow the corrected clock. Time really passing (`advance`) fires as usual."""

from __future__ import annotations

import pytest

from daemon_helpers import fire_manual
from lifecycle_helpers import Workspace, lifecycle_daemon, smtp_recorder, start_clock

BRUNO, ALICE, DAVID = "bruno.leroy@exemple.fr", "alice.martin@exemple.fr", "david.smith@exemple.fr"

PLAYBOOK = """
id: escalade
name: Bouton panique avec escalade
priority: 100
match: {kinds: [panic]}
steps:
  - id: escalade
    action: escalate
    until: {count: 1, roles: {manager: 1}}
    tiers:
      - to: [securite]
      - to: [direction]
        after: 10m
"""

GROUPS = """
groups:
  direction: {name: Direction, members: [alice, david]}
"""


@pytest.fixture
def ws(tmp_path):
    workspace = Workspace(tmp_path)
    workspace.write("playbooks/escalade.yaml", PLAYBOOK)
    workspace.write("contacts/escalation-groups.yaml", GROUPS)
    return workspace


def recipients(smtp) -> list[str]:
    return sorted(address for address, _ in smtp.messages)


@pytest.mark.parametrize("step_hours", [1, -1])
async def test_an_escalation_keeps_its_delay_across_a_clock_step(ws, step_hours):
    clock = start_clock()
    with smtp_recorder() as (smtp, port):
        ws.setup(port)
        async with lifecycle_daemon(ws, clock) as daemon:
            timers, store = daemon.lifecycle.timers, daemon.runtime.store
            await fire_manual(daemon)
            assert recipients(smtp) == [BRUNO]

            await clock.step(hours=step_hours)  # NTP correction: no time has passed
            await timers.fire_due()
            assert recipients(smtp) == [BRUNO], "a forward step must not fire tier 2 early"

            await clock.advance(minutes=9)
            await timers.fire_due()
            assert recipients(smtp) == [BRUNO]

            await clock.advance(minutes=1, seconds=1)  # ten minutes really passed
            await timers.fire_due()
            assert recipients(smtp) == sorted([BRUNO, ALICE, DAVID]), "a backward step must not hold tier 2 back"
            await timers.fire_due()
            assert recipients(smtp) == sorted([BRUNO, ALICE, DAVID])  # once

            steps = [e for e in await store.audit_entries() if e.kind == "clock.stepped"]
            assert len(steps) == 1 and steps[0].data["step_seconds"] == step_hours * 3600
            assert steps[0].data["timers_shifted"] == 1


async def test_the_end_of_a_silence_follows_the_corrected_clock(ws):
    clock = start_clock()
    with smtp_recorder() as (_smtp, port):
        ws.setup(port)
        async with lifecycle_daemon(ws, clock) as daemon:
            maintenance, timers, store = daemon.lifecycle.maintenance, daemon.lifecycle.timers, daemon.runtime.store
            silence = await maintenance.add("paris-hq", 1800, "travaux", "test")
            await clock.step(hours=1)  # the clock was an hour late: the silence is over by the real time
            await timers.fire_due()
            ended = [s for s in await store.list_silences() if s.id == silence.id]
            assert ended[0].ended_at is not None
