"""SQLite store (the embedded default), in WAL mode.

Alarms are durable before the input acknowledges them (they survive a power cut):
the batch is committed, then the WAL file is fdatasync'ed, and only then are its
alarms answered. That is what `synchronous=FULL` does in WAL mode ("an additional
sync of the WAL after each commit"), split in two so that the sync of one batch
overlaps the commit of the next instead of holding the connection's one thread:
under a burst, commits no longer queue behind each other's disk flush.
Everything else uses `NORMAL`, which in WAL mode survives a crash of the daemon, and
loses at most the last few commits on a power cut — the playbook then resends those
messages rather than forgetting them. The next WAL sync also makes every earlier
commit durable. A sync costs ~0.2-7 ms on the development machine's disk (far more
when other processes flush), a NORMAL commit ~0.02 ms.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from contextlib import asynccontextmanager, closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Sequence, TypeVar

import aiosqlite

from crisisbot.store.records import AckRecord, SilenceRecord, TimerRecord
from crisisbot.models import Alarm, DeliveryStatus, Incident, IncidentStatus, PlaybookOutcome, utcnow
from crisisbot.store.base import (
    GENESIS,
    AuditEntry,
    AuditReport,
    SPOOL_DONE,
    DeliveryRecord,
    Nonce,
    Replayed,
    SpooledMessage,
    StepRecord,
    Store,
    entry_hash,
)
from crisisbot.retry import RetryPolicy
from crisisbot.store.errors import BACKUP_HINT, StoreDamaged, StoreError, damaged, explain, transient
from crisisbot.store.migrations import SCHEMA_VERSION, migrate, refuse_newer
from crisisbot.store.wal_sync import WalSyncThreads

T = TypeVar("T")
CHECKPOINT_EVERY = 0.25  # seconds between passive WAL checkpoints
# The WAL is kept at a fixed size and rewritten from its start (see `_checkpoint_loop`):
# fdatasync of a file that grows also commits its new size to the filesystem's journal,
# which waits for every other file's pending writes (bare fdatasync p99 8 ms overwriting
# vs 22 ms appending on the shared development disk, measured by benchmarks/bench_dc09).
WAL_KEEP = 32 << 20  # bytes: SQLite's journal_size_limit, the size a reused WAL keeps
RESTART_ABOVE = WAL_KEEP // 2  # bytes of WAL frames after which the next commit starts the WAL over
CATCH_UP_PASSES = 8  # unheld checkpoint passes at most before the held one (see `_restart_wal`)
HELD_FRAMES = 64  # WAL frames (256 KiB) left for the held pass to copy: ~10 ms of paced DC-09 commits
TRUNCATE_ABOVE = 4 * WAL_KEEP  # bytes: a fully checkpointed WAL larger than this is truncated to nothing
BUSY_TIMEOUT = 5.0  # seconds SQLite itself waits for another process's lock
READER_BUSY_TIMEOUT = 0.2  # seconds a reader waits (WAL readers wait only while the WAL is recovered or restarted)
READER_RETRY = 2.0  # seconds a reader's query is tried again on a busy file, before the page gets an error
READ_ONLY = ("this store was opened for reading (the web process): writes go to the daemon as commands, "
             "never to the SQLite file")
STORE_RETRY = RetryPolicy(first=0.05, cap=2.0)  # a transient failure (lock, full disk) is tried again
RETRY_REPORT_EVERY = 30.0  # seconds between "still retrying" warnings
INLINE_RECORDS = 16  # delivery records committed on the event loop at most (see `_transaction_inline`)
INLINE_ALARMS = 64  # alarms of one group commit done on the event loop at most (~3 ms; see `_write_alarms`)
SYNC_THREADS = 4  # WAL syncs in flight at once (the kernel merges concurrent flushes of one file)
_datasync = getattr(os, "fdatasync", os.fsync)  # data and size, as SQLite itself syncs on Linux
log = logging.getLogger(__name__)

OPEN_STATUSES = (IncidentStatus.open.value, IncidentStatus.acknowledged.value)
# an entry's data: a dict, or its JSON text already rendered (`_alarm_audit`, the hot path)
AuditData = tuple[str, str | None, dict[str, Any] | str]
Audits = Sequence[AuditData]
OnCommit = Callable[[], None] | None
AlarmBatch = list[tuple[Alarm, Nonce | None, "asyncio.Future[bool]", OnCommit]]


def _ts(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat()


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _at(value: str) -> datetime:
    """A NOT NULL timestamp column."""
    return datetime.fromisoformat(value)


def _writes(statements: list[tuple[str, tuple[Any, ...]]], audits: Audits) -> Callable[[sqlite3.Connection], Audits]:
    """The body of a transaction that runs plain statements and chains their audit entries."""
    def work(conn: sqlite3.Connection) -> Audits:
        for sql, params in statements:
            conn.execute(sql, params)
        return audits

    return work


def _alarm_audit(alarm: Alarm) -> str:
    """The `alarm.received` entry's data, as `_dump` writes it: keys in sorted order, every
    value a str or None (the enums are str), so the compact encoder needs neither to sort
    nor to fall back; one per stored alarm (6.5 -> 2.8 us)."""
    return _COMPACT.encode({
        "action": alarm.action, "alarm_id": alarm.id, "input": alarm.input, "kind": alarm.kind,
        "label": alarm.label, "raw": alarm.raw, "severity": alarm.severity, "site": alarm.site,
        "source": alarm.source, "zone": alarm.zone,
    })


def _stored_alarm_ids(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
    """Which of `ids` the store already holds (in chunks under SQLite's variable limit)."""
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.update(r[0] for r in conn.execute(
            f"SELECT id FROM alarms WHERE id IN ({','.join('?' * len(chunk))})", chunk))
    return found


_COMPACT = json.JSONEncoder(separators=(",", ":"))
_SORTED = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str)


def _dump(data: Any) -> str:
    return _SORTED.encode(data)


def _chain(conn: sqlite3.Connection, audits: Audits, when: datetime, keep: bool = True) -> list[AuditEntry]:
    """Append audit entries after the chain head read *inside* the caller's write
    transaction: whatever else wrote to the file (a second process, a caller cancelled
    mid-hop), the next entry always links to the last one committed.

    The entries of one transaction are committed together and carry its one time;
    they go in with one `executemany` (a group-committed batch of alarms is one call
    into SQLite, not one per alarm). `keep=False`: no `AuditEntry` objects are built
    for a caller that drops them (a batch of alarms)."""
    if not audits:
        return []
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, head = (row[0], row[1]) if row else (0, GENESIS)
    at = _ts(when)
    entries: list[AuditEntry] = []
    rows: list[tuple[Any, ...]] = []
    for kind, incident_id, data in audits:
        seq += 1
        text = data if isinstance(data, str) else _dump(data)
        digest = entry_hash(head, seq, at, kind, incident_id, text)
        rows.append((seq, at, kind, incident_id, text, head, digest))
        if keep:
            entries.append(AuditEntry(seq, when, kind, incident_id,
                                      json.loads(data) if isinstance(data, str) else data, head, digest))
        head = digest
    conn.executemany("INSERT INTO audit(seq, at, kind, incident_id, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?)",
                     rows)
    return entries


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], durable: bool) -> T:
    """`fn` inside BEGIN IMMEDIATE … COMMIT; on failure the *original* error is raised.

    SQLite rolls a transaction back by itself on some errors (a full disk among them);
    an unconditional ROLLBACK would then fail with "no transaction is active" and hide
    the real cause, so we roll back only what is still open."""
    if durable:
        conn.execute("PRAGMA synchronous=FULL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error as exc:  # the connection is reset on the next BEGIN anyway
                    log.warning("rollback after a failed write also failed: %s", exc)
            raise
        return result
    finally:
        if durable:
            conn.execute("PRAGMA synchronous=NORMAL")


def _answer(batch: AlarmBatch, outcome: list[bool | Replayed], failed: BaseException | None) -> None:
    """Answer a committed batch of alarms once its WAL sync has ended (`failed`: its error)."""
    if failed is not None:
        error = StoreError(f"alarms committed but not confirmed on the disk ({failed}); "
                           "the sender's retry is stored once") if not isinstance(failed, StoreError) else failed
        log.error("%s", error)
        for _, _, future, _ in batch:
            if not future.done():
                future.set_exception(error)
        return
    for (_, _, future, _), result in zip(batch, outcome):
        if future.done():
            continue
        if isinstance(result, Replayed):
            future.set_exception(result)
        else:
            future.set_result(result)


async def _checkpoint(db: aiosqlite.Connection, mode: str, start_over: bool = False) -> tuple[int, int, int]:
    """`PRAGMA wal_checkpoint(mode)`: (busy, frames in the WAL, frames copied), in one hop
    to the connection's thread (aiosqlite's execute, fetch and cursor close take three,
    each waiting for a busy event loop: writers held for a checkpoint waited for all of them).

    TRUNCATE does not wait for readers still in the WAL (busy, tried again next round):
    it holds SQLite's write lock while it waits, and an alarm then waited up to the busy
    timeout (5 s) and failed, behind a reader as long as a backup.

    `start_over`: once every frame is copied, a commit of one page here starts the WAL
    over. SQLite does it in the first commit that finds the WAL all copied, and that
    commit also syncs the new WAL header (synchronous=NORMAL or not): left to the next
    writer, that was often the event loop's own inline commit, the loop then stopped for
    a disk flush (0.2 ms on an idle disk, 5-30 ms on a busy one)."""
    def run(conn: sqlite3.Connection) -> Any:
        if mode == "TRUNCATE":
            return _unwaiting(conn, lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
        row = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        if start_over and row[0] == 0 and row[1] == row[2]:
            conn.execute("PRAGMA synchronous=NORMAL")  # the header's sync only, not a commit's too
            try:  # rewrites the header's application id (unused) with its own value
                _unwaiting(conn, lambda: _in_transaction(conn, lambda c: c.execute(
                    f"PRAGMA application_id={int(c.execute('PRAGMA application_id').fetchone()[0])}"), False))
            except sqlite3.Error as exc:  # another process writes: its commit starts the WAL over
                log.debug("WAL not started over by the checkpointer: %s", exc)
        return row

    row = await db._execute(lambda: run(db._conn))  # noqa: SLF001
    return int(row[0]), int(row[1]), int(row[2])


def _unwaiting(conn: sqlite3.Connection, fn: Callable[[], T]) -> T:
    """`fn` with SQLite's busy timeout off: what another process holds is not waited for
    while this process's writers are held back, or while SQLite's write lock is held."""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        return fn()
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and transient(exc)


def _operator_error(exc: sqlite3.Error, path: Path) -> Exception:
    """Full, locked, damaged: a `StoreError` that says what to do; anything else
    (a constraint, a bug) stays the SQLite error it is."""
    if transient(exc):
        return StoreError(explain(exc, path))
    if damaged(exc):
        return StoreDamaged(explain(exc, path))
    return exc


def _joined(db: aiosqlite.Connection) -> None:
    """Wait for a closed connection's thread to end: aiosqlite answers the close from that
    thread just before it returns, and does not join it, so a process that closed its
    store could still see it alive (a store must leave no thread behind when closed)."""
    thread = getattr(db, "_thread", None)
    if thread is not None and thread.is_alive():
        thread.join(timeout=1.0)  # it is past its last statement: this returns at once


class SqliteStore(Store):
    """`reader=True`: a second process's view of the daemon's store (the web child), which
    must never take SQLite's write lock: held by a nice-19 process it would stall the
    daemon's alarm commits. Opened read-only (no file created, no journal mode set, no
    migration, no checkpoint: a read-only connection never checkpoints, not even at its
    close), `query_only`; every write method raises `StoreError` before touching SQLite."""

    def __init__(self, path: Path, *, check: bool = True, now: Callable[[], datetime] = utcnow,
                 reader: bool = False):
        self.path = Path(path)
        self.reader = reader
        if reader:
            self.retry_transient_for = READER_RETRY
        self.check = check  # PRAGMA quick_check at open (not for a reader: the daemon checks)
        self.now = now  # the daemon's clock: join windows compare last_alarm_at with the engine's time
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one writer per process (other processes: SQLite's own lock)
        self._alarm_queue: AlarmBatch = []
        self._checkpointer: asyncio.Task[None] | None = None
        self._checkpoint_db: aiosqlite.Connection | None = None
        self._alarm_writer: asyncio.Task[None] | None = None
        self._syncer: WalSyncThreads | None = None  # WAL syncs, off the connection's thread
        # committed batches awaiting a sync, numbered in commit order: a sync started after
        # batch N was committed makes batches 1..N durable, whichever sync began first
        self._unanswered: deque[tuple[int, AlarmBatch, list[bool | Replayed]]] = deque()
        self._committed = 0  # number of the last batch committed
        self._sync_asked = 0  # number of the last batch a started sync covers
        self._wal_dir_synced = False
        self._wal_fd: int | None = None  # the WAL, open for syncs (see `_wal_descriptor`)
        self._wal_fd_lock = threading.Lock()
        self.wal_restarts = 0  # times the checkpointer held writers back so the WAL starts over
        self._inline: sqlite3.Connection | None = None  # the event loop's own, for delivery verdicts

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        """Open (creating it 0600 if new), check integrity, migrate; raise `StoreError`
        with an operator's explanation on a full disk, a lock or a damaged file."""
        if self.reader:
            await self._open_reader()
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.exists():  # SQLite gives its -wal and -shm files the database's mode
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StoreError(f"cannot create the store {self.path}: {exc.strerror}") from exc
        async with self._opening():
            self._db = await aiosqlite.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT)
            self._db.row_factory = aiosqlite.Row
            await self._in_thread(lambda conn: refuse_newer(conn, self.path))  # before anything is written
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            if self.check:
                await self._quick_check()
            found = await self._in_thread(lambda conn: migrate(conn, self.path))
            if found < SCHEMA_VERSION:
                log.info("store %s upgraded from schema version %d to %d", self.path, found, SCHEMA_VERSION)
            # Checkpoints off the hot path: SQLite would otherwise copy the WAL into the
            # database (and fsync it) inside whichever commit crosses 1000 pages, and an
            # alarm acknowledgement would wait for it. A second connection checkpoints
            # (never blocking writers for long) on its own thread.
            await self._db.execute("PRAGMA wal_autocheckpoint=0")
            await self._db.execute(f"PRAGMA journal_size_limit={WAL_KEEP}")
        # its own connection (own thread), opened here so that closing never has to
        # interrupt a connection half made (its thread would outlive the event loop)
        try:
            self._checkpoint_db = await aiosqlite.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT)
        except BaseException:
            await self._close_connection()
            raise
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(self._checkpoint_db), name="sqlite-checkpoint")
        self._inline = self._open_inline()

    @asynccontextmanager
    async def _opening(self) -> AsyncIterator[None]:
        """Opening the main connection: on failure it is closed again, and an SQLite error
        becomes a `StoreError` with an operator's explanation."""
        try:
            yield
        except sqlite3.Error as exc:
            await self._close_connection()
            raise (StoreDamaged if damaged(exc) else StoreError)(explain(exc, self.path)) from exc
        except BaseException:
            await self._close_connection()
            raise

    async def _open_reader(self) -> None:
        """One read-only connection (its own thread); nothing else: no checkpointer, no
        inline connection, no WAL-sync threads."""
        if not self.path.is_file():
            raise StoreError(f"the store {self.path} does not exist: the daemon creates it at its start "
                             "(is the daemon running on this data directory?)")
        async with self._opening():
            self._db = await aiosqlite.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True,
                                               isolation_level=None, timeout=READER_BUSY_TIMEOUT)
            self._db.row_factory = aiosqlite.Row
            await self._db.execute("PRAGMA query_only=1")
            found = await self._in_thread(lambda conn: refuse_newer(conn, self.path))
            if found < SCHEMA_VERSION:
                raise StoreError(f"the store {self.path} has schema version {found} and this crisisbot reads "
                                 f"version {SCHEMA_VERSION}: the daemon has not upgraded the store yet "
                                 "(it does so at its start; open the store for reading after that)")

    def _open_inline(self) -> sqlite3.Connection | None:
        """A connection used on the event loop itself, for small writes on the hot path
        (`save_deliveries`): never waits for a lock (busy timeout 0), never checkpoints."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=0)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # a checkpoint would fsync the database here
            conn.execute(f"PRAGMA journal_size_limit={WAL_KEEP}")
            return conn
        except sqlite3.Error as exc:
            log.warning("no inline store connection (writes all go through the store's thread): %s", exc)
            return None

    async def _quick_check(self) -> None:
        async with self.db.execute("PRAGMA quick_check(5)") as cur:
            findings = [row[0] for row in await cur.fetchall()]
        if findings != ["ok"]:
            raise StoreDamaged(f"{self.path} is damaged ({'; '.join(findings)}); {BACKUP_HINT}")

    async def _checkpoint_loop(self, db: aiosqlite.Connection) -> None:
        """Passive checkpoints every `CHECKPOINT_EVERY` s, and a WAL of fixed size, rewritten in place.

        SQLite starts the WAL over (at its first byte, keeping the file) only at a commit
        that finds every frame copied into the database; under steady traffic a passive
        checkpoint never catches up with the commits made while it copies, and the WAL grew
        without end (112 MB in 4 s of alarms), every WAL sync then paying for the file's new
        size. So once the WAL holds more than `RESTART_ABOVE`, `_restart_wal` copies the rest
        with this process's writers held back for a moment and starts the WAL over; SQLite
        keeps the file at `WAL_KEEP` (journal_size_limit). A WAL that still
        grew beyond `TRUNCATE_ABOVE` (a reader held it) is truncated once copied, so the
        space goes back to the filesystem (on a small or full disk, a WAL that keeps its peak
        size fills it)."""
        wal = Path(f"{self.path}-wal")
        async with db.execute("PRAGMA page_size") as cur:
            frame_bytes = (await cur.fetchone())[0] + 24  # type: ignore[index]
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY)
            try:
                busy, frames, copied = await _checkpoint(db, "PASSIVE")
                if not busy and frames * frame_bytes > RESTART_ABOVE:
                    busy, frames, copied = await self._restart_wal(db, frames)
                if not busy and frames == copied and wal.exists() and wal.stat().st_size > TRUNCATE_ABOVE:
                    async with self._lock:  # writers wait here, not in SQLite's busy loop
                        await _checkpoint(db, "TRUNCATE")
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint failed (will retry): %s", explain(exc, self.path))
            except Exception:  # noqa: BLE001 - a dead checkpointer lets the WAL grow without end, unseen
                log.exception("WAL checkpoint failed (will retry)")

    async def _restart_wal(self, db: aiosqlite.Connection, frames: int) -> tuple[int, int, int]:
        """Copy the frames committed since the last pass with this process's writers held
        back (their commits wait, they do not fail), then start the WAL over with a commit
        of the checkpointer's own (see `_checkpoint`); returns the held pass's (busy,
        frames, copied).

        Why in passes: writers wait for as long as the held pass lasts, and a pass lasts as
        long as the frames it copies take to write and sync. The round's first pass copies
        what came in `CHECKPOINT_EVERY` (~6 MB at 2,000 DC-09 frames/s) for 2-30 ms while
        alarms keep committing: held right after it, the next pass copied those and stalled
        ACKs 2-30 ms, about twice a second. Unheld passes first, each copying what came during the previous
        one, until that is at most `HELD_FRAMES`; the held pass then copies little more than
        that and syncs the database file once (a single hop to the checkpoint thread)."""
        for _ in range(CATCH_UP_PASSES):
            busy, later, copied = await _checkpoint(db, "PASSIVE")
            if busy:  # a reader holds frames back: a held pass could not restart the WAL either
                return busy, later, copied
            caught_up, frames = later - frames <= HELD_FRAMES, later
            if caught_up:
                break
        async with self._lock:
            held = await _checkpoint(db, "PASSIVE", start_over=True)
        self.wal_restarts += 1
        return held

    async def close(self) -> None:
        """Always ends: the worker threads are stopped even if the last checkpoint fails
        (e.g. on a full disk), or the process could never exit."""
        if self.reader:  # its one connection; a reader never checkpoints
            await self._close_connection()
            return
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
            self._checkpointer = None
        checkpoint_db, self._checkpoint_db = self._checkpoint_db, None
        if checkpoint_db is not None:
            try:
                await checkpoint_db.close()
            except Exception as exc:  # noqa: BLE001 - aiosqlite stops its thread regardless
                log.warning("closing the checkpoint connection reported: %s", exc)
            _joined(checkpoint_db)
        if self._alarm_writer is not None:
            await asyncio.gather(self._alarm_writer, return_exceptions=True)
        if self._syncer is not None:  # answered alarms first: their batches are committed
            await self._syncer.stop()
            self._syncer = None
        if self._wal_fd is not None:  # before the last connection closes and deletes the file
            os.close(self._wal_fd)
            self._wal_fd = None
        if self._db is not None:
            try:
                await self._db.execute("PRAGMA busy_timeout=500")  # another process's lock must not hold up a stop
                await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("final WAL checkpoint failed; the WAL is replayed at next start: %s",
                            explain(exc, self.path))
            await self._close_connection()

    async def _close_connection(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        try:
            await db.close()
        except Exception as exc:  # noqa: BLE001 - aiosqlite stops its thread regardless
            log.warning("closing the store reported: %s", exc)
        _joined(db)

    async def backup(self, target: Path) -> None:
        """A consistent copy through SQLite's online backup API, while the daemon runs."""
        def copy(conn: sqlite3.Connection) -> None:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            with closing(sqlite3.connect(target)) as dest:
                conn.backup(dest)
                found = dest.execute("PRAGMA quick_check").fetchone()[0]
            if found != "ok":
                raise StoreDamaged(f"the copy in {target} does not check out ({found})")

        await self._in_thread(copy)

    # -- transactions ------------------------------------------------------
    async def _in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on aiosqlite's worker thread in one hop.

        aiosqlite hands every statement to its thread separately; a transaction of
        a dozen statements then pays a dozen thread round trips. `_execute` is
        aiosqlite's own internal entry point for exactly this (stable since 0.11).
        """
        db = self.db
        return await db._execute(lambda: fn(db._conn))  # noqa: SLF001

    async def _write(self, statements: Iterable[tuple[str, tuple[Any, ...]]],
                     audits: Iterable[tuple[str, str | None, dict[str, Any]]] = (),
                     durable: bool = False) -> list[AuditEntry]:
        """Run statements and audit appends in one committed transaction;
        `durable` waits for the disk (power-cut safe) before returning."""
        return await self._transaction(_writes(list(statements), list(audits)), durable)

    async def _transaction(self, work: Callable[[sqlite3.Connection], Audits], durable: bool = False,
                           retry: bool = True, keep: bool = True) -> list[AuditEntry]:
        """`work` runs inside the transaction and returns the audit entries to chain
        (returned as `AuditEntry` objects only with `keep`, see `_chain`)."""
        return await self._locked(lambda conn: _chain(conn, work(conn), self.now(), keep), durable, retry)

    async def _locked(self, fn: Callable[[sqlite3.Connection], T], durable: bool = False, retry: bool = True) -> T:
        """One write transaction; a transient failure (lock held elsewhere, full disk) is
        tried again with backoff for up to `retry_transient_for` seconds, the lock
        released in between so an alarm write can still fail fast and be answered."""
        if self.reader:
            raise StoreError(READ_ONLY)
        give_up = time.monotonic() + (self.retry_transient_for if retry else 0.0)
        reported, failing_since = 0.0, None

        def failed(exc: BaseException, pause: float) -> None:
            nonlocal reported, failing_since
            now = time.monotonic()
            failing_since = failing_since or now
            self.problem = explain(exc, self.path)
            if now - reported >= RETRY_REPORT_EVERY:
                reported = now
                log.warning("store write failed, retrying until it passes: %s", self.problem)

        async def once() -> T:
            async with self._lock:
                return await self._in_thread(lambda conn: _in_transaction(conn, fn, durable))

        try:
            result = await STORE_RETRY.call(once, retry_on=_transient, deadline=give_up, before_sleep=failed)
        except sqlite3.Error as exc:
            raise _operator_error(exc, self.path) from exc
        if failing_since is not None:
            log.warning("store writes pass again after %.1f s", time.monotonic() - failing_since)
            self.problem = None
        return result

    async def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[aiosqlite.Row]:
        async def once() -> list[aiosqlite.Row]:
            async with self.db.execute(sql, params) as cur:
                return list(await cur.fetchall())

        try:
            return await STORE_RETRY.call(once, retry_on=_transient, deadline=time.monotonic() + self.retry_transient_for)
        except sqlite3.Error as exc:
            raise _operator_error(exc, self.path) from exc

    # -- alarms ------------------------------------------------------------
    async def add_alarm(self, alarm: Alarm, nonce: Nonce | None = None, on_commit: OnCommit = None) -> bool:
        """Group commit: alarms arriving while a commit is in flight share the next one,
        so a burst from many panels costs one fsync per batch, not per alarm.

        `on_commit` is called once a new alarm is committed, before the WAL sync that
        makes it power-cut safe (and before this returns): the engine starts the
        playbook there, so the disk flush (1-15 ms) overlaps the dispatch instead of
        preceding it. A crash of the daemon keeps a committed alarm (it is resumed at
        start); only a power cut in that window loses it, and then the sender, which
        was never acknowledged, sends it again."""
        if self.reader:
            raise StoreError(READ_ONLY)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._alarm_queue.append((alarm, nonce, future, on_commit))
        if self._alarm_writer is None or self._alarm_writer.done():
            self._alarm_writer = asyncio.create_task(self._write_alarms())
        # not shielded: the future is this caller's alone, and a cancelled caller cancels only
        # it (the batch still stores the alarm; `_answer` skips a future already done)
        return await future

    async def _write_alarms(self) -> None:
        """Alarms are not retried here: the input answers the failure (HTTP 500, no ACK to
        the panel) and the sender's own retry brings the alarm again."""
        while self._alarm_queue:
            batch, self._alarm_queue = self._alarm_queue, []
            outcome: list[bool | Replayed] = []

            def work(conn: sqlite3.Connection) -> Audits:
                outcome.clear()
                audits: list[AuditData] = []
                rows: list[tuple[str, str, str, str, str]] = []
                now = time.time()
                if any(nonce for _, nonce, _, _ in batch):
                    conn.execute("DELETE FROM nonces WHERE expires_at<?", (now,))
                # one lookup and one executemany for the batch: a per-alarm INSERT OR IGNORE
                # costs a round trip into SQLite each, and the batch is the hot path of a burst
                stored = _stored_alarm_ids(conn, [alarm.id for alarm, _, _, _ in batch])
                for alarm, nonce, _, _ in batch:
                    if nonce is not None and conn.execute(
                            "INSERT OR IGNORE INTO nonces(scope, nonce, expires_at) VALUES (?,?,?)",
                            (nonce.scope, nonce.value, now + nonce.ttl)).rowcount == 0:
                        outcome.append(Replayed("replayed request: this signature was already used"))
                        continue
                    fresh = alarm.id not in stored
                    outcome.append(fresh)
                    if fresh:
                        stored.add(alarm.id)  # the same alarm twice in one batch is stored once
                        rows.append((alarm.id, _ts(alarm.received_at), alarm.site, alarm.source,
                                     alarm.model_dump_json()))
                        audits.append(("alarm.received", None, _alarm_audit(alarm)))
                conn.executemany("INSERT INTO alarms(id, received_at, site, source, body) VALUES (?,?,?,?,?)", rows)
                return audits

            try:
                # committed (visible to readers, safe from a crash of the daemon); durable
                # against a power cut once `_sync_wal` returns, and only then answered
                if len(batch) > INLINE_ALARMS or not self._transaction_inline(work):
                    await self._transaction(work, retry=False, keep=False)
            except BaseException as exc:
                for _, _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            self._committed += 1
            self._unanswered.append((self._committed, batch, list(outcome)))
            self._start_syncs()
            for (_, _, _, on_commit), fresh in zip(batch, outcome):
                if on_commit is not None and fresh is True:
                    try:
                        on_commit()
                    except Exception:  # noqa: BLE001 - the caller's hook must not lose the others' answers
                        log.exception("alarm commit hook failed")

    def _start_syncs(self) -> None:
        """Group commit of the syncs too: one sync answers every batch committed before it
        started; while `SYNC_THREADS` are in flight, newly committed batches wait for the
        next one rather than each queueing a flush of its own. Whichever sync ends first
        answers every batch it covers, also those an earlier, slower sync was started for:
        fdatasync returns once everything written to the file before the call is on disk,
        so one stalled flush does not hold up the answers a later one already made safe."""
        if self._syncer is None:
            self._syncer = WalSyncThreads(self._sync_wal, self._synced, SYNC_THREADS)
        if self._sync_asked < self._committed and self._syncer.in_flight < SYNC_THREADS:
            self._sync_asked = self._committed
            self._syncer.request(self._committed)

    def _synced(self, upto: int, failed: BaseException | None) -> None:
        """Answer the batches up to number `upto` (failed: with the error; a failed sync
        is never taken as proof for a batch it covered, even if an earlier one may pass)."""
        while self._unanswered and self._unanswered[0][0] <= upto:
            _, batch, outcome = self._unanswered.popleft()
            _answer(batch, outcome, failed)
        self._start_syncs()

    def _sync_wal(self) -> None:
        """fdatasync the WAL: every commit written before this call is on the disk after it.

        SQLite's FULL does exactly this after each commit, and on the first sync of a new
        WAL file also syncs its directory (so the file itself survives); we do the same."""
        _datasync(self._wal_descriptor())
        if not self._wal_dir_synced:
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._wal_dir_synced = True

    def _wal_descriptor(self) -> int:
        """The WAL file, opened once for all syncs (on any sync thread).

        Why once: an open and a close per sync were two more system calls on each alarm's
        path to its ACK, and after each the sync thread waits for the interpreter lock
        again (up to 5 ms while the event loop is busy). A descriptor kept open also hears
        of a write-back error of the file that happened between two syncs (Linux reports
        one to the descriptors open at the time, not to one opened later). The file stays
        the same while the store is open: SQLite rewrites it in place and truncates it, and
        deletes it only when the last connection to the database closes (`close` closes
        this descriptor first)."""
        with self._wal_fd_lock:
            if self._wal_fd is None:
                self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY)
            return self._wal_fd

    async def pending_alarms(self) -> list[Alarm]:
        rows = await self._rows("SELECT body FROM alarms WHERE status='pending' ORDER BY received_at")
        return [Alarm.model_validate_json(r["body"]) for r in rows]

    async def mark_alarm(self, alarm_id: str, status: str, incident_id: str | None) -> None:
        await self._write([("UPDATE alarms SET status=?, incident_id=? WHERE id=?", (status, incident_id, alarm_id))])

    async def incident_alarms(self, incident_id: str) -> list[Alarm]:
        rows = await self._rows("SELECT body FROM alarms WHERE incident_id=? ORDER BY received_at", (incident_id,))
        return [Alarm.model_validate_json(r["body"]) for r in rows]

    # -- incidents ---------------------------------------------------------
    @staticmethod
    def _incident(row: aiosqlite.Row) -> Incident:
        return Incident(
            id=row["id"], site=row["site"], playbook=row["playbook"], status=IncidentStatus(row["status"]),
            opened_at=_at(row["opened_at"]), updated_at=_at(row["updated_at"]),
            title=row["title"], drill=bool(row["drill"]), data=json.loads(row["data"]),
            outcome=PlaybookOutcome(row["outcome"]),
        )

    async def find_open_incident(self, site: str, playbook: str | None, since: datetime, dedup_key: str | None,
                                 drill: bool | None = None) -> Incident | None:
        only = "" if drill is None else " AND drill=?"
        kind: tuple[Any, ...] = () if drill is None else (int(drill),)
        if dedup_key:
            rows = await self._rows(
                "SELECT * FROM incidents WHERE dedup_key=? AND site=? AND status IN (?,?)" + only
                + " ORDER BY opened_at DESC LIMIT 1",
                (dedup_key, site, *OPEN_STATUSES, *kind),
            )
            if rows:
                return self._incident(rows[0])
        if playbook is None:
            return None
        rows = await self._rows(
            "SELECT * FROM incidents WHERE site=? AND playbook=? AND status IN (?,?) AND last_alarm_at>=?" + only
            + " ORDER BY opened_at DESC LIMIT 1",
            (site, playbook, *OPEN_STATUSES, _ts(since), *kind),
        )
        return self._incident(rows[0]) if rows else None

    async def active_incidents(self, site: str | None = None, drill: bool | None = None) -> list[Incident]:
        where = "status IN (?,?)" + (" AND site=?" if site is not None else "") + (
            " AND drill=?" if drill is not None else "")
        params: tuple[Any, ...] = (*OPEN_STATUSES, *((site,) if site is not None else ()),
                                   *((int(drill),) if drill is not None else ()))
        rows = await self._rows(f"SELECT * FROM incidents WHERE {where} ORDER BY opened_at", params)
        return [self._incident(r) for r in rows]

    async def create_incident(self, incident: Incident, alarm: Alarm) -> None:
        now = _ts(self.now())
        await self._write(
            [
                ("INSERT INTO incidents(id, site, playbook, status, title, drill, opened_at, updated_at, "
                 "last_alarm_at, dedup_key, data) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                 (incident.id, incident.site, incident.playbook, incident.status.value, incident.title,
                  int(incident.drill), _ts(incident.opened_at), now, now, alarm.dedup_key, _dump(incident.data))),
                ("UPDATE alarms SET status='processed', incident_id=? WHERE id=?", (incident.id, alarm.id)),
            ],
            [("incident.opened", incident.id, {"alarm_id": alarm.id, "playbook": incident.playbook,
                                               "site": incident.site, "title": incident.title,
                                               "drill": incident.drill})],
        )

    async def join_incident(self, incident_id: str, alarm: Alarm) -> None:
        now = _ts(self.now())
        await self._write(
            [
                ("UPDATE incidents SET last_alarm_at=?, updated_at=? WHERE id=?", (now, now, incident_id)),
                ("UPDATE alarms SET status='processed', incident_id=? WHERE id=?", (incident_id, alarm.id)),
            ],
            [("incident.alarm_joined", incident_id, {"alarm_id": alarm.id, "label": alarm.label,
                                                     "kind": alarm.kind.value, "action": alarm.action.value})],
        )

    async def set_incident_status(self, incident_id: str, status: IncidentStatus, reason: str = "",
                                  only_from: IncidentStatus | None = None) -> bool:
        def work(conn: sqlite3.Connection) -> list[tuple[str, str | None, dict[str, Any]]]:
            sql = "UPDATE incidents SET status=?, updated_at=? WHERE id=?"
            params: tuple[Any, ...] = (status.value, _ts(self.now()), incident_id)
            if only_from is not None:
                sql, params = sql + " AND status=?", (*params, only_from.value)
            changed = conn.execute(sql, params).rowcount
            return [("incident.status", incident_id, {"status": status.value, "reason": reason})] if changed else []

        return bool(await self._transaction(work))

    async def finish_playbook(self, incident_id: str, outcome: PlaybookOutcome, reason: str) -> bool:
        def work(conn: sqlite3.Connection) -> list[tuple[str, str | None, dict[str, Any]]]:
            cur = conn.execute(
                "UPDATE incidents SET outcome=?, data=json_set(data, '$.outcome_reason', ?), updated_at=? "
                "WHERE id=? AND outcome=?",
                (outcome.value, reason, _ts(self.now()), incident_id, PlaybookOutcome.running.value))
            return [("playbook.finished", incident_id, {"outcome": outcome.value, "reason": reason})] if cur.rowcount else []

        return bool(await self._transaction(work))

    async def update_incident_data(self, incident_id: str, data: dict[str, Any]) -> None:
        rows = await self._rows("SELECT data FROM incidents WHERE id=?", (incident_id,))
        merged = {**(json.loads(rows[0]["data"]) if rows else {}), **data}
        await self._write([("UPDATE incidents SET data=?, updated_at=? WHERE id=?", (_dump(merged), _ts(self.now()), incident_id))])

    async def get_incident(self, incident_id: str) -> Incident | None:
        rows = await self._rows("SELECT * FROM incidents WHERE id=? OR id LIKE ? LIMIT 2", (incident_id, incident_id + "%"))
        return self._incident(rows[0]) if len(rows) == 1 or (rows and rows[0]["id"] == incident_id) else None

    async def list_incidents(self, limit: int = 50, status: IncidentStatus | None = None) -> list[Incident]:
        if status is None:
            rows = await self._rows("SELECT * FROM incidents ORDER BY opened_at DESC LIMIT ?", (limit,))
        else:
            rows = await self._rows("SELECT * FROM incidents WHERE status=? ORDER BY opened_at DESC LIMIT ?", (status.value, limit))
        return [self._incident(r) for r in rows]

    # -- step journal ------------------------------------------------------
    async def get_steps(self, incident_id: str) -> dict[str, StepRecord]:
        rows = await self._rows("SELECT * FROM steps WHERE incident_id=?", (incident_id,))
        return {
            r["step_id"]: StepRecord(r["incident_id"], r["step_id"], r["status"],
                                     json.loads(r["output"]) if r["output"] else None, r["detail"],
                                     _dt(r["started_at"]), _dt(r["ended_at"]))
            for r in rows
        }

    async def save_step(self, record: StepRecord) -> None:
        await self._write(
            [("INSERT INTO steps(incident_id, step_id, status, output, detail, started_at, ended_at) "
              "VALUES (?,?,?,?,?,?,?) ON CONFLICT(incident_id, step_id) DO UPDATE SET status=excluded.status, "
              "output=excluded.output, detail=excluded.detail, ended_at=excluded.ended_at",
              (record.incident_id, record.step_id, record.status,
               _dump(record.output) if record.output is not None else None, record.detail,
               _ts(record.started_at) if record.started_at else None,
               _ts(record.ended_at) if record.ended_at else None))],
            [(f"step.{record.status}", record.incident_id,
              {"step": record.step_id, "detail": record.detail})],
        )

    async def get_deliveries(self, incident_id: str, step_id: str | None = None) -> dict[str, DeliveryRecord]:
        if step_id is None:
            rows = await self._rows("SELECT * FROM deliveries WHERE incident_id=? ORDER BY updated_at", (incident_id,))
        else:
            rows = await self._rows("SELECT * FROM deliveries WHERE incident_id=? AND step_id=?", (incident_id, step_id))
        return {
            r["key"]: DeliveryRecord(r["key"], r["incident_id"], r["step_id"], r["person_id"], r["address"],
                                     DeliveryStatus(r["status"]), r["detail"], r["transport"], r["attempts"],
                                     _dt(r["updated_at"]))
            for r in rows
        }

    async def save_deliveries(self, records: list[DeliveryRecord], audit: bool = True) -> None:
        statements, audits = self._delivery_writes(records, audit)
        if len(records) > INLINE_RECORDS or not self._transaction_inline(_writes(statements, audits)):
            await self._write(statements, audits)

    def _transaction_inline(self, work: Callable[[sqlite3.Connection], Audits]) -> bool:
        """Commit small rows right here, on the event loop: False if that could not be done
        at once (another writer, a full disk, any SQLite error), and the caller then takes
        the store's thread, which waits, retries and reports.

        Why: an SMTP session sends its next message only once the previous verdict is
        committed (at most one resend per session after a crash). That commit takes
        ~0.1 ms (WAL, synchronous=NORMAL: no fsync), most of it Python work that holds the
        interpreter lock on any thread; the hop to the store's thread and back took 1-10 ms
        on a busy 2-core machine, and the verdicts of 50 emails queued behind each other's
        hops (sessions waited 14.6 ms per alarm in all, 4.4 ms inline). Delivery rows and
        group commits of up to `INLINE_ALARMS` alarms come here: the Python part of an
        alarm batch holds the interpreter lock on any thread, and the hop to the store's
        thread, which waits for that lock while the inputs parse, was the largest part of a
        DC-09 frame's ACK latency. Bulky writes (the spool, large batches) keep the thread."""
        if self._inline is None or self._lock.locked():
            return False
        try:
            _in_transaction(self._inline, lambda conn: _chain(conn, work(conn), self.now(), keep=False), False)
        except sqlite3.Error:
            return False
        return True

    def _delivery_writes(self, records: list[DeliveryRecord], audit: bool) -> tuple[
            list[tuple[str, tuple[Any, ...]]], list[tuple[str, str | None, dict[str, Any]]]]:
        now = _ts(self.now())
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("INSERT INTO deliveries(key, incident_id, step_id, person_id, address, status, detail, transport, "
             "attempts, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET "
             "status=excluded.status, detail=excluded.detail, transport=excluded.transport, "
             "attempts=excluded.attempts, updated_at=excluded.updated_at",
             (r.key, r.incident_id, r.step_id, r.person_id, r.address, r.status.value, r.detail,
              r.transport, r.attempts, now))
            for r in records
        ]
        audits: list[tuple[str, str | None, dict[str, Any]]] = [
            ("delivery." + r.status.value, r.incident_id,
             {"step": r.step_id, "person": r.person_id, "address": r.address, "transport": r.transport,
              "detail": r.detail, "attempts": r.attempts})
            for r in records
        ] if audit else []
        statements += [("DELETE FROM spool WHERE key=?", (r.key,)) for r in records if r.status in SPOOL_DONE]
        return statements, audits

    async def spool(self, messages: list[SpooledMessage], records: list[DeliveryRecord]) -> None:
        statements, audits = self._delivery_writes(records, True)
        now = _ts(self.now())
        statements += [
            ("INSERT INTO spool(key, incident_id, step_id, sender, channels, message, added_at) VALUES (?,?,?,?,?,?,?) "
             "ON CONFLICT(key) DO UPDATE SET channels=excluded.channels, message=excluded.message",
             (m.key, m.incident_id, m.step_id, m.sender, json.dumps(m.channels), m.message, now))
            for m in messages
        ]
        await self._write(statements, audits)

    async def spooled(self) -> list[SpooledMessage]:
        rows = await self._rows("SELECT * FROM spool ORDER BY added_at, key")
        return [SpooledMessage(r["key"], r["incident_id"], r["step_id"], r["sender"], json.loads(r["channels"]),
                               r["message"]) for r in rows]

    # -- audit -------------------------------------------------------------
    async def audit(self, kind: str, incident_id: str | None, data: dict[str, Any]) -> AuditEntry:
        return (await self._write([], [(kind, incident_id, data)]))[0]

    async def audit_many(self, entries: list[tuple[str, str | None, dict[str, Any]]]) -> int:
        """One transaction for them all: a window's few hundred refusal counts used to be as
        many commits, in the middle of whatever alarm was being handled."""
        if entries:
            await self._transaction(_writes([], list(entries)), False, keep=False)
        return len(entries)

    async def audit_entries(self, incident_id: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        sql = "SELECT * FROM audit" + (" WHERE incident_id=?" if incident_id else "") + " ORDER BY seq"
        params: tuple[Any, ...] = (incident_id,) if incident_id else ()
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = await self._rows(sql, params)
        return [AuditEntry(r["seq"], _at(r["at"]), r["kind"], r["incident_id"], json.loads(r["data"]),
                           r["prev_hash"], r["hash"]) for r in rows]

    async def verify_audit(self) -> AuditReport:
        problems: list[str] = []
        expected_prev, expected_seq, count = GENESIS, 1, 0
        try:
            async with self.db.execute("SELECT * FROM audit ORDER BY seq") as cur:
                async for r in cur:
                    count += 1
                    if r["seq"] != expected_seq:
                        problems.append(f"entry {expected_seq} is missing (next entry is {r['seq']})")
                    if r["prev_hash"] != expected_prev:
                        problems.append(f"entry {r['seq']}: link to the previous entry is broken")
                    digest = entry_hash(r["prev_hash"], r["seq"], r["at"], r["kind"], r["incident_id"], r["data"])
                    if digest != r["hash"]:
                        problems.append(f"entry {r['seq']} ({r['kind']}) was modified: its hash does not match")
                    expected_prev, expected_seq = r["hash"], r["seq"] + 1
        except sqlite3.DatabaseError as exc:  # a damaged page is a finding of the audit, not a crash
            problems.append(f"reading stopped after {count} entries: {explain(exc, self.path)}")
        return AuditReport(not problems, count, expected_prev, problems)

    # -- lifecycle: timers, acknowledgements, silences ---------------------------
    @staticmethod
    def _timer(r: aiosqlite.Row) -> TimerRecord:
        return TimerRecord(r["id"], r["kind"], _at(r["due_at"]), r["incident_id"],
                           json.loads(r["payload"]), r["status"])

    async def _change(self, sql: str, params: tuple[Any, ...]) -> int:
        """One committed statement; returns the number of rows it changed."""
        return await self._locked(lambda conn: conn.execute(sql, params).rowcount)

    async def add_timers(self, timers: list[TimerRecord]) -> int:
        added = 0
        for t in timers:
            added += await self._change(
                "INSERT OR IGNORE INTO timers(id, kind, due_at, incident_id, payload, status) VALUES (?,?,?,?,?,?)",
                (t.id, t.kind, _ts(t.due_at), t.incident_id, _dump(t.payload), t.status))
        return added

    async def recover_timers(self) -> int:
        return await self._change("UPDATE timers SET status='pending' WHERE status='firing'", ())

    async def due_timers(self, now: datetime) -> list[TimerRecord]:
        rows = await self._rows("SELECT * FROM timers WHERE status='pending' AND due_at<=? ORDER BY due_at, id",
                                (_ts(now),))
        return [self._timer(r) for r in rows]

    async def claim_timer(self, timer_id: str) -> bool:
        return await self._change("UPDATE timers SET status='firing' WHERE id=? AND status='pending'", (timer_id,)) == 1

    async def finish_timer(self, timer_id: str, status: str) -> None:
        await self._change("UPDATE timers SET status=? WHERE id=?", (status, timer_id))

    async def reschedule_timer(self, timer_id: str, due_at: datetime) -> None:
        await self._change("UPDATE timers SET status='pending', due_at=? WHERE id=? AND status='firing'",
                           (_ts(due_at), timer_id))

    async def shift_timers(self, delta: timedelta, keep: tuple[str, ...] = ()) -> int:
        def shift(conn: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(keep))
            rows = conn.execute("SELECT id, due_at FROM timers WHERE status='pending'"
                                + (f" AND kind NOT IN ({marks})" if keep else ""), tuple(keep)).fetchall()
            for timer_id, due_at in rows:
                conn.execute("UPDATE timers SET due_at=? WHERE id=?",
                             (_ts(datetime.fromisoformat(due_at) + delta), timer_id))
            return len(rows)

        return await self._locked(shift)

    async def cancel_timers(self, incident_id: str, kind_prefix: str = "") -> int:
        return await self._change(
            "UPDATE timers SET status='cancelled' WHERE incident_id=? AND status='pending' AND kind LIKE ?",
            (incident_id, kind_prefix + "%"))

    async def list_timers(self, incident_id: str | None = None, status: str | None = "pending") -> list[TimerRecord]:
        where: list[str] = []
        params: list[Any] = []
        if incident_id is not None:
            where.append("incident_id=?")
            params.append(incident_id)
        if status is not None:
            where.append("status=?")
            params.append(status)
        sql = "SELECT * FROM timers" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY due_at, id"
        return [self._timer(r) for r in await self._rows(sql, tuple(params))]

    async def add_ack(self, ack: AckRecord, audit: dict[str, Any]) -> bool:
        if await self._rows("SELECT 1 FROM acks WHERE incident_id=? AND person_id=?", (ack.incident_id, ack.person_id)):
            return False
        try:
            await self._write(
                [("INSERT INTO acks(incident_id, person_id, response, via, at) VALUES (?,?,?,?,?)",
                  (ack.incident_id, ack.person_id, ack.response, ack.via, _ts(ack.at)))],
                [("incident.acknowledged", ack.incident_id, audit)],
            )
        except sqlite3.IntegrityError:  # the same person twice at the same instant: the first one counts
            return False
        return True

    async def get_acks(self, incident_id: str) -> list[AckRecord]:
        rows = await self._rows("SELECT * FROM acks WHERE incident_id=? ORDER BY at", (incident_id,))
        return [AckRecord(r["incident_id"], r["person_id"], r["response"], r["via"], _at(r["at"]))
                for r in rows]

    async def add_silence(self, silence: SilenceRecord) -> None:
        s = silence
        await self._write(
            [("INSERT INTO silences(id, site, input, starts_at, ends_at, playbook, reason, created_by) "
              "VALUES (?,?,?,?,?,?,?,?)",
              (s.id, s.site, s.input, _ts(s.starts_at), _ts(s.ends_at), s.playbook, s.reason, s.created_by))],
            [("silence.added", None, {"silence_id": s.id, "site": s.site, "input": s.input,
                                      "starts_at": _ts(s.starts_at), "ends_at": _ts(s.ends_at),
                                      "playbook": s.playbook, "reason": s.reason, "by": s.created_by})],
        )

    async def end_silence(self, silence_id: str, at: datetime, kind: str, reason: str) -> bool:
        rows = await self._rows("SELECT ended_at FROM silences WHERE id=?", (silence_id,))
        if not rows or rows[0]["ended_at"]:
            return False
        await self._write(
            [("UPDATE silences SET ended_at=? WHERE id=? AND ended_at IS NULL", (_ts(at), silence_id))],
            [(kind, None, {"silence_id": silence_id, "reason": reason})],
        )
        return True

    async def list_silences(self, active_at: datetime | None = None) -> list[SilenceRecord]:
        if active_at is None:
            rows = await self._rows("SELECT * FROM silences ORDER BY starts_at")
        else:
            rows = await self._rows("SELECT * FROM silences WHERE ended_at IS NULL AND ends_at>? ORDER BY starts_at",
                                    (_ts(active_at),))
        return [SilenceRecord(r["id"], r["site"], _at(r["starts_at"]), _at(r["ends_at"]),
                              r["reason"], r["created_by"], r["input"], r["playbook"], _dt(r["ended_at"]))
                for r in rows]

    async def last_alarm_at(self) -> datetime | None:
        rows = await self._rows("SELECT MAX(received_at) AS last FROM alarms")
        return _dt(rows[0]["last"]) if rows else None

    # -- inputs: trigger state -----------------------------------------------------
    async def load_trigger_state(self, trigger: str) -> dict[str, Any]:
        rows = await self._rows("SELECT key, value FROM trigger_state WHERE trigger=?", (trigger,))
        return {r["key"]: json.loads(r["value"]) for r in rows}

    async def save_trigger_state(self, trigger: str, changes: dict[str, Any]) -> None:
        now = _ts(self.now())
        await self._write([
            ("DELETE FROM trigger_state WHERE trigger=? AND key=?", (trigger, key)) if value is None else
            ("INSERT INTO trigger_state(trigger, key, value, updated_at) VALUES (?,?,?,?) ON CONFLICT(trigger, key) "
             "DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at", (trigger, key, _dump(value), now))
            for key, value in changes.items()])
