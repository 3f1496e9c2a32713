"""Honest status: the incident's state and its playbook's outcome, shown apart on every
surface (CLI list and timeline, console and API, report), with a real SMTP relay that
refuses the committee; the CLI's quiet exit on a closed pipe; `trigger` never acts
in-process behind a busy daemon."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx

from conftest import RecordingHandler, SmtpServer
from crisisbot.config.bundle import load_bundle
from crisisbot.models import Alarm, Incident, IncidentStatus, PlaybookOutcome, utcnow
from crisisbot.store.instance import InstanceLock
from crisisbot.store.migrations import BASE_SCHEMA as SCHEMA
from crisisbot.store.sqlite import SqliteStore
from daemon_helpers import fire_manual, running_daemon
from test_console import enable_console, login

COMMITTEE = ["alice.martin@exemple.fr", "chloe.dubois@exemple.fr", "david.smith@exemple.fr",
             "bruno.leroy@exemple.fr"]


def crisisbot(ws, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crisisbot", "-c", str(ws.config_path), *args],
                          capture_output=True, text=True, timeout=120, **kw)


def use_relay(ws, port: int) -> None:
    ws.use_smtp(port)
    ws.edit_config(lambda d: d["mail"].update(retries=0))


async def test_convocation_that_reached_nobody_is_open_and_failed_everywhere(workspace):
    enable_console(workspace)
    with SmtpServer(RecordingHandler(reject=set(COMMITTEE))) as relay:
        use_relay(workspace, relay.port)
        async with running_daemon(workspace) as daemon:
            incident = await fire_manual(daemon, label="Nobody reached")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.web.port}") as client:
                assert (await login(client, "operator")).status_code == 303
                listing = (await client.get("/api/incidents")).json()
                detail = (await client.get(f"/api/incidents/{incident.id}")).json()
                page = (await client.get(f"/console/incidents/{incident.id}")).text
                index = (await client.get("/console")).text
    assert relay.handler.messages == []  # the relay refused every committee member

    assert listing[0]["id"] == incident.id
    assert (listing[0]["status"], listing[0]["outcome"]) == ("open", "failed")
    assert (detail["status"], detail["outcome"]) == ("open", "failed")
    assert "step convocation failed: reached 0 of 4" in detail["outcome_reason"]
    assert 'id="status">open<' in page and 'id="outcome">failed<' in page
    assert '<td class="outcome-failed">failed</td>' in index

    listed = crisisbot(workspace, "incidents")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert "STATE" in header and "PLAYBOOK OUTCOME" in header
    assert row.split()[3:5] == ["open", "failed"] and "completed" not in listed.stdout
    shown = crisisbot(workspace, "incidents", "show", incident.id[:8])
    assert "state:    open" in shown.stdout
    assert "playbook outcome: failed — step convocation failed: reached 0 of 4" in shown.stdout
    assert "playbook.finished" in shown.stdout
    report = crisisbot(workspace, "report", incident.id)
    assert report.returncode == 0, report.stderr
    assert "| State | **open** |" in report.stdout
    assert "| Playbook outcome | **failed** — step convocation failed: reached 0 of 4" in report.stdout


async def test_outcome_done_and_done_with_failures(workspace):
    with SmtpServer(RecordingHandler(reject={"chloe.dubois@exemple.fr"})) as relay:
        use_relay(workspace, relay.port)
        async with running_daemon(workspace) as daemon:
            partial = await fire_manual(daemon, label="One refused")
            relay.handler.reject.clear()
            await daemon.runtime.store.set_incident_status(partial.id, IncidentStatus.resolved, "test")
            full = await fire_manual(daemon, label="All reached")
            partial = await daemon.runtime.store.get_incident(partial.id)
            full = await daemon.runtime.store.get_incident(full.id)
    assert (partial.status, partial.outcome) == (IncidentStatus.resolved, PlaybookOutcome.done_with_failures)
    assert "convocation did not reach 1 recipient(s)" in partial.data["outcome_reason"]
    assert (full.status, full.outcome) == (IncidentStatus.open, PlaybookOutcome.done)


def _legacy_store(path: Path) -> None:
    """A store written before state and outcome were apart: `completed` in `status`."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    rows = [("reached-nobody", "completed"), ("all-good", "completed"), ("closed", "resolved"),
            ("in-flight", "open")]
    for incident_id, status in rows:
        conn.execute("INSERT INTO incidents(id, site, playbook, status, title, drill, opened_at, updated_at, "
                     "last_alarm_at, data) VALUES (?, 'paris-hq', 'panic', ?, ?, 0, ?, ?, ?, '{}')",
                     (incident_id, status, incident_id, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00",
                      "2026-01-01T00:00:00+00:00"))
        conn.execute("INSERT INTO steps(incident_id, step_id, status) VALUES (?, 'meeting', 'done')", (incident_id,))
    conn.execute("INSERT INTO steps(incident_id, step_id, status, detail) VALUES "
                 "('reached-nobody', 'convocation', 'failed', 'no message could be delivered')")
    conn.execute("INSERT INTO deliveries(key, incident_id, step_id, person_id, address, status, updated_at) VALUES "
                 "('k1', 'reached-nobody', 'convocation', 'alice', 'a@x', 'rejected', '2026-01-01T00:00:00+00:00')")
    conn.commit()
    conn.close()


async def test_existing_store_is_migrated_additively(tmp_path):
    _legacy_store(tmp_path / "old.db")
    store = SqliteStore(tmp_path / "old.db")
    await store.open()
    try:
        found = {i.id: (i.status.value, i.outcome.value) for i in await store.list_incidents()}
        running = [i.id for i in await store.active_incidents() if i.outcome is PlaybookOutcome.running]
        alarm = Alarm(source="t", site="paris-hq")
        await store.add_alarm(alarm)
        await store.create_incident(Incident("new", "paris-hq", "panic", IncidentStatus.open, utcnow(), utcnow()), alarm)
    finally:
        await store.close()
    assert found == {"reached-nobody": ("open", "failed"), "all-good": ("open", "done"),
                     "closed": ("resolved", "done"), "in-flight": ("open", "running")}
    assert running == ["in-flight"]  # only the unfinished playbook is resumed at start
    store = SqliteStore(tmp_path / "old.db")  # opening again migrates nothing twice
    await store.open()
    try:
        assert (await store.get_incident("reached-nobody")).outcome is PlaybookOutcome.failed  # type: ignore[union-attr]
    finally:
        await store.close()


async def _many_incidents(ws, count: int) -> None:
    bundle = load_bundle(ws.config_path)
    store = SqliteStore(bundle.data_dir / "crisisbot.db")
    await store.open()
    try:
        for n in range(count):
            alarm = Alarm(source="t", site="paris-hq")
            await store.add_alarm(alarm)
            await store.create_incident(Incident(f"i{n:05d}", "paris-hq", "panic", IncidentStatus.open, utcnow(),
                                                 utcnow(), title=f"incident number {n} " + "x" * 60), alarm)
    finally:
        await store.close()


async def test_incidents_into_a_closed_pipe_exit_quietly(workspace):
    await _many_incidents(workspace, 1200)  # far more than a pipe buffer holds
    piped = subprocess.run(["bash", "-o", "pipefail", "-c",
                            f"{sys.executable} -m crisisbot -c {workspace.config_path} incidents --limit 5000 | head -1"],
                           capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("ID") and piped.stderr == ""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    try:
        closed = subprocess.run([sys.executable, "-m", "crisisbot", "-c", str(workspace.config_path), "incidents"],
                                stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert closed.returncode == 0 and closed.stderr == ""


def test_trigger_behind_a_busy_daemon_says_so_and_does_nothing_in_process(workspace):
    path = load_bundle(workspace.config_path).control_socket
    path.parent.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(0)  # a daemon that does not accept: its backlog fills at once
    waiting = []
    try:
        while True:
            client = socket.socket(socket.AF_UNIX)
            client.setblocking(False)
            try:
                client.connect(str(path))
            except BlockingIOError:
                client.close()
                break
            waiting.append(client)
        result = crisisbot(workspace, "trigger", "--site", "paris-hq", "--label", "Behind a busy daemon",
                           "--wait", "0.3")
    finally:
        for client in waiting:
            client.close()
        listener.close()
    assert result.returncode == 1
    assert "too busy" in result.stderr and "nothing was done in this process" in result.stderr
    assert "Traceback" not in result.stderr and "in this process" not in result.stdout
    assert not list((workspace.root / "var").rglob("*.eml"))
    listed = crisisbot(workspace, "incidents")
    assert listed.stdout.strip() == "no incidents"


def test_trigger_never_acts_in_process_while_a_daemon_holds_the_data_directory(workspace):
    """No control socket to ask (removed, or not yet created), but a daemon holds the data."""
    data_dir = load_bundle(workspace.config_path).data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    holder = InstanceLock(data_dir).acquire()
    try:
        result = crisisbot(workspace, "trigger", "--site", "paris-hq", "--label", "Behind a locked store")
    finally:
        holder.release()
    assert result.returncode == 1 and "already uses the data directory" in result.stderr, result.stderr
    assert "handling the alarm in this process" not in result.stderr and "Traceback" not in result.stderr
    assert crisisbot(workspace, "incidents").stdout.strip() == "no incidents"
