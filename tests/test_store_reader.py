"""The store opened for reading by another process (the web child): it sees what the
daemon commits, refuses every write before SQLite sees it, never checkpoints, and
refuses a missing store or one of another schema version with a message."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from crisisbot.errors import StoreError
from crisisbot.models import Alarm, Incident, IncidentStatus, utcnow
from crisisbot.store import open_store
from crisisbot.store.migrations import SCHEMA_VERSION
from crisisbot.store.sqlite import SqliteStore

PEER = Path(__file__).with_name("store_reader_peer.py")
HANG = 60.0


class Peer:
    """The reader process, spoken to in JSON lines."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, str(PEER), str(db)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.first = self._line()

    def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(HANG)
            raise AssertionError(f"the reader process ended: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return json.loads(line)

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self) -> dict[str, Any]:
        answer = self.ask(op="close")
        assert self.proc.wait(HANG) == 0
        return answer

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(HANG)


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def incident(incident_id: str, title: str) -> Incident:
    return Incident(incident_id, "paris-hq", "p", IncidentStatus.open, utcnow(), utcnow(), title)


async def test_a_reader_in_another_process_sees_what_a_running_writer_commits(tmp_path):
    db = tmp_path / "store.db"
    writer = SqliteStore(db)
    await writer.open()
    peer: Peer | None = None
    try:
        await writer.create_incident(incident("first", "before the reader"), Alarm(source="t", site="paris-hq"))
        peer = Peer(db)
        assert peer.first == {"ready": True}
        before = peer.ask(op="get", id="first")
        await writer.create_incident(incident("second", "while the reader is open"), Alarm(source="t", site="paris-hq"))
        await writer.audit("test.note", "second", {"n": 1})
        after = peer.ask(op="get", id="second")
        listed = peer.ask(op="list")
        written = len(await writer.audit_entries())
        closed = peer.close()
        await writer.create_incident(incident("third", "after"), Alarm(source="t", site="paris-hq"))  # not held up
    finally:
        if peer is not None:
            peer.kill()
        await writer.close()
    assert before == {"found": True, "title": "before the reader"}
    assert after == {"found": True, "title": "while the reader is open"}
    assert set(listed["ids"]) == {"first", "second"} and listed["audit"] == written
    assert closed == {"closed": True, "threads": []}  # nothing left running: the process can exit


async def test_every_write_through_a_reader_is_refused_before_sqlite_and_the_file_is_untouched(tmp_path):
    db = tmp_path / "store.db"
    writer = SqliteStore(db)
    await writer.open()
    await writer.create_incident(incident("x", "kept"), Alarm(source="t", site="paris-hq"))
    await writer.close()
    before = digest(db)
    peer = Peer(db)
    try:
        assert peer.first == {"ready": True}
        errors = peer.ask(op="write")["errors"]
        listed = peer.ask(op="list")
        peer.close()
    finally:
        peer.kill()
    assert len(errors) == 8
    assert all("this store was opened for reading" in message for message in errors.values()), errors
    assert digest(db) == before
    assert listed["ids"] == ["x"]


def test_a_reader_never_checkpoints_not_even_as_the_last_connection(tmp_path):
    """A writer dies with commits still in the WAL only; the reader sees them, and its
    close (the last connection to the file) copies nothing into the database and keeps
    the WAL, as a read-write connection's close would not."""
    db = tmp_path / "store.db"

    async def create() -> None:
        store = SqliteStore(db)
        await store.open()
        await store.close()

    asyncio.run(create())
    killed = subprocess.run([sys.executable, "-c", f"""
import os, sqlite3
conn = sqlite3.connect({str(db)!r}, isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint=0")
for i in range(200):
    conn.execute("INSERT INTO incidents(id, site, playbook, status, title, drill, opened_at, updated_at, last_alarm_at) "
                 "VALUES (?, 's', 'p', 'open', 't', 0, '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00', "
                 "'2026-01-01T00:00:00+00:00')", (f"i{{i:03d}}",))
os._exit(0)  # no close: nothing checkpoints
"""], timeout=HANG)
    assert killed.returncode == 0
    wal = Path(f"{db}-wal")
    before = (digest(db), digest(wal), wal.stat().st_size)
    assert before[2] > 0
    peer = Peer(db)
    try:
        assert peer.first == {"ready": True}
        listed = peer.ask(op="list")
        peer.close()
    finally:
        peer.kill()
    assert len(listed["ids"]) == 50  # list_incidents' default limit: read through the WAL
    assert (digest(db), digest(wal), wal.stat().st_size) == before


async def test_a_reader_on_a_missing_store_says_so_and_creates_nothing(tmp_path):
    missing = tmp_path / "var" / "store.db"
    peer = Peer(missing)
    try:
        answer = peer.first
        assert peer.proc.wait(HANG) == 1
    finally:
        peer.kill()
    assert "StoreError" in answer["error"] and "does not exist" in answer["error"], answer
    assert "the daemon creates it" in answer["error"]
    assert not missing.parent.exists()


@pytest.mark.parametrize("found, words", [
    (SCHEMA_VERSION - 1, "the daemon has not upgraded the store yet"),
    (SCHEMA_VERSION + 1, "written by a newer crisisbot"),
])
async def test_a_reader_refuses_a_store_of_another_schema_version(tmp_path, found, words):
    db = tmp_path / "store.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.execute(f"PRAGMA user_version = {found}")
    conn.close()
    threads = threading.active_count()
    store = SqliteStore(db, reader=True)
    with pytest.raises(StoreError, match=words):
        await store.open()
    await store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == found  # not migrated
    conn.close()
    assert threading.active_count() == threads, [t.name for t in threading.enumerate()]  # its connection's thread ended


async def test_open_store_gives_a_reader_when_asked(tmp_path):
    writer = open_store("sqlite:///{data}/s.db", tmp_path)
    await writer.open()
    try:
        reader = open_store("sqlite:///{data}/s.db", tmp_path, reader=True)
        await reader.open()
        try:
            assert isinstance(reader, SqliteStore) and reader.reader
            assert await reader.list_incidents() == []
            with pytest.raises(StoreError, match="opened for reading"):
                await reader.audit("x", None, {})
        finally:
            await reader.close()
    finally:
        await writer.close()
