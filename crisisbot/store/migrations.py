"""The SQLite store's schema as numbered steps, recorded in `PRAGMA user_version`.

Why: a `var/` outlives the code that wrote it. Each step brings a store from version
n-1 to n inside one transaction that also bumps `user_version`, so a crash mid-upgrade
leaves the previous version intact and the next open finishes the job. A store with a
higher version than this code knows was written by a newer crisisbot: it is refused
rather than written with assumptions that no longer hold.

Hand-written rather than Alembic: the store speaks raw SQLite (no SQLAlchemy), and the
steps are a handful of additive statements. Add a step at the end; never edit or
reorder a released one. Stores written before versioning have `user_version` 0 and may
already hold some later tables or columns (they were added with IF NOT EXISTS checks),
so every step is idempotent.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

from crisisbot.errors import StoreError

# Version 1: the schema of the release before versioning (commit 7204856).
BASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    id TEXT PRIMARY KEY, received_at TEXT NOT NULL, site TEXT NOT NULL, source TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', incident_id TEXT, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alarms_status ON alarms(status);
CREATE INDEX IF NOT EXISTS alarms_incident ON alarms(incident_id);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, site TEXT NOT NULL, playbook TEXT NOT NULL, status TEXT NOT NULL,
    title TEXT NOT NULL, drill INTEGER NOT NULL, opened_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    last_alarm_at TEXT NOT NULL, dedup_key TEXT, data TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS incidents_open ON incidents(site, playbook, status);
CREATE TABLE IF NOT EXISTS steps (
    incident_id TEXT NOT NULL, step_id TEXT NOT NULL, status TEXT NOT NULL, output TEXT,
    detail TEXT NOT NULL DEFAULT '', started_at TEXT, ended_at TEXT,
    PRIMARY KEY (incident_id, step_id));
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT PRIMARY KEY, incident_id TEXT NOT NULL, step_id TEXT NOT NULL, person_id TEXT NOT NULL,
    address TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',
    transport TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_incident ON deliveries(incident_id, step_id);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL, incident_id TEXT,
    data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_incident ON audit(incident_id);
CREATE TABLE IF NOT EXISTS nonces (
    scope TEXT NOT NULL, nonce TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (scope, nonce));
CREATE TABLE IF NOT EXISTS timers (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, due_at TEXT NOT NULL, incident_id TEXT,
    payload TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL DEFAULT 'pending');
CREATE INDEX IF NOT EXISTS timers_due ON timers(status, due_at);
CREATE TABLE IF NOT EXISTS acks (
    incident_id TEXT NOT NULL, person_id TEXT NOT NULL, response TEXT NOT NULL, via TEXT NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (incident_id, person_id));
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY, site TEXT NOT NULL, input TEXT, starts_at TEXT NOT NULL, ends_at TEXT NOT NULL,
    playbook TEXT, reason TEXT NOT NULL, created_by TEXT NOT NULL, ended_at TEXT);
"""

# Stores written before the incident's state and its playbook's outcome were kept
# apart had one `status` where `completed` meant "playbook ended, still open". The
# migration adds the `outcome` column and judges old playbooks from their journal:
# a failed step that has deliveries but not one sent reached nobody (failed), a
# skipped step means the playbook stopped on a failure (failed), any other failed
# step is a partial failure, a step left running means it was stopped.
_OUTCOME_STATEMENTS = [
    "ALTER TABLE incidents ADD COLUMN outcome TEXT NOT NULL DEFAULT 'running'",
    """UPDATE incidents SET outcome = CASE
         WHEN EXISTS (SELECT 1 FROM steps s WHERE s.incident_id = incidents.id AND s.status = 'running')
              THEN 'stopped'
         WHEN EXISTS (SELECT 1 FROM steps s WHERE s.incident_id = incidents.id AND (s.status = 'skipped'
              OR (s.status = 'failed'
                  AND EXISTS (SELECT 1 FROM deliveries d WHERE d.incident_id = s.incident_id AND d.step_id = s.step_id)
                  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.incident_id = s.incident_id
                                  AND d.step_id = s.step_id AND d.status = 'sent'))))
              THEN 'failed'
         WHEN EXISTS (SELECT 1 FROM steps s WHERE s.incident_id = incidents.id AND s.status = 'failed')
              THEN 'done_with_failures'
         ELSE 'done' END
       WHERE status <> 'open'""",
    "UPDATE incidents SET status = 'open' WHERE status = 'completed'",
]


def _script(sql: str) -> Callable[[sqlite3.Connection], None]:
    """A step made of `;`-separated statements (run one by one: executescript would commit)."""
    def run(conn: sqlite3.Connection) -> None:
        for statement in filter(str.strip, sql.split(";")):
            conn.execute(statement)
    return run


def _incident_outcome(conn: sqlite3.Connection) -> None:
    if "outcome" not in {row[1] for row in conn.execute("PRAGMA table_info(incidents)")}:
        for statement in _OUTCOME_STATEMENTS:
            conn.execute(statement)


# Step n brings a store from version n-1 to n. Append only.
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("base schema of the first release", _script(BASE_SCHEMA)),
    ("spool of messages waiting for a mail relay", _script("""
        CREATE TABLE IF NOT EXISTS spool (
            key TEXT PRIMARY KEY, incident_id TEXT NOT NULL, step_id TEXT NOT NULL, sender TEXT NOT NULL,
            channels TEXT NOT NULL, message TEXT NOT NULL, added_at TEXT NOT NULL)""")),
    ("state triggers keep across restarts", _script("""
        CREATE TABLE IF NOT EXISTS trigger_state (
            trigger TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated_at TEXT NOT NULL,
            PRIMARY KEY (trigger, key))""")),
    ("incident state apart from the playbook's outcome", _incident_outcome),
]
SCHEMA_VERSION = len(MIGRATIONS)


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def refuse_newer(conn: sqlite3.Connection, path: Path | str) -> int:
    """The store's version; `StoreError` if a newer crisisbot wrote it (this code would misread it)."""
    found = version(conn)
    if found > SCHEMA_VERSION:
        raise StoreError(f"the store {path} has schema version {found}, written by a newer crisisbot; this "
                         f"version knows up to {SCHEMA_VERSION}. Run the newer crisisbot, or restore a backup "
                         "made by this version (see \"Backup and restore\" in docs/operations.md)")
    return found


def migrate(conn: sqlite3.Connection, path: Path | str) -> int:
    """Bring the store to SCHEMA_VERSION, one transaction per step; return the version found.

    Each step re-reads the version under the write lock, so two processes opening the
    same old store at once apply every step exactly once."""
    found = refuse_newer(conn, path)
    while (current := version(conn)) < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = version(conn)  # another process may have migrated meanwhile
            if current < SCHEMA_VERSION:
                MIGRATIONS[current][1](conn)
                conn.execute(f"PRAGMA user_version = {current + 1}")  # a PRAGMA takes no parameters
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found
