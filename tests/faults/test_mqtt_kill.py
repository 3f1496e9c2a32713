"""kill -9 of the daemon while an MQTT message is received but its alarm not yet committed:
no PUBACK has left (it leaves only after the commit and its WAL sync), so the broker
delivers the message again to the restarted daemon, which stores it, once.

The window is held open for real: another process holds the store's write lock (as a
backup or a second tool may), so the daemon's commit waits in SQLite's busy timeout, then
fails, and the message comes again, and again, until the lock is released."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from mqtt_broker import BROKER, needs_broker
from outage_helpers import Daemon, free_port, wait_until

TOKEN = "health-token-for-the-mqtt-kill-test"


def publish(topic: str, payload: dict[str, Any]) -> None:
    """One QoS 1 message; returns once the broker has it (its PUBACK to us)."""
    async def send() -> None:
        async with aiomqtt.Client(*BROKER) as client:
            await client.publish(topic, json.dumps(payload), qos=1)
    asyncio.run(send())


def drop_session(client_id: str) -> None:
    async def drop() -> None:
        async with aiomqtt.Client(*BROKER, identifier=client_id, clean_session=True):
            pass
    asyncio.run(drop())


def counters(daemon: Daemon) -> dict[str, int]:
    """The MQTT input's counters from the detailed /health (empty while it is not up)."""
    try:
        reply = httpx.get(f"http://127.0.0.1:{daemon.web}/health", timeout=2,
                          headers={"Authorization": f"Bearer {TOKEN}"}).json()
    except httpx.HTTPError:
        return {}
    return reply.get("checks", {}).get("inputs", {}).get("triggers", {}).get("bus", {}).get("counters", {})


def mqtt_alarms(db: Path, prefix: str) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        bodies = [json.loads(body) for (body,) in conn.execute("SELECT body FROM alarms WHERE source='bus'")]
    return [b for b in bodies if (b.get("input") or "").startswith(prefix)]


@needs_broker
@pytest.mark.timeout(120)
def test_message_received_but_not_committed_comes_again_after_a_kill(workspace) -> None:
    prefix = f"crisisbot-test/{uuid.uuid4().hex[:8]}"
    client_id = f"crisisbot-test-{uuid.uuid4().hex[:8]}"  # the broker is shared: a session of its own
    webhook, web = free_port(), free_port()

    def change(data: dict[str, Any]) -> None:
        data["triggers"]["hook"] = {"type": "webhook", "host": "127.0.0.1", "port": webhook,
                                    "secret": "${CRISISBOT_TEST_WEBHOOK_SECRET}"}
        data["triggers"]["bus"] = {"type": "mqtt", "host": BROKER[0], "port": BROKER[1], "client_id": client_id,
                                   "rules": [{"topic": f"{prefix}/+", "match": {"action": "single"},
                                              "site": "paris-hq", "zone": "accueil"}]}
        data["web"] = {"enabled": True, "host": "127.0.0.1", "port": web, "health_token": TOKEN}
    workspace.edit_config(change)
    db = workspace.root / "var" / "crisisbot.db"
    daemon = Daemon(workspace, webhook, web).start()
    try:
        wait_until(lambda: counters(daemon).get("connections", 0) >= 1, what="the MQTT input to subscribe",
                   log=daemon.log)
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the daemon's next commit waits for this lock
        try:
            publish(f"{prefix}/button", {"action": "single", "n": 1})
            # received, not stored (while the lock is held, each commit gives up after SQLite's
            # busy timeout and the session reconnects for the broker to send it again, PUBACK withheld)
            seen = wait_until(lambda: (c := counters(daemon)).get("messages", 0) >= 1 and c, timeout=60,
                              what="the daemon to receive the message", log=daemon.log)
            assert seen["alarms"] == 0
            daemon.kill()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert mqtt_alarms(db, prefix) == []  # the kill came before the commit

        daemon.start()
        [alarm] = wait_until(lambda: mqtt_alarms(db, prefix), what="the message delivered again", log=daemon.log)
        assert (alarm["site"], alarm["zone"], json.loads(alarm["raw"])) == ("paris-hq", "accueil",
                                                                           {"action": "single", "n": 1})
        time.sleep(0.5)  # a second delivery would be stored by now
        assert len(mqtt_alarms(db, prefix)) == 1
    finally:
        daemon.stop()
        drop_session(client_id)
