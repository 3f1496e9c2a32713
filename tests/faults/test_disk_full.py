"""A full disk under `var/` (a 4 MiB tmpfs): nothing accepted is lost or doubled, work
waiting on the disk resumes by itself when space returns, and every command ends with
the real error.

Needs to mount a tmpfs (root, and a kernel that allows it); skipped with the reason
otherwise."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from conftest import RecordingHandler, SmtpServer
from store_helpers import (COMMITTEE, HANG, add_people, alarm_request, configure, crisisbot, post, run_cli, start,
                           stop, store_rows, wait_until)


@pytest.fixture
def small_var(workspace):
    """`var/` on its own 4 MiB filesystem."""
    var = workspace.root / "var"
    var.mkdir(mode=0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(var)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for var/ (needs root): {mounted.stderr.strip()}")
    try:
        yield var
    finally:
        subprocess.run(["umount", "-l", str(var)], check=False)


def fill(var: Path) -> Path:
    """Take every free byte of the filesystem; returns the file to delete to give it back."""
    filler = var / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_full_disk_mid_convocation_then_space_returns(workspace, small_var):
    handler = RecordingHandler(data_delay=0.2)
    with SmtpServer(handler) as smtp:
        port = configure(workspace, smtp.port, connections=1)
        everyone = COMMITTEE | add_people(workspace, 20)
        log = workspace.root / "daemon.log"
        daemon = start(workspace, port, log)
        try:
            assert post(port, alarm_request()).status_code == 202
            wait_until(lambda: handler.messages, what="the first email")
            filler = fill(small_var)
            wait_until(lambda: "retrying until it passes" in log.read_text(), what="a write to meet the full disk")
            second = alarm_request(label="Panique bis")
            refused = post(port, second)
            filler.unlink()
            accepted = post(port, second)  # the sender's retry of the very same request
            wait_until(lambda: store_rows(workspace, "SELECT status, outcome FROM incidents") == [("open", "done")],
                       timeout=HANG, what="the incident to complete")
        finally:
            assert stop(daemon) == 0
    assert refused.status_code == 503, refused.text
    assert accepted.status_code == 202, accepted.text
    assert sorted(m.rcpt[0] for m in handler.messages) == sorted(everyone)
    sent = store_rows(workspace, "SELECT address FROM deliveries WHERE step_id='convocation' AND status='sent'")
    assert sorted(a for (a,) in sent) == sorted(everyone)
    assert store_rows(workspace, "SELECT status, count(*) FROM alarms GROUP BY status") == [("processed", 2)]
    assert "store writes pass again" in log.read_text()
    assert run_cli(workspace, "audit", "verify").returncode == 0


def test_stop_start_and_commands_on_a_full_disk_end_with_the_real_error(workspace, small_var):
    handler = RecordingHandler(data_delay=0.3)
    with SmtpServer(handler) as smtp:
        port = configure(workspace, smtp.port, connections=1)
        add_people(workspace, 10)
        log = workspace.root / "daemon.log"
        daemon = start(workspace, port, log)
        assert post(port, alarm_request()).status_code == 202
        wait_until(lambda: handler.messages, what="the first email")
        filler = fill(small_var)
        more = iter(range(10**6))

        def met_full_disk() -> bool:
            # the WAL is rewritten in place: writes meet the full disk once it must grow
            # (its checkpoints into the full database fail), so more alarms come in meanwhile
            if "retrying until it passes" in log.read_text():
                return True
            post(port, alarm_request(label=f"Panique {next(more)}"))
            return False

        wait_until(met_full_disk, what="a write to meet the full disk")
        assert stop(daemon) == 0  # SIGTERM ends it, full disk or not

        started = crisisbot(workspace, "run")
        out, _ = started.communicate(timeout=HANG)
        message = out.decode()
        assert started.returncode == 1, message
        assert "full" in message and "cannot rollback" not in message and "Traceback" not in message, message

        verify = run_cli(workspace, "audit", "verify")
        assert "Traceback" not in verify.stdout + verify.stderr, verify.stderr

        filler.unlink()  # space returns: the interrupted convocation resumes at the next start
        handler.data_delay = 0.0
        daemon = start(workspace, port, log)
        try:
            wait_until(lambda: store_rows(workspace, "SELECT status, outcome FROM incidents") == [("open", "done")],
                       timeout=HANG, what="the resumed incident to complete")
        finally:
            assert stop(daemon) == 0
    assert store_rows(workspace, "SELECT count(*) FROM incidents") == [(1,)]
    assert run_cli(workspace, "audit", "verify").returncode == 0


def _small_wal(monkeypatch: pytest.MonkeyPatch, truncate_above: int = 1 << 20) -> tuple[int, int]:
    """The store's WAL limits scaled down so that a test reaches them in a few writes."""
    from crisisbot.store import sqlite

    monkeypatch.setattr(sqlite, "WAL_KEEP", 256 << 10)
    monkeypatch.setattr(sqlite, "RESTART_ABOVE", 128 << 10)
    monkeypatch.setattr(sqlite, "TRUNCATE_ABOVE", truncate_above)
    monkeypatch.setattr(sqlite, "CHECKPOINT_EVERY", 0.05)
    return sqlite.WAL_KEEP, sqlite.TRUNCATE_ABOVE


async def test_the_wal_is_rewritten_in_place_under_steady_writes(tmp_path, monkeypatch):
    """Writes that never pause still get the WAL started over at its beginning: it keeps
    its size instead of growing (every sync of a growing file also commits its size)."""
    import asyncio

    from crisisbot.store.sqlite import SqliteStore

    # never truncated here: on a starved machine the WAL could outgrow a small limit between
    # two checkpoints, and a truncated WAL starts over without counting it in its header
    keep, _ = _small_wal(monkeypatch, truncate_above=1 << 40)
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    wal = tmp_path / "s.db-wal"
    starts: set[bytes] = set()  # the WAL header's checkpoint sequence number: +1 at each start over

    async def writer() -> None:
        while store.wal_restarts < 6:  # 8 writers: a commit always in flight
            await store.audit("test.bulk", None, {"filler": "x" * 8000})
            with wal.open("rb") as f:
                starts.add(f.read(16)[12:16])

    try:
        async with asyncio.timeout(HANG):  # without the held checkpoint it never catches up
            await asyncio.gather(*(writer() for _ in range(8)))
            assert len(starts) >= 3  # the commits after each held checkpoint started the WAL over
            while wal.stat().st_size > keep:  # the next commit after a restart trims it
                await store.audit("test.bulk", None, {"filler": "x"})
                await asyncio.sleep(0.01)
        assert wal.stat().st_size > 0  # kept, not truncated: the next commits rewrite it
        assert (await store.verify_audit()).ok
    finally:
        await store.close()


async def test_the_wal_is_truncated_while_running(tmp_path, monkeypatch):
    """Space a checkpoint frees goes back to the filesystem without a restart: a WAL that
    grew large while a reader held it is truncated once copied."""
    import asyncio
    import sqlite3

    from crisisbot.store.sqlite import SqliteStore

    _, truncate_above = _small_wal(monkeypatch)
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    wal = tmp_path / "s.db-wal"
    reader = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM audit").fetchone()  # holds its snapshot: no restart
        while not wal.exists() or wal.stat().st_size <= truncate_above:
            await store.audit("test.bulk", None, {"filler": "x" * 8000})
        reader.execute("COMMIT")
        async with asyncio.timeout(HANG):
            while wal.stat().st_size > 0:
                await asyncio.sleep(0.05)
    finally:
        reader.close()
        await store.close()


async def test_writers_are_held_only_for_a_last_pass_that_copies_little(tmp_path, monkeypatch):
    """Before the WAL starts over, unheld passes copy what came during the previous one
    until at most `HELD_FRAMES` are left; only the last pass holds this process's writers
    (held right after the first, long pass, DC-09 ACKs waited 2-30 ms). A pass a reader
    blocks (busy) holds nobody: it could not start the WAL over either."""
    from crisisbot.store import sqlite
    from crisisbot.store.sqlite import SqliteStore

    monkeypatch.setattr(sqlite, "HELD_FRAMES", 64)
    monkeypatch.setattr(sqlite, "CATCH_UP_PASSES", 4)
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    script: list[tuple[int, int, int]] = []
    passes: list[tuple[bool, int]] = []  # (writers held, frames in the WAL)

    async def scripted(db: object, mode: str, start_over: bool = False) -> tuple[int, int, int]:
        busy, frames, copied = script.pop(0)
        held = store._lock.locked()
        assert start_over == held  # the held pass, and only it, starts the WAL over itself
        passes.append((held, frames))
        return busy, frames, copied

    monkeypatch.setattr(sqlite, "_checkpoint", scripted)
    try:
        # the first pass found 4,000 frames; 500, 100, then 20 more came during the passes after it
        script[:] = [(0, 4500, 4500), (0, 4600, 4600), (0, 4620, 4620), (0, 4630, 4630)]
        assert await store._restart_wal(store._checkpoint_db, 4000) == (0, 4630, 4630)
        assert passes == [(False, 4500), (False, 4600), (False, 4620), (True, 4630)]
        assert store.wal_restarts == 1

        passes.clear()  # never caught up (a starved disk): held after CATCH_UP_PASSES anyway
        script[:] = [(0, 5000 + 1000 * n, 5000 + 1000 * n) for n in range(5)]
        await store._restart_wal(store._checkpoint_db, 4000)
        assert [held for held, _ in passes] == [False] * 4 + [True] and store.wal_restarts == 2

        passes.clear()  # a reader holds frames back: no hold, the next round tries again
        script[:] = [(1, 4500, 4100)]
        assert await store._restart_wal(store._checkpoint_db, 4000) == (1, 4500, 4100)
        assert passes == [(False, 4500)] and store.wal_restarts == 2
    finally:
        monkeypatch.undo()
        await store.close()


async def test_alarm_syncs_reach_the_wal_file_through_restarts_and_truncation(tmp_path, monkeypatch):
    """The descriptor the WAL syncs go through is opened once: every sync, before and after
    the WAL starts over and after it is truncated, must still reach the `-wal` file itself
    (a descriptor of a file SQLite had replaced would confirm alarms it never flushed)."""
    import asyncio
    import sqlite3

    from crisisbot.models import Alarm
    from crisisbot.store import sqlite as sqlite_store
    from crisisbot.store.sqlite import SqliteStore

    _, truncate_above = _small_wal(monkeypatch)
    real = sqlite_store._datasync
    synced: list[tuple[int, int]] = []  # (inode synced, inode of the -wal file)
    store = SqliteStore(tmp_path / "s.db")
    wal = tmp_path / "s.db-wal"

    def recorded(fd: int) -> None:
        synced.append((os.fstat(fd).st_ino, os.stat(wal).st_ino))
        real(fd)

    monkeypatch.setattr(sqlite_store, "_datasync", recorded)
    await store.open()

    async def alarms(until) -> None:
        async def writer() -> None:
            while not until():
                await store.add_alarm(Alarm(source="t", site="s", raw="x" * 8000))
        await asyncio.gather(*(writer() for _ in range(8)))

    reader = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        async with asyncio.timeout(HANG):
            await alarms(lambda: store.wal_restarts >= 3)
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM alarms").fetchone()  # holds its snapshot: the WAL grows
            await alarms(lambda: wal.stat().st_size > truncate_above)
            reader.execute("COMMIT")
            while wal.stat().st_size > 0:  # copied, then truncated by the checkpointer
                await asyncio.sleep(0.05)
            before = len(synced)
            await alarms(lambda: len(synced) > before + 20)
    finally:
        reader.close()
        await store.close()
    assert synced and all(fd_inode == wal_inode for fd_inode, wal_inode in synced)
    assert store._wal_fd is None  # closed with the store, before its last connection deleted the file


async def test_the_checkpointer_starts_the_wal_over_itself(tmp_path):
    """The held pass ends with the WAL started over by the checkpointer's own one-page
    commit: the first commit after a restart syncs the new WAL header, and left to the
    next writer that was often the event loop's inline commit (a disk flush on the loop)."""
    from crisisbot.models import Alarm
    from crisisbot.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    wal = tmp_path / "s.db-wal"

    def restarts_seen() -> bytes:  # the WAL header's checkpoint sequence: +1 at each start over
        with wal.open("rb") as f:
            return f.read(16)[12:16]

    try:
        for n in range(3):
            await store.add_alarm(Alarm(source="t", site="s", raw=str(n)))
        before = restarts_seen()
        busy, frames, copied = await store._restart_wal(store._checkpoint_db, 0)
        assert (busy, frames) == (0, copied) and frames > 0
        assert restarts_seen() != before  # started over before any other commit
        assert await store.add_alarm(Alarm(source="t", site="s", raw="after"))
        assert len(await store.pending_alarms()) == 4
        assert (await store.verify_audit()).ok
    finally:
        await store.close()
