"""Store and delivery edge cases found in review: cancellation mid-write, dedup keys across
sites, a stood-down incident not reopened by its playbook, one bad message in a batch."""

from __future__ import annotations

import asyncio

from conftest import RecordingHandler, SmtpServer
from connectors.base import Services
from connectors.smtp import SmtpMailer
from crisisbot.models import Alarm, DeliveryStatus, Incident, IncidentStatus, OutgoingEmail, PlaybookOutcome, Recipient, utcnow
from crisisbot.store.sqlite import SqliteStore


async def test_a_write_cancelled_mid_flight_does_not_break_the_audit_chain(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    try:
        for _ in range(20):
            task = asyncio.create_task(store.audit("test.cancelled", None, {"x": 1}))
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert await store.add_alarm(Alarm(source="t", site="s"))
        report = await store.verify_audit()
    finally:
        await store.close()
    assert report.ok, report.problems


async def test_an_alarm_caller_cancelled_in_a_group_commit_leaves_the_others_answered(tmp_path):
    """One caller of a batch gives up (its input closed): its alarm is still stored, and
    the other alarms of the batch are answered as usual (the futures are per caller)."""
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    try:
        alarms = [Alarm(source="t", site="s") for _ in range(5)]
        tasks = [asyncio.create_task(store.add_alarm(a)) for a in alarms]
        await asyncio.sleep(0)  # every one queued in the same batch
        tasks[2].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        stored = {a.id for a in await store.pending_alarms()}
        assert await store.add_alarm(Alarm(source="t", site="s"))  # the writer carries on
        report = await store.verify_audit()
    finally:
        await store.close()
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 2] == [True] * 4
    assert stored == {a.id for a in alarms}
    assert report.ok and report.entries == 6, report.problems


async def test_dedup_key_only_joins_an_incident_of_the_same_site(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    try:
        alarm = Alarm(source="pd", site="paris", dedup_key="ups-on-battery")
        await store.add_alarm(alarm)
        incident = Incident("i1", "paris", "p", IncidentStatus.open, utcnow(), utcnow())
        await store.create_incident(incident, alarm)
        same = await store.find_open_incident("paris", None, utcnow(), "ups-on-battery")
        other = await store.find_open_incident("lyon", None, utcnow(), "ups-on-battery")
    finally:
        await store.close()
    assert same is not None and same.id == "i1" and other is None


async def test_playbook_end_records_its_outcome_without_reopening_a_stood_down_incident(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    try:
        alarm = Alarm(source="t", site="s")
        await store.add_alarm(alarm)
        await store.create_incident(Incident("i1", "s", "p", IncidentStatus.open, utcnow(), utcnow()), alarm)
        await store.set_incident_status("i1", IncidentStatus.false_alarm, "operator")
        changed = await store.finish_playbook("i1", PlaybookOutcome.done, "every step did its job")
        again = await store.finish_playbook("i1", PlaybookOutcome.failed, "a late second verdict")
        final = await store.get_incident("i1")
    finally:
        await store.close()
    assert changed is True and again is False
    assert final.status is IncidentStatus.false_alarm and final.outcome is PlaybookOutcome.done


async def test_one_unencodable_message_fails_alone_and_nobody_gets_two(tmp_path):
    handler = RecordingHandler()
    with SmtpServer(handler) as server:
        cfg = SmtpMailer.Config.model_validate({"type": "smtp", "host": "127.0.0.1", "port": server.port,
                                                "security": "none", "connections": 2})
        mailer = SmtpMailer("relay", cfg, Services(data_dir=tmp_path, root=tmp_path))
        people = [Recipient(f"p{i}", f"P {i}", f"p{i}@exemple.fr", "fr") for i in range(6)]
        people.insert(2, Recipient("bad", "Bad", "josé@exemple.fr", "fr"))
        messages = [OutgoingEmail(f"k{p.person_id}", p, "Alerte", "texte", "") for p in people]
        results = await mailer.send(messages, "crisisbot@exemple.fr")
    by_key = {r.key: r for r in results}
    assert by_key["kbad"].status is DeliveryStatus.failed
    assert sorted(m.rcpt[0] for m in handler.messages) == sorted(f"p{i}@exemple.fr" for i in range(6))


async def test_a_failing_timer_is_retried_later_and_others_fire_beside_it(tmp_path):
    from datetime import timedelta

    from crisisbot.clock import ManualClock
    from crisisbot.store.records import TimerRecord
    from crisisbot.lifecycle.timers import RETRY_AFTER, TimerService

    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    clock = ManualClock(utcnow())
    timers = TimerService(store, clock)
    calls: list[str] = []

    async def flaky(timer: TimerRecord) -> None:
        calls.append(timer.id)
        if calls.count(timer.id) == 1:
            raise ConnectionError("relay down")

    timers.register("flaky", flaky)
    try:
        await timers.schedule([TimerRecord("t1", "flaky", clock.now()), TimerRecord("t2", "flaky", clock.now())])
        assert await timers.fire_due() == 2  # both fired in the same round, both failed once
        assert await timers.fire_due() == 0  # not yet due again
        await clock.set(clock.now() + timedelta(seconds=RETRY_AFTER + 1))
        assert await timers.fire_due() == 2
        left = await store.list_timers(status="pending")
        kinds = [e.kind for e in await store.audit_entries()]
    finally:
        await store.close()
    assert sorted(calls) == ["t1", "t1", "t2", "t2"] and left == []
    assert kinds.count("timer.retry") == 2


async def test_alarms_are_answered_only_after_the_wal_sync_and_not_when_it_fails(tmp_path, monkeypatch, caplog):
    """An alarm is acknowledged only once the disk confirmed its commit: a failing sync (an
    I/O error of the disk) fails the alarms of its batch visibly, and the sender's retry
    is then answered from the stored copy."""
    import errno
    import os

    from crisisbot.store import sqlite as sqlite_store
    from crisisbot.store.errors import StoreError

    synced: list[int] = []
    real = sqlite_store._datasync

    def failing(fd: int) -> None:
        synced.append(fd)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    try:
        alarms = [Alarm(source="t", site="s", raw=str(i)) for i in range(5)]
        monkeypatch.setattr(sqlite_store, "_datasync", failing)
        results = await asyncio.gather(*(store.add_alarm(a) for a in alarms), return_exceptions=True)
        assert synced and all(isinstance(r, StoreError) for r in results), results
        assert "not confirmed on the disk" in str(results[0]) and "Input/output error" in str(results[0])
        assert "not confirmed on the disk" in caplog.text
        monkeypatch.setattr(sqlite_store, "_datasync", real)
        assert await asyncio.gather(*(store.add_alarm(a) for a in alarms)) == [False] * 5  # stored once
        assert sorted(a.raw for a in await store.pending_alarms()) == [str(i) for i in range(5)]
        assert (await store.verify_audit()).ok
    finally:
        await store.close()


async def test_an_alarm_is_answered_only_by_a_sync_begun_after_its_commit(tmp_path, monkeypatch):
    """The WAL syncs run on threads of their own (crisisbot/store/wal_sync.py): an alarm is
    answered only once a sync that started after its batch's commit has returned, and a
    stalled sync holds up none of the answers a later sync made safe."""
    import itertools
    import threading

    from crisisbot.store import sqlite as sqlite_store

    store = SqliteStore(tmp_path / "s.db")
    real = sqlite_store._datasync
    release, stalled = threading.Event(), threading.Event()
    calls = itertools.count()
    durable = [0]  # the highest batch number a finished sync covers

    def gated(fd: int) -> None:
        covers = store._committed  # batches committed before this sync began
        if next(calls) == 0:
            stalled.set()
            release.wait(30)  # the first sync stalls
        real(fd)
        durable[0] = max(durable[0], covers)

    monkeypatch.setattr(sqlite_store, "_datasync", gated)
    await store.open()
    early: list[tuple[int, int]] = []  # (batch, durable when answered) of alarms answered too soon

    async def alarm(raw: str) -> None:
        batch: list[int] = []
        await store.add_alarm(Alarm(source="t", site="s", raw=raw), on_commit=lambda: batch.append(store._committed))
        if not batch or batch[0] > durable[0]:
            early.append((batch[0] if batch else -1, durable[0]))

    async def writer(w: int) -> None:
        for i in range(15):
            await alarm(f"{w}-{i}")

    try:
        async with asyncio.timeout(20):
            lone = asyncio.ensure_future(alarm("lone"))  # batch 1, its sync held
            while not stalled.is_set():
                await asyncio.sleep(0.01)
            await asyncio.gather(lone, *(writer(w) for w in range(6)))
        assert not release.is_set() and durable[0] >= 2  # answered by later syncs, the first still held
        assert early == []
    finally:
        release.set()
        await store.close()
    assert len(await _reopened_alarms(tmp_path)) == 91


async def _reopened_alarms(tmp_path) -> list[Alarm]:
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    try:
        return await store.pending_alarms()
    finally:
        await store.close()


async def test_delivery_verdicts_wait_out_another_writer_and_keep_the_audit_chain(tmp_path):
    """Verdicts are committed on the event loop when the store is free (no thread hop), and
    through the store's thread, which waits for the lock, when another process writes."""
    import sqlite3

    from crisisbot.store.base import DeliveryRecord

    def verdict(n: int) -> DeliveryRecord:
        return DeliveryRecord(f"i:email:p{n}", "i", "email", f"p{n}", f"p{n}@exemple.fr", DeliveryStatus.sent,
                              "accepted", "relay", 1)

    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        await store.save_deliveries([verdict(1)])
        assert other.execute("SELECT status FROM deliveries WHERE key='i:email:p1'").fetchone() == ("sent",)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        saving = asyncio.ensure_future(store.save_deliveries([verdict(2)]))
        await asyncio.sleep(0.3)
        assert not saving.done()  # waits (on the store's thread), does not fail
        other.execute("COMMIT")
        await asyncio.wait_for(saving, 10)
        assert set(await store.get_deliveries("i")) == {"i:email:p1", "i:email:p2"}
        assert [e.kind for e in await store.audit_entries("i")] == ["delivery.sent", "delivery.sent"]
        assert (await store.verify_audit()).ok
    finally:
        other.close()
        await store.close()
