"""20 kill -9 at random moments after alarms, restarting each time: no email is missing,
and a crash resends at most the message in flight on each open SMTP session, with the
same Message-ID (SMTP is at-least-once; the window is one verdict commit)."""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

from conftest import RecordingHandler, free_port
from crisisbot.cli import main
from outage_helpers import Daemon, Relay, committee, configure, wait_until

KILLS = 20
SIZE = 8
SESSIONS = 2


PLAYBOOK = """
id: panic
name: Convocation
priority: 10
match: {kinds: [panic]}
steps:
  - {id: convocation, action: email, to: [comite-crise], template: committee_alert, timeout: 20s}
"""


def delivered(relay: Relay) -> set[tuple[str, str]]:
    """(incident, recipient) pairs that arrived at least once."""
    return {(str(m.message["X-Crisisbot-Incident"]), m.rcpt[0]) for m in relay.handler.messages}


@pytest.mark.timeout(300)  # 21 daemon starts: slow only on a loaded machine
def test_random_kills_lose_nothing_and_duplicate_at_most_one_per_session(workspace, capsys, monkeypatch):
    seed = int(os.environ.get("CRISISBOT_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    addresses = committee(workspace, SIZE)
    relay = Relay(RecordingHandler(data_delay=0.02)).start()  # a relay that takes a little time per message
    webhook = free_port()
    configure(workspace, [relay.port], webhook=webhook, connections=SESSIONS)
    (workspace.root / "playbooks" / "panic.yaml").write_text(PLAYBOOK)  # just the convocation: restarts dominate
    daemon = Daemon(workspace, webhook).start()
    per_crash: list[int] = []
    try:
        for crash in range(KILLS):
            # a body of its own: the same body signed in the same second is a replay (409)
            daemon.fire(details={"run": crash})
            time.sleep(rng.uniform(0.005, 0.2))
            daemon.kill()
            daemon.start()
            # the restarted daemon finishes this incident before the next alarm: each crash
            # then interrupts one convocation, on at most SESSIONS open sessions
            wait_until(lambda: len(delivered(relay)) >= (crash + 1) * SIZE, timeout=30,
                       what=f"every email of incident {crash + 1} (seed {seed})", log=daemon.log)
            time.sleep(0.1)  # a late duplicate would show up now
            per_crash.append(len(relay.handler.messages) - len(delivered(relay)) - sum(per_crash))
    finally:
        daemon.stop()
        relay.stop()

    per_incident: dict[str, Counter[str]] = {}
    ids_of: dict[tuple[str, str], set[str]] = {}
    for received in relay.handler.messages:
        incident = str(received.message["X-Crisisbot-Incident"])
        per_incident.setdefault(incident, Counter())[received.rcpt[0]] += 1
        ids_of.setdefault((incident, received.rcpt[0]), set()).add(str(received.message["Message-ID"]))
    assert len(per_incident) == KILLS, f"seed {seed}"
    for incident, counts in per_incident.items():
        assert set(counts) == addresses, f"missing emails in incident {incident} (seed {seed})"
    assert all(len(ids) == 1 for ids in ids_of.values()), "a resend carries the same Message-ID"
    duplicates = sum(n - 1 for counts in per_incident.values() for n in counts.values())
    assert duplicates == sum(per_crash)
    assert max(per_crash) <= SESSIONS, f"duplicates per crash {per_crash} (seed {seed})"
    capsys.readouterr()
    assert main(["-c", str(workspace.config_path), "audit", "verify"]) == 0
    assert "audit log intact" in capsys.readouterr().out
    assert main(["-c", str(workspace.config_path), "incidents", "--limit", "100"]) == 0
    listing = capsys.readouterr().out
    outcomes = [row.split()[4] for row in listing.splitlines()[1:]]  # ID, opened (2), state, outcome…
    assert "running" not in outcomes, "every playbook finished after the restarts"
    with capsys.disabled():
        print(f"\n{duplicates} duplicate(s) over {KILLS} kill -9, per crash {per_crash} "
              f"({duplicates / KILLS:.2f} per crash, {SESSIONS} SMTP sessions, seed {seed})")
