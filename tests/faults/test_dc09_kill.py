"""A DC-09 panel's ACK means the event is stored: kill -9 the daemon at random moments
while a panel sends events one after another, each waiting for its ACK, and every event
acknowledged before the kill must be in the store after it (the panel would not send it
again). Events sent but not acknowledged may or may not be there."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from dc09_panel import TcpPanel, message
from outage_helpers import Daemon, free_port

ROUNDS = 5
ACCOUNTS = [f"{1001 + n}" for n in range(ROUNDS)]  # one per round: its events are told apart by zone


def stored_zones(db: Path, account: str) -> set[int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        bodies = [json.loads(body) for (body,) in conn.execute("SELECT body FROM alarms WHERE source='arc'")]
    return {int(b["zone"]) for b in bodies if b.get("input") == account and b.get("zone")}


async def send_until_killed(daemon: Daemon, port: int, account: str, kill_after: float) -> set[int]:
    """Events zone 1, 2, … each waiting for its ACK; the daemon is killed after `kill_after`
    seconds. Returns the zones acknowledged."""
    acked: set[int] = set()
    for _ in range(200):  # the daemon is ready once its webhook answers; the DC-09 port may follow
        try:
            panel = await TcpPanel.connect(port)
            break
        except ConnectionRefusedError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the DC-09 input never listened on port {port}")

    def kill() -> None:
        time.sleep(kill_after)
        daemon.kill()
    killing = asyncio.get_running_loop().run_in_executor(None, kill)
    try:
        for zone in range(1, 100):
            await panel.send(message(zone, f"Nri1/BA{zone:02d}", account=account))
            try:
                reply = await panel.reply(timeout=5)
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
                break  # killed
            assert reply.startswith('"ACK"'), reply
            acked.add(zone)
    finally:
        await killing
        await panel.close()
    return acked


@pytest.mark.timeout(240)
def test_every_acknowledged_dc09_event_survives_a_kill_at_a_random_moment(workspace) -> None:
    webhook, arc = free_port(), free_port()

    def change(data: dict[str, Any]) -> None:
        data["triggers"]["hook"] = {"type": "webhook", "host": "127.0.0.1", "port": webhook,
                                    "secret": "${CRISISBOT_TEST_WEBHOOK_SECRET}"}
        data["triggers"]["arc"] = {"type": "sia-dc09", "host": "127.0.0.1", "port": arc, "udp": False,
                                   "accounts": [{"account": a, "site": "paris-hq"} for a in ACCOUNTS]}
    workspace.edit_config(change)
    db = workspace.root / "var" / "crisisbot.db"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    daemon = Daemon(workspace, webhook)
    acked_total = 0
    try:
        for account in ACCOUNTS:
            daemon.start()
            acked = asyncio.run(send_until_killed(daemon, arc, account, rng.uniform(0.05, 0.6)))
            missing = acked - stored_zones(db, account)
            assert not missing, f"acknowledged but not stored after kill -9: zones {sorted(missing)} (seed {seed})"
            acked_total += len(acked)
        assert acked_total > 0, f"no event was acknowledged before any kill (seed {seed})"
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop()
    print(f"{acked_total} acknowledged events over {ROUNDS} kill -9, none lost (seed {seed})")
