"""A delivery verdict that cannot be committed is never dropped: it is retried until the
store takes it, sending goes on meanwhile, and /health says `error` until then."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from daemon_helpers import running_daemon
from crisisbot.models import Alarm, DeliveryStatus

COMMITTEE = {"alice.martin@exemple.fr", "chloe.dubois@exemple.fr", "david.smith@exemple.fr", "bruno.leroy@exemple.fr"}
REFUSE = "CREATE TRIGGER refuse_verdicts BEFORE INSERT ON deliveries BEGIN SELECT RAISE(ABORT, 'disk says no'); END"


async def until(predicate, what: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_failing_verdict_commit_is_retried_and_reported(workspace, smtp_server, caplog):
    workspace.use_smtp(smtp_server.port)
    caplog.set_level(logging.ERROR)
    async with running_daemon(workspace) as daemon:
        store, health = daemon.runtime.store, daemon.runtime.health
        database = sqlite3.connect(store.path)  # a real store failure: SQLite aborts every delivery insert
        database.execute(REFUSE)
        database.commit()
        alarm = Alarm(source="manual", site="paris-hq", zone="accueil", label="Bouton panique")
        await daemon.engine.submit(alarm)

        async def all_arrived() -> bool:
            return {r for m in smtp_server.handler.messages for r in m.rcpt} == COMMITTEE

        await until(all_arrived, "the emails, sent although their verdicts cannot be written")
        status, checks = await health.gather()
        assert status == "down" and checks["deliveries"]["status"] == "down"
        assert "disk says no" in checks["deliveries"]["error"]

        database.execute("DROP TRIGGER refuse_verdicts")  # the store recovers
        database.commit()
        database.close()

        async def ok_again() -> bool:
            return (await health.gather())[0] == "up"

        await until(ok_again, "/health to say ok once the verdicts are written")
        incident = await daemon.engine.wait_processed(alarm.id)
        await daemon.engine.wait_incident(incident.id)
        deliveries = await store.get_deliveries(incident.id)
    assert {d.address for d in deliveries.values() if d.status is DeliveryStatus.sent} == COMMITTEE
    assert len(smtp_server.handler.messages) == len(COMMITTEE)  # nothing was sent twice meanwhile
    assert "cannot record delivery verdicts" in caplog.text
    assert "Task exception was never retrieved" not in caplog.text
