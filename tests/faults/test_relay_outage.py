"""Both relays down when the panic alarm arrives, the primary back later: every
committee email is delivered once, across a restart, while /health says degraded;
and when nobody can be reached, the fallback people are told through their own path."""

from __future__ import annotations

import re
import time

import pytest

from conftest import RecordingHandler, free_port
from crisisbot.cli import main
from outage_helpers import Daemon, Relay, committee, configure, wait_until

SIZE = 12


def timeline(ws, capsys) -> str:
    """The newest incident's timeline; "" while the engine has not opened it yet (the webhook
    answers once the alarm is stored, before the incident exists)."""
    capsys.readouterr()
    assert main(["-c", str(ws.config_path), "incidents"]) == 0
    lines = capsys.readouterr().out.splitlines()
    if len(lines) < 2:
        return ""
    incident_id = lines[1].split()[0]  # under the header line
    assert main(["-c", str(ws.config_path), "incidents", "show", incident_id]) == 0
    return capsys.readouterr().out


def latest(listing: str) -> str:
    """The id of the newest incident in `crisisbot incidents` (after its header line, if any)."""
    rows = [line for line in listing.splitlines() if line and not line.startswith("ID ")]
    return rows[0].split()[0]


def delivery_states(text: str) -> dict[str, str]:
    """address -> state, from the Deliveries section of `incidents show`."""
    if "Deliveries:" not in text:
        return {}  # the step has not started yet
    rows = text.split("Deliveries:", 1)[1].splitlines()
    return {m.group(1): m.group(2) for line in rows
            if (m := re.match(r"\s+\S+\s+\S+\s+(\S+@\S+)\s+(\w+)", line))}


def test_relays_down_then_primary_back_delivers_everything_once(workspace, capsys, monkeypatch):
    monkeypatch.setenv("CRISISBOT_TEST_WEBHOOK_SECRET", "unused-by-readers")
    addresses = committee(workspace, SIZE)
    primary, secondary = Relay(), Relay()  # both down: nothing listens on their ports yet
    webhook, web = free_port(), free_port()
    configure(workspace, [primary.port, secondary.port], webhook=webhook, web=web)
    daemon = Daemon(workspace, webhook, web).start()
    try:
        daemon.fire()
        waiting = {a: "retrying" for a in addresses}
        wait_until(lambda: {a: s for a, s in delivery_states(timeline(workspace, capsys)).items()
                            if a in addresses} == waiting, what="the timeline to show every message waiting")
        assert daemon.health()["status"] == "degraded"  # the status word is public; details may not be

        assert daemon.stop() == 0  # a restart during the outage
        daemon.start()
        assert daemon.health()["status"] == "degraded"

        primary.start()  # the primary relay comes back
        wait_until(lambda: len(primary.handler.messages) >= SIZE, what="every email after the relay came back",
                   log=daemon.log)
        wait_until(lambda: daemon.health()["status"] == "up", what="/health to say ok again")
        text = timeline(workspace, capsys)
    finally:
        daemon.stop()
        primary.stop()
    received = [m.rcpt[0] for m in primary.handler.messages]
    assert sorted(received) == sorted(addresses), "each committee member exactly once"
    ids = primary.message_ids()
    assert len(ids) == SIZE and set(ids.values()) == {1}
    assert not secondary.handler.messages
    assert set(delivery_states(text).values()) == {"sent"}
    assert "delivery.retrying" in text and "delivery.sent" in text
    assert "delivery.rule_met" in text  # the step's shortfall, cleared in the background, is on the timeline


def test_nobody_reachable_raises_the_meta_alert_through_the_fallback(workspace, capsys, monkeypatch):
    monkeypatch.setenv("CRISISBOT_TEST_WEBHOOK_SECRET", "unused-by-readers")
    guard = {"garde": {"name": "Poste de garde", "email": "garde@exemple.fr"}}
    addresses = committee(workspace, 4, extra=guard)
    relay = Relay(RecordingHandler(reject=set(addresses))).start()  # every committee address refused: 550
    backup = Relay().start()
    webhook, web = free_port(), free_port()
    configure(workspace, [relay.port], webhook=webhook, web=web)

    def fallback(data):
        data["connectors"]["backup"] = {"type": "smtp", "host": "127.0.0.1", "port": backup.port,
                                        "security": "none", "timeout": "2s"}
        data["mail"]["fallback"] = {"to": ["veille-garde"], "via": ["backup", "outbox"]}
    workspace.edit_config(fallback)
    daemon = Daemon(workspace, webhook, web).start()
    try:
        daemon.fire()
        wait_until(lambda: len(backup.handler.messages) >= 1, what="the meta-alert", log=daemon.log)
        wait_until(lambda: "delivery.meta_alert" in timeline(workspace, capsys), what="the meta-alert in the timeline")
        health = daemon.health()
        text = timeline(workspace, capsys)
        assert daemon.stop() == 0
        daemon.start()  # nothing waits any more, but the committee is still unreached
        health_after_restart = daemon.health()
    finally:
        daemon.stop()
        relay.stop()
        backup.stop()
    assert not relay.handler.messages
    alert = backup.handler.messages[0]
    assert alert.rcpt == ["garde@exemple.fr"] and len(backup.handler.messages) == 1
    assert "ALERTE NON TRANSMISE" in str(alert.message["Subject"])
    body = alert.message.get_body(("plain",)).get_content()
    assert "0 sur 4" in body and all(a in body for a in addresses)
    assert health["status"] == "degraded" and health_after_restart["status"] == "degraded"
    states = delivery_states(text)
    assert {a: states[a] for a in addresses} == {a: "rejected" for a in addresses}
    assert states["garde@exemple.fr"] == "sent"
    assert "delivery.meta_alert" in text
    assert re.search(r"step\.failed\s+convocation: reached 0 of 4 \(1 required\)", text)


@pytest.mark.parametrize("rule, expect_alert", [("all", True), (3, False)])
def test_require_rule_counts_people_reached(workspace, capsys, monkeypatch, rule, expect_alert):
    monkeypatch.setenv("CRISISBOT_TEST_WEBHOOK_SECRET", "unused-by-readers")
    guard = {"garde": {"name": "Poste de garde", "email": "garde@exemple.fr"}}
    addresses = committee(workspace, 4, extra=guard)
    relay = Relay(RecordingHandler(reject={"m03@exemple.fr"})).start()  # one of four refused
    webhook = free_port()
    configure(workspace, [relay.port], webhook=webhook, fallback={"to": ["veille-garde"], "via": ["relay1"]})
    playbook = workspace.root / "playbooks" / "panic.yaml"
    playbook.write_text(playbook.read_text().replace("template: committee_alert",
                                                     f"template: committee_alert\n    require: {rule}"))
    daemon = Daemon(workspace, webhook).start()
    try:
        daemon.fire()
        wait_until(lambda: re.search(r"step\.(done|failed)\s+convocation", timeline(workspace, capsys)) is not None,
                   what="the convocation step to end")
        wait_until(lambda: len(relay.handler.messages) >= 3 + expect_alert, what="the emails")
        text = timeline(workspace, capsys)
    finally:
        daemon.stop()
        relay.stop()
    to_guard = relay.handler.to("garde@exemple.fr")
    assert len(to_guard) == (1 if expect_alert else 0)
    assert {m.rcpt[0] for m in relay.handler.messages} - {"garde@exemple.fr"} == addresses - {"m03@exemple.fr"}
    if expect_alert:
        assert "reached 3 of 4 (4 required)" in text


def test_stand_down_stops_the_background_retries(workspace, capsys, monkeypatch):
    monkeypatch.setenv("CRISISBOT_TEST_WEBHOOK_SECRET", "unused-by-readers")
    addresses = committee(workspace, 3)
    relay = Relay()  # down
    webhook, web = free_port(), free_port()
    configure(workspace, [relay.port], webhook=webhook, web=web)
    daemon = Daemon(workspace, webhook, web).start()
    try:
        daemon.fire()
        wait_until(lambda: set(delivery_states(timeline(workspace, capsys)).values()) == {"retrying"},
                   what="the messages to wait")
        capsys.readouterr()
        assert main(["-c", str(workspace.config_path), "incidents"]) == 0
        incident_id = latest(capsys.readouterr().out)
        assert main(["-c", str(workspace.config_path), "stand-down", incident_id, "--false-alarm",
                     "--reason", "test du bouton"]) == 0
        wait_until(lambda: daemon.health()["status"] == "up", what="/health to say up once the incident ended")
        states = delivery_states(timeline(workspace, capsys))
        relay.start()
        time.sleep(1.0)  # several retry periods (retry_cap 300 ms): nothing may be sent now
    finally:
        daemon.stop()
        relay.stop()
    assert {a: states[a] for a in addresses} == {a: "failed" for a in addresses}
    assert not relay.handler.messages
