"""Another process locking the store, and a damaged store file.

A lock held longer than SQLite's busy timeout must not fail a running convocation
(every email delivered is recorded), and an alarm refused while the store was locked
must get in when its sender retries the very same signed request. A damaged file
stops the start at once with the way out (backup/restore), and `audit verify`
reports the damage as a finding."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import RecordingHandler, SmtpServer
from store_helpers import (COMMITTEE, HANG, add_people, alarm_request, configure, crisisbot, post, run_cli, start,
                           stop, store_rows, wait_until)

HOLDER = textwrap.dedent("""
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    db.execute("COMMIT")
""")


def hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the store's write lock for `seconds` (e.g. a careless sqlite3 shell)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_alarm_refused_while_locked_gets_in_on_retry_and_only_once(workspace):
    handler = RecordingHandler()
    with SmtpServer(handler) as smtp:
        port = configure(workspace, smtp.port)
        daemon = start(workspace, port, workspace.root / "daemon.log")
        try:
            request = alarm_request()
            holder = hold_lock(workspace.root / "var" / "crisisbot.db", 8)
            refused = post(port, request)
            holder.wait(HANG)
            accepted = post(port, request)  # the sender retries the identical request
            replayed = post(port, request)
            wait_until(lambda: {m.rcpt[0] for m in handler.messages} >= COMMITTEE, what="the committee emails")
        finally:
            assert stop(daemon) == 0
    assert refused.status_code == 503 and "send the same request again" in refused.json()["error"]
    assert accepted.status_code == 202, accepted.text
    assert replayed.status_code == 409 and "replayed" in replayed.json()["error"]
    assert sorted(m.rcpt[0] for m in handler.messages) == sorted(COMMITTEE)
    assert store_rows(workspace, "SELECT count(*) FROM alarms") == [(1,)]
    assert store_rows(workspace, "SELECT count(*) FROM incidents") == [(1,)]


def test_a_long_lock_during_the_convocation_loses_no_record(workspace):
    handler = RecordingHandler(data_delay=0.2)  # the convocation takes a few seconds
    with SmtpServer(handler) as smtp:
        port = configure(workspace, smtp.port, connections=1)
        everyone = COMMITTEE | add_people(workspace, 20)
        log = workspace.root / "daemon.log"
        daemon = start(workspace, port, log)
        try:
            assert post(port, alarm_request()).status_code == 202
            wait_until(lambda: handler.messages, what="the first email")
            holder = hold_lock(workspace.root / "var" / "crisisbot.db", 10)  # twice SQLite's busy timeout
            assert len(handler.messages) < len(everyone), "the convocation ended before the lock"
            holder.wait(HANG)
            wait_until(lambda: store_rows(workspace, "SELECT status, outcome FROM incidents") == [("open", "done")],
                       timeout=HANG, what="the incident to complete")
        finally:
            assert stop(daemon) == 0
    assert sorted(m.rcpt[0] for m in handler.messages) == sorted(everyone)
    sent = store_rows(workspace, "SELECT address FROM deliveries WHERE step_id='convocation' AND status='sent'")
    assert sorted(a for (a,) in sent) == sorted(everyone)
    assert store_rows(workspace, "SELECT count(*) FROM audit WHERE kind='step.failed'") == [(0,)]
    assert "retrying until it passes" in log.read_text()
    assert run_cli(workspace, "audit", "verify").returncode == 0


def _audit_root_page(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (page,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='audit'").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    return (page - 1) * size, size


def _with_history(workspace) -> tuple[int, Path]:
    """A store with one finished incident in it; returns (webhook port, database path)."""
    handler = RecordingHandler()
    with SmtpServer(handler) as smtp:
        port = configure(workspace, smtp.port)
        daemon = start(workspace, port, workspace.root / "daemon.log")
        try:
            assert post(port, alarm_request()).status_code == 202
            wait_until(lambda: len(handler.messages) >= len(COMMITTEE), what="the committee emails")
            backup = run_cli(workspace, "backup", str(workspace.root / "good.db"))
            assert backup.returncode == 0, backup.stdout + backup.stderr
        finally:
            assert stop(daemon) == 0
    return port, workspace.root / "var" / "crisisbot.db"


def test_damaged_audit_page_stops_the_start_and_is_an_audit_finding(workspace):
    port, db = _with_history(workspace)
    offset, size = _audit_root_page(db)
    with db.open("r+b") as f:
        f.seek(offset)
        f.write(b"\xa5" * size)

    daemon = crisisbot(workspace, "run")
    out, _ = daemon.communicate(timeout=HANG)
    assert daemon.returncode != 0
    assert "damaged" in out.decode() and "crisisbot backup" in out.decode(), out.decode()
    assert "Traceback" not in out.decode()

    verify = run_cli(workspace, "audit", "verify")
    assert verify.returncode == 1
    assert "damaged" in verify.stderr and "Traceback" not in verify.stderr + verify.stdout, verify.stderr

    # the documented restore: the copy made by `crisisbot backup` replaces the damaged file
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(workspace.root / "good.db", db)
    assert run_cli(workspace, "audit", "verify").returncode == 0
    assert run_cli(workspace, "incidents").stdout.splitlines()[1].split()[3:5] == ["open", "done"]


def test_a_file_that_is_not_a_database_stops_the_start_with_the_way_out(workspace):
    _, db = _with_history(workspace)
    with db.open("r+b") as f:
        f.write(b"this is not SQLite")
    daemon = crisisbot(workspace, "run")
    out, _ = daemon.communicate(timeout=HANG)
    assert daemon.returncode != 0
    assert "damaged" in out.decode() and "crisisbot backup" in out.decode(), out.decode()
    verify = run_cli(workspace, "audit", "verify")
    assert verify.returncode == 1 and "damaged" in verify.stderr, verify.stderr + verify.stdout
