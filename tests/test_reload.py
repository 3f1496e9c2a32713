"""Hot reload: a valid change is taken; an invalid one is refused and the last good
configuration keeps running; inputs whose settings did not change are not disturbed, and
what inputs remember survives a restart of the daemon too."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from pysiaalarm.event import BaseEvent

from conftest import free_port
from daemon_helpers import running_daemon
from test_trigger_modbus import DI, Plc, sim_device


async def test_invalid_reload_keeps_last_good_config_and_valid_one_applies(workspace, caplog):
    async with running_daemon(workspace) as daemon:
        good = daemon.runtime.bundle
        playbook = workspace.root / "playbooks" / "panic.yaml"
        original = playbook.read_text()
        playbook.write_text(original.replace("template: committee_alert", "template: missing"))
        assert await daemon.reload() is False
        assert daemon.runtime.bundle is good
        assert "reload refused, keeping the last good configuration" in caplog.text
        assert "playbooks/panic.yaml:" in caplog.text and "unknown template 'missing'" in caplog.text

        playbook.write_text(original.replace("priority: 10", "priority: 20"))
        assert await daemon.reload() is True
        assert daemon.runtime.bundle.playbook("panic").priority == 20
        kinds = [e.kind for e in await daemon.runtime.store.audit_entries()]
    assert kinds.count("config.loaded") == 2 and "config.rejected" in kinds


async def test_reload_that_cannot_start_an_input_restores_the_previous_ones(workspace, monkeypatch):
    import httpx

    from daemon_helpers import enable_webhook

    port = free_port()
    enable_webhook(workspace, port=port)
    async with running_daemon(workspace, monkeypatch) as daemon:
        with socket.socket() as squatter:  # another program holds the new port
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            workspace.edit_config(lambda d: d["triggers"]["hook"].update({"port": taken}))
            assert await daemon.reload() is False
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{port}/health")
        kinds = [e.kind for e in await daemon.runtime.store.audit_entries()]
        connectors = set(daemon.runtime.connectors)
    assert health.status_code == 200  # the previous webhook listens again
    assert "config.rejected" in kinds and connectors == {"outbox", "jitsi"}


# -- a reload (or a restart) leaves unchanged inputs alone ------------------------------------


# a plain SIA DCS panic report *without* timestamp: only the receiver's memory tells a repeat
PANIC_NO_TIMESTAMP = '"SIA-DCS"0007R1L0#1234[#1234|Nri1/PA01]'


def dc09_frame(body: str) -> bytes:
    """Framing and CRC from pysiaalarm, not from the receiver's codec."""
    return f"\n{BaseEvent._crc_calc(body)}{len(body):04X}{body}\r".encode("ascii")


async def dc09_send(port: int, body: str) -> str:
    """Send one frame over TCP as a panel does; the receiver's reply body (ACK, DUH…)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(dc09_frame(body))
        await writer.drain()
        reply = await asyncio.wait_for(reader.readuntil(b"\r"), 30)
    finally:
        writer.close()
    return reply[9:-1].decode("ascii")


def add_inputs(ws: Any, plc_port: int, dc09_port: int, *, poll: str = "20ms", supervision: str = "1s") -> None:
    def change(data: dict[str, Any]) -> None:
        data["triggers"].update({
            "plc": {"type": "modbus", "devices": {"hall": {
                "host": "127.0.0.1", "port": plc_port, "site": "paris-hq", "poll": poll, "timeout": "300ms",
                "inputs": [{"name": "btn-reception", "address": 5, "zone": "accueil", "label": "Bouton panique"}]}}},
            "arc": {"type": "sia-dc09", "host": "127.0.0.1", "port": dc09_port, "udp": False,
                    "accounts": [{"account": "1234", "site": "paris-hq", "supervision": supervision}]},
            "bus": {"type": "mqtt", "host": "127.0.0.1", "port": 1883, "keepalive": 30,
                    "client_id": f"crisisbot-test-{uuid.uuid4().hex[:8]}",  # the broker is shared
                    "rules": [{"topic": "crisisbot-test/reload/+", "site": "paris-hq"}]},
        })
    ws.edit_config(change)


def alarms_in(db: Path) -> list[dict[str, Any]]:
    """The alarms the store holds, read as an operator would (read-only, beside the daemon)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [json.loads(body) for (body,) in conn.execute("SELECT body FROM alarms ORDER BY received_at")]


def count(alarms: list[dict[str, Any]], source: str, kind: str) -> int:
    return sum(1 for a in alarms if a["source"] == source and a["kind"] == kind)


def summary(alarms: list[dict[str, Any]]) -> list[str]:
    """What an assertion message shows: each alarm as source/kind at its time."""
    return [f"{a['source']}/{a['kind']}@{a['received_at'][11:23]}" for a in alarms]


async def until(predicate: Any, what: str, timeout: float = 60.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def polls(trigger: Any, more: int = 5) -> None:
    target = trigger.stats["polls"] + more
    await until(lambda: trigger.stats["polls"] >= target, "Modbus polls")


async def test_reload_of_mqtt_keepalive_disturbs_no_other_input(workspace) -> None:
    plc = await Plc([sim_device()]).start()
    dc09_port = free_port()
    try:
        await plc.set(DI, 5, True)  # someone holds the panic button through the reloads
        add_inputs(workspace, plc.port, dc09_port)
        async with running_daemon(workspace) as daemon:
            db = daemon.bundle.data_dir / "crisisbot.db"
            store = daemon.runtime.store
            await until(lambda: count(alarms_in(db), "plc", "panic") == 1, "the held button's alarm")
            # whatever the machine's speed: silent from the start (a fault), then heard (a restore
            # and its panic), then silent again (a second fault) when the reloads come
            await until(lambda: count(alarms_in(db), "arc", "input_fault") == 1, "the silent panel's input_fault")
            assert (await dc09_send(dc09_port, PANIC_NO_TIMESTAMP)).startswith('"ACK"')
            await until(lambda: count(alarms_in(db), "arc", "input_fault") == 2, "the panel silent again")
            arc, plc_trigger = daemon.runtime.triggers["arc"], daemon.runtime.triggers["plc"]
            outputs = dict(daemon.runtime.connectors)

            workspace.edit_config(lambda d: d["triggers"]["bus"].update({"keepalive": 45}))
            assert await daemon.reload() is True
            assert daemon.runtime.triggers["arc"] is arc and daemon.runtime.triggers["plc"] is plc_trigger
            assert daemon.runtime.triggers["bus"].config.keepalive == 45
            assert all(daemon.runtime.connectors[n] is c for n, c in outputs.items())  # outputs untouched too
            loaded = [e for e in await store.audit_entries() if e.kind == "config.loaded"][-1]
            assert loaded.data["restarted"] == ["triggers.bus"], loaded.data

            # only the Modbus poll interval changes: that input restarts, and remembers the held button
            workspace.edit_config(lambda d: d["triggers"]["plc"]["devices"]["hall"].update({"poll": "30ms"}))
            assert await daemon.reload() is True
            restarted = daemon.runtime.triggers["plc"]
            assert restarted is not plc_trigger
            await polls(restarted, 10)
            await asyncio.sleep(3)  # three supervision periods of the silent panel: no second input_fault

            alarms = alarms_in(db)
            assert count(alarms, "plc", "panic") == 1, f"the held button fired again: {summary(alarms)}"
            assert count(alarms, "arc", "input_fault") == 2, f"the panel's fault reported again: {summary(alarms)}"
            assert (await dc09_send(dc09_port, PANIC_NO_TIMESTAMP)).startswith('"ACK"')  # the panel repeats
            alarms = alarms_in(db)
            assert count(alarms, "arc", "panic") == 1, f"the repeated frame was stored twice: {summary(alarms)}"
            assert count(alarms, "arc", "restore") == 2, summary(alarms)
            assert arc.stats["duplicates"] == 1
            _, checks = await daemon.runtime.health.gather()  # the detailed /health payload
            inputs = checks["inputs"]["triggers"]
            assert inputs["arc"]["counters"]["duplicates"] == 1
            assert inputs["bus"]["type"] == "mqtt" and "unknown_site" in inputs["bus"]["counters"]
    finally:
        await plc.stop()


# -- the same across a restart of the daemon process ------------------------------------------

def run_daemon(ws: Any, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "crisisbot", "-c", str(ws.config_path), "run"],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=dict(os.environ))


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def status(ws: Any) -> dict[str, Any]:
    """The counters through `crisisbot status --json`, as an operator reads them."""
    done = subprocess.run([sys.executable, "-m", "crisisbot", "-c", str(ws.config_path), "status", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def wait_status(ws: Any, daemon: subprocess.Popen, predicate: Any, what: str) -> dict[str, Any]:
    async with asyncio.timeout(90):
        while True:
            assert daemon.poll() is None, f"the daemon exited ({daemon.returncode}) while waiting for {what}"
            try:
                counters = await asyncio.to_thread(status, ws)
                if predicate(counters):
                    return counters
            except AssertionError:
                pass  # not listening yet
            await asyncio.sleep(0.2)


async def stop(daemon: subprocess.Popen) -> None:
    daemon.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(daemon.wait, 30) == 0


async def test_restart_keeps_held_button_reported_fault_and_recent_frames(workspace) -> None:
    plc = await Plc([sim_device()]).start()
    dc09_port = free_port()
    log = workspace.root / "daemon.log"
    db = workspace.root / "var" / "crisisbot.db"
    try:
        await plc.set(DI, 5, True)
        add_inputs(workspace, plc.port, dc09_port)
        daemon = run_daemon(workspace, log)
        try:
            # silent from the start (a fault), heard (a restore, a panic), silent again (a second fault)
            await wait_status(workspace, daemon, lambda c: c["arc"]["counters"]["faults"] >= 1, "the panel's fault")
            assert (await dc09_send(dc09_port, PANIC_NO_TIMESTAMP)).startswith('"ACK"')
            counters = await wait_status(workspace, daemon, lambda c: c["arc"]["counters"]["faults"] >= 2,
                                         "the panel silent again")
            assert counters["plc"]["counters"]["alarms"] == 1 and counters["arc"]["counters"]["faults"] == 2
            await stop(daemon)

            daemon = run_daemon(workspace, log)
            polled = lambda c: c["plc"]["counters"]["polls"] >= 20  # noqa: E731 - the button read, still held
            counters = await wait_status(workspace, daemon, polled, "Modbus polls after the restart")
            await asyncio.sleep(3)  # three supervision periods of the silent panel
            counters = await asyncio.to_thread(status, workspace)
            assert counters["plc"]["counters"]["alarms"] == 0, "the held button fired again after the restart"
            assert counters["arc"]["counters"]["faults"] == 0, "the silent panel was reported twice"
            assert (await dc09_send(dc09_port, PANIC_NO_TIMESTAMP)).startswith('"ACK"')
            counters = await asyncio.to_thread(status, workspace)
            assert counters["arc"]["counters"]["duplicates"] == 1
        finally:
            if daemon.poll() is None:
                await stop(daemon)
    finally:
        await plc.stop()
    alarms = alarms_in(db)
    assert count(alarms, "plc", "panic") == 1
    assert count(alarms, "arc", "panic") == 1, "the repeated frame was stored twice"
    assert count(alarms, "arc", "restore") == 2  # one per run, each when the panel spoke
    restored = [i for i, a in enumerate(alarms) if a["source"] == "arc" and a["kind"] == "restore"][-1]
    assert count(alarms[:restored], "arc", "input_fault") == 2  # (silent again after it: a new, real fault)
    assert "Traceback" not in log.read_text()


def test_status_without_a_running_daemon_says_so(workspace, capsys) -> None:
    from crisisbot.cli import main

    assert main(["-c", str(workspace.config_path), "status"]) == 1
    err = capsys.readouterr().err
    assert "no crisisbot daemon answers on" in err and "crisisbot run" in err and "Traceback" not in err


async def test_reload_restarts_only_the_connector_that_changed(workspace) -> None:
    async with running_daemon(workspace) as daemon:
        outbox, jitsi = daemon.runtime.connectors["outbox"], daemon.runtime.connectors["jitsi"]
        cameras = dict(daemon.runtime.cameras)
        workspace.edit_config(lambda d: d["connectors"]["jitsi"].update({"base_url": "https://visio.exemple.fr"}))
        assert await daemon.reload() is True
        assert daemon.runtime.connectors["outbox"] is outbox
        assert daemon.runtime.connectors["jitsi"] is not jitsi
        assert str(daemon.runtime.connectors["jitsi"].config.base_url).startswith("https://visio.exemple.fr")
        assert all(daemon.runtime.cameras[k] is c for k, c in cameras.items())
        loaded = [e for e in await daemon.runtime.store.audit_entries() if e.kind == "config.loaded"][-1]
    assert loaded.data["restarted"] == ["connectors.jitsi"]
