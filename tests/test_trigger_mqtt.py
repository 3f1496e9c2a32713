"""MQTT trigger against real Mosquitto brokers: the machine's on 127.0.0.1:1883, and a
private one started here with TLS and a password file."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import trustme
from mqtt_broker import BROKER, needs_broker
from pydantic import ValidationError
from sinks import RecordingSink

from crisisbot.models import Alarm, EventKind
from crisisbot.store.base import Nonce
from crisisbot.store.sqlite import SqliteStore
from triggers.mqtt import MqttConfig, MqttTrigger


@pytest.fixture
def prefix() -> str:
    return f"crisisbot-test/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def make_trigger(sink: RecordingSink) -> AsyncIterator[Callable[..., Any]]:
    started: list[MqttTrigger] = []

    async def make(rules: list[dict[str, Any]], *, into: Any = None, **extra: Any) -> MqttTrigger:
        """A started, subscribed trigger storing into `sink`, or into `into` if given."""
        data = {"type": "mqtt", "host": BROKER[0], "port": BROKER[1],
                "client_id": f"crisisbot-test-{uuid.uuid4().hex[:8]}", "rules": rules, **extra}
        trigger = MqttTrigger("mqtt", MqttConfig.model_validate(data), into if into is not None else sink)
        await trigger.start()
        started.append(trigger)
        await asyncio.wait_for(trigger.subscribed.wait(), 10)
        return trigger

    yield make
    for trigger in started:
        await trigger.stop()
        if trigger.config.port == BROKER[1]:  # drop the persistent session from the shared broker
            async with aiomqtt.Client(*BROKER, identifier=trigger.config.client_id, clean_session=True):
                pass


async def publish(topic: str, *payloads: bytes | str | dict[str, Any], **client: Any) -> None:
    async with aiomqtt.Client(**({"hostname": BROKER[0], "port": BROKER[1]} | client)) as pub:
        for payload in payloads:
            body = json.dumps(payload) if isinstance(payload, dict) else payload
            await pub.publish(topic, body, qos=1)


def zigbee_rule(prefix: str, **extra: Any) -> dict[str, Any]:
    level = prefix.count("/") + 2  # the device's friendly name: last level of <prefix>/zigbee/<name>
    return {"topic": f"{prefix}/zigbee/+", "match": {"action": ["single", "emergency"]}, "site": "paris",
            "zone": f"{{topic[{level}]}}", "label": f"Panic button {{topic[{level}]}}", **extra}


@needs_broker
async def test_zigbee_button_becomes_a_panic_alarm(prefix: str, sink: RecordingSink, make_trigger: Any) -> None:
    trigger = await make_trigger([zigbee_rule(prefix)])
    await publish(f"{prefix}/zigbee/reception", {"battery": 97, "linkquality": 120},
                  {"action": "single", "battery": 97})
    [alarm] = await sink.wait_for(1)
    assert (alarm.source, alarm.site, alarm.zone, alarm.kind) == ("mqtt", "paris", "reception", EventKind.panic)
    assert alarm.label == "Panic button reception" and alarm.input == f"{prefix}/zigbee/reception"
    assert json.loads(alarm.raw or "") == {"action": "single", "battery": 97}
    assert trigger.stats["unmatched"] == 1 and trigger.stats["alarms"] == 1


@needs_broker
async def test_gateway_fields_map_site_zone_and_kind(prefix: str, sink: RecordingSink, make_trigger: Any) -> None:
    trigger = await make_trigger([{
        "topic": f"{prefix}/bms/#", "match": {"state": "ALARM"}, "site": "{payload[building]}",
        "zone": "{payload[location][room]}", "kind": "technical", "kind_field": "type",
        "kinds": {"FIRE": "fire", "INTRUSION": "intrusion", "OFFLINE": "input_fault"}}])
    await publish(f"{prefix}/bms/gw1",
                  {"state": "ALARM", "type": "FIRE", "building": "lyon", "location": {"room": "B12"}},
                  {"state": "NORMAL", "type": "FIRE", "building": "lyon"},
                  {"state": "ALARM", "type": "OFFLINE", "building": "lyon"},
                  {"state": "ALARM", "type": "FLOOD", "building": "lyon"},  # not in kinds: the rule's kind
                  {"state": "ALARM", "type": "FIRE", "building": "../etc"},  # not a site id: dropped
                  {"state": "ALARM", "type": "FIRE", "building": "lille", "location": {"room": "C1"}})
    await sink.wait_for(4)
    assert [(a.site, a.zone, a.kind) for a in sink.alarms] == [
        ("lyon", "B12", EventKind.fire), ("lyon", None, EventKind.input_fault), ("lyon", None, EventKind.technical),
        ("lille", "C1", EventKind.fire)]
    assert trigger.stats["unmapped"] == 1 and trigger.stats["unmatched"] == 1


@needs_broker
async def test_bad_payloads_are_counted_and_do_not_block(prefix: str, sink: RecordingSink,
                                                         make_trigger: Any) -> None:
    trigger = await make_trigger([zigbee_rule(prefix)], max_payload=1024)
    topic = f"{prefix}/zigbee/hall"
    await publish(topic, b"\xff\xfe\x00garbage", "{not json", "x" * 5000, "ON", {"action": "emergency"})
    [alarm] = await sink.wait_for(1)
    assert alarm.zone == "hall"
    assert trigger.stats["bad_payload"] == 2 and trigger.stats["oversized"] == 1
    assert trigger.stats["unmatched"] == 1  # "ON" is valid but no rule wants it


@needs_broker
async def test_unstored_message_is_delivered_again(prefix: str, sink: RecordingSink, make_trigger: Any) -> None:
    trigger = await make_trigger([zigbee_rule(prefix)], backoff_max="1s")
    sink.fail = 1
    await publish(f"{prefix}/zigbee/lobby", {"action": "single"})
    [alarm] = await sink.wait_for(1)  # PUBACK was withheld, the broker redelivered after reconnection
    assert alarm.zone == "lobby"
    assert trigger.stats["store_errors"] == 1 and trigger.stats["connections"] >= 2


@needs_broker
async def test_messages_sent_while_away_arrive_after_reconnect(prefix: str, sink: RecordingSink,
                                                               make_trigger: Any) -> None:
    trigger = await make_trigger([zigbee_rule(prefix)])
    await trigger.stop()  # crisisbot restarts; the broker keeps the QoS 1 message for its session
    await publish(f"{prefix}/zigbee/stairs", {"action": "single"})
    await trigger.start()
    [alarm] = await sink.wait_for(1)
    assert alarm.zone == "stairs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None,
                    reason="mosquitto and mosquitto_passwd are needed for the TLS broker")
async def test_tls_and_credentials(tmp_path: Path, sink: RecordingSink, make_trigger: Any) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(tmp_path / "server.pem")
    server.private_key_pem.write_to_path(tmp_path / "server.key")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "crisisbot", "s3cret"], check=True)
    port = free_port()
    (tmp_path / "mosquitto.conf").write_text(
        f"user root\nper_listener_settings false\nallow_anonymous false\npassword_file {tmp_path / 'passwd'}\n"
        f"listener {port} 127.0.0.1\ncafile {tmp_path / 'ca.pem'}\ncertfile {tmp_path / 'server.pem'}\n"
        f"keyfile {tmp_path / 'server.key'}\n")
    broker = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "mosquitto.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(5):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        tls = {"ca_file": str(tmp_path / "ca.pem")}
        trigger = await make_trigger([zigbee_rule("secure")], port=port, username="crisisbot", password="s3cret",
                                     tls=tls)
        await publish("secure/zigbee/vault", {"action": "single"}, port=port, username="crisisbot",
                      password="s3cret", tls_context=trigger.config.tls.context())
        [alarm] = await sink.wait_for(1)
        assert alarm.zone == "vault"

        wrong = MqttTrigger("wrong", MqttConfig.model_validate({
            "type": "mqtt", "host": "127.0.0.1", "port": port, "username": "crisisbot", "password": "nope",
            "tls": tls, "rules": [zigbee_rule("secure")]}), sink)
        await wrong.start()
        try:
            async with asyncio.timeout(10):
                while wrong.stats["connection_errors"] == 0:
                    await asyncio.sleep(0.05)
            assert not wrong.subscribed.is_set()
        finally:
            await wrong.stop()
    finally:
        broker.terminate()
        broker.wait()


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match="needs a `kinds` table"):
        MqttConfig.model_validate({"type": "mqtt", "rules": [{"topic": "a/#", "site": "x", "kind_field": "t"}]})
    with pytest.raises(ValidationError):
        MqttConfig.model_validate({"type": "mqtt", "rules": []})
    config = MqttConfig.model_validate({"type": "mqtt", "password": "hunter2-secret",
                                     "rules": [{"topic": "a", "site": "x"}]})
    assert "hunter2" not in repr(config) and "hunter2" not in config.model_dump_json()


@needs_broker
async def test_site_no_config_defines_is_refused_and_counted(prefix: str, sink: RecordingSink, make_trigger: Any,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    sink.sites = {"lyon"}  # what config.yaml defines under `sites:`
    trigger = await make_trigger([{"topic": f"{prefix}/bms/#", "match": {"state": "ALARM"},
                                   "site": "{payload[building]}", "kind": "fire"}])
    await publish(f"{prefix}/bms/gw1", {"state": "ALARM", "building": "nowhere"},
                  {"state": "ALARM", "building": "lyon"})
    [alarm] = await sink.wait_for(1)
    assert alarm.site == "lyon"
    assert trigger.stats["unknown_site"] == 1 and trigger.stats["alarms"] == 1
    assert "site 'nowhere' is not defined under `sites:`" in caplog.text and f"{prefix}/bms/gw1" in caplog.text


@needs_broker
async def test_silent_device_raises_input_fault_then_restore(prefix: str, sink: RecordingSink,
                                                             make_trigger: Any) -> None:
    rule = zigbee_rule(prefix, offline_after="300ms")
    trigger = await make_trigger([rule])
    topic = f"{prefix}/zigbee/cellar"
    await publish(topic, {"battery": 80})  # any message makes the device known and alive
    [fault] = await sink.wait_for(1)
    assert (fault.kind, fault.site, fault.zone, fault.input) == (EventKind.input_fault, "paris", "cellar", topic)
    assert fault.details["offline_after"] == 0.3

    # restarted (a reload that changed it, or the daemon): the fault is not reported twice
    state = trigger.state
    await trigger.stop()
    again = MqttTrigger("mqtt", trigger.config, sink, state=state)
    await again.start()
    try:
        await asyncio.wait_for(again.subscribed.wait(), 10)
        await asyncio.sleep(1.0)  # three periods of silence
        assert len(sink.of(EventKind.input_fault)) == 1
        await publish(topic, {"action": "single"})
        await sink.wait_for(3)
    finally:
        await again.stop()
    assert [a.kind for a in sink.alarms[1:3]] == [EventKind.restore, EventKind.panic]
    assert sink.alarms[1].details["restores"] == "input_fault" and again.stats["restores"] == 1


class FailingOn(RecordingSink):
    """Holds the alarm of message n=0 until `release`, and fails the first try of n=2."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.held = asyncio.Event()
        self._failed = False

    async def submit(self, alarm: Alarm, nonce: Nonce | None = None) -> str:
        n = alarm.details["payload"].get("n", 99)
        if n == 0:
            self.held.set()
            await self.release.wait()
        if n == 2 and not self._failed:
            self._failed = True
            raise OSError("disk full")
        return await super().submit(alarm, nonce)


@needs_broker
async def test_messages_stored_together_are_neither_lost_nor_doubled_when_one_fails(prefix: str,
                                                                                     make_trigger: Any) -> None:
    sink = FailingOn()
    trigger = await make_trigger([zigbee_rule(prefix)], into=sink, backoff_max="1s")
    topic = f"{prefix}/zigbee/b0"
    await publish(topic, {"action": "single", "n": 0})
    await asyncio.wait_for(sink.held.wait(), 10)  # n=0 is being stored: the next ones queue up
    await publish(topic, *({"action": "single", "n": i} for i in range(1, 5)))
    async with asyncio.timeout(10):  # all four received (counted once they are examined)
        while trigger.stats["messages"] < 5:
            if trigger.stats["messages"] == 1:
                await asyncio.sleep(0.3)  # let the four reach the client's queue: one batch
                sink.release.set()
            await asyncio.sleep(0.01)
    await sink.wait_for(5)
    await publish(f"{prefix}/zigbee/last", {"action": "single"})  # comes after any redelivery
    await sink.wait_for(6)
    assert sorted(a.details["payload"].get("n", 99) for a in sink.alarms) == [0, 1, 2, 3, 4, 99]
    # 1..4 were one batch: 1 acknowledged, 2 failed, 3 and 4 stored but their PUBACK withheld
    # (in order); the broker sent 2, 3 and 4 again: 2 stored, 3 and 4 recognized
    assert trigger.stats["store_errors"] == 1 and trigger.stats["redelivered"] == 2


class HeldStore:
    """The engine's part as the trigger sees it, on a real SqliteStore: the first alarm is
    held until `release`, so the messages that arrive meanwhile queue up."""

    def __init__(self, store: SqliteStore) -> None:
        self.store, self.release, self.held, self.count = store, asyncio.Event(), asyncio.Event(), 0

    async def submit(self, alarm: Alarm, nonce: Nonce | None = None) -> str:
        if not self.held.is_set():
            self.held.set()
            await self.release.wait()
        await self.store.add_alarm(alarm, nonce)
        self.count += 1
        return alarm.id

    def known_site(self, site: str) -> bool:
        return True


@needs_broker
async def test_messages_that_arrive_during_a_commit_are_committed_together(prefix: str, tmp_path: Path,
                                                                           make_trigger: Any) -> None:
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    sink = HeldStore(store)
    trigger = await make_trigger([zigbee_rule(prefix)], into=sink, max_inflight=100)
    topic = f"{prefix}/zigbee/b0"
    await publish(topic, {"action": "single", "n": 0})
    await asyncio.wait_for(sink.held.wait(), 10)
    # 19 more: with n=0 unacknowledged, Mosquitto's default window (max_inflight_messages 20)
    await publish(topic, *({"action": "single", "n": i} for i in range(1, 20)))
    await asyncio.sleep(0.3)  # they reach the client's queue
    sink.release.set()
    async with asyncio.timeout(10):
        while sink.count < 20:
            await asyncio.sleep(0.01)
    await trigger.stop()  # before the store closes (the fixture's own stop then finds it stopped)
    entries = [e for e in await store.audit_entries() if e.kind == "alarm.received"]
    await store.close()
    # the entries of one transaction carry its one time: n=0 alone, then 1..19 in one commit
    commits = [sorted(json.loads(e.data["raw"])["n"] for e in entries if e.at == at)
               for at in dict.fromkeys(e.at for e in entries)]
    assert commits == [[0], list(range(1, 20))], commits
    assert trigger.stats["alarms"] == 20
