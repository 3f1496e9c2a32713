"""The store's schema is versioned: a `var/` from the release before versioning opens and keeps
its history; a store from a newer crisisbot is refused with the way out.

fixtures/store-7204856.sql was written by the code of commit 7204856 itself (the release before
this one), with fixtures/make_store_7204856.py, and dumped as SQL so the fixture stays readable.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from crisisbot.config.bundle import load_bundle
from crisisbot.models import IncidentStatus, PlaybookOutcome
from crisisbot.store.migrations import SCHEMA_VERSION
from crisisbot.store.sqlite import SqliteStore
from daemon_helpers import fire_manual, running_daemon

FIXTURES = Path(__file__).parent / "fixtures"


def _cli(ws, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crisisbot", "-c", str(ws.config_path), *args],
                          capture_output=True, text=True, timeout=120)


def _db(ws) -> Path:
    path = load_bundle(ws.config_path).data_dir / "crisisbot.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _release_store(ws) -> Path:
    path = _db(ws)
    with sqlite3.connect(path) as conn:
        conn.executescript((FIXTURES / "store-7204856.sql").read_text())
    return path


def _schema(path: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {(t, f"{c[1]} {c[2]} notnull={c[3]} default={c[4]} pk={c[5]}")
                for t in tables for c in conn.execute(f"PRAGMA table_info({t})")}


def _version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


async def test_release_store_is_upgraded_and_keeps_incidents_and_audit_chain(workspace):
    path = _release_store(workspace)
    with sqlite3.connect(path) as conn:
        old_audit = conn.execute("SELECT seq, hash FROM audit ORDER BY seq").fetchall()
    assert _version(path) == 0

    verified = _cli(workspace, "audit", "verify")  # the first open upgrades the store
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert _version(path) == SCHEMA_VERSION

    listed = _cli(workspace, "incidents")
    assert listed.returncode == 0, listed.stderr
    for title in ("Panic at reception", "Panic at the loading bay", "Intrusion, east gate"):
        assert title in listed.stdout

    async with running_daemon(workspace) as daemon:  # the daemon runs on it and adds to the chain
        store = daemon.runtime.store
        old = {i.id: (i.status, i.outcome) for i in await store.list_incidents() if i.id.startswith("old-")}
        assert [a.person_id for a in await store.get_acks("old-resolved")] == ["chloe", "david"]
        new = await fire_manual(daemon, label="After the upgrade")
        assert (await store.get_incident(new.id)).outcome is PlaybookOutcome.done  # type: ignore[union-attr]

    # `completed` of the old release meant "playbook ended, incident still open"
    assert old == {"old-completed": (IncidentStatus.open, PlaybookOutcome.done),
                   "old-nobody": (IncidentStatus.open, PlaybookOutcome.failed),
                   "old-resolved": (IncidentStatus.resolved, PlaybookOutcome.done_with_failures)}
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT seq, hash FROM audit ORDER BY seq LIMIT ?",
                            (len(old_audit),)).fetchall() == old_audit  # history untouched
        assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] > len(old_audit)
    verified = _cli(workspace, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_upgraded_store_has_the_schema_of_a_new_one(workspace, tmp_path):
    """The two paths to today's schema (fresh, or release + every step) give the same tables."""
    upgraded = _release_store(workspace)
    for path in (upgraded, tmp_path / "fresh.db"):
        store = SqliteStore(path)
        await store.open()
        await store.close()
    assert _schema(upgraded) == _schema(tmp_path / "fresh.db")
    assert _version(upgraded) == _version(tmp_path / "fresh.db") == SCHEMA_VERSION


async def test_unversioned_store_with_later_tables_is_adopted(tmp_path):
    """Stores written between the release and versioning already have some later tables and
    columns at version 0: every step tolerates what is already there."""
    path = tmp_path / "interim.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 0")
    store = SqliteStore(path)
    await store.open()
    await store.close()
    assert _version(path) == SCHEMA_VERSION


def test_store_from_a_newer_crisisbot_is_refused(workspace):
    path = _release_store(workspace)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    for args in (("audit", "verify"), ("run",)):
        refused = _cli(workspace, *args)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"schema version {SCHEMA_VERSION + 1}, written by a newer crisisbot" in refused.stderr
        assert "restore a backup" in refused.stderr and "Traceback" not in refused.stderr
    assert _version(path) == SCHEMA_VERSION + 1 and path.read_bytes() == before  # left as it was
