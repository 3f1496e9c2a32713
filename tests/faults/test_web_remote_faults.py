"""The web child's link to a daemon that dies for real (kill -9) and comes back: every
command in between is a clear "not answering" (never a traceback, never acted on
elsewhere), /health's daemon check says "down", and the same RemoteBus works again
with the next daemon; the audit entries it sent before the kill stay in a whole chain."""

from __future__ import annotations

import asyncio

import pytest

from conftest import RecordingHandler, SmtpServer
from crisisbot.commands import DaemonStatus, Health, HealthReport, Status
from crisisbot.config.bundle import load_bundle
from crisisbot.errors import DaemonBusy
from crisisbot.web.remote import RemoteAudit, RemoteBus, daemon_health_check
from daemon_helpers import SECRET
from store_helpers import HANG, configure, run_cli, start, stop, store_rows


async def answering(control) -> None:
    """The control socket opens a moment after the inputs `start` waits for."""
    status = await RemoteBus(control, attempts=int(HANG / 0.1), pause=0.1).dispatch(Status(actor="test"))
    assert type(status) is DaemonStatus


async def test_a_killed_daemon_is_not_answering_then_the_same_bus_works_with_the_next_one(workspace, monkeypatch):
    monkeypatch.setenv("CRISISBOT_TEST_WEBHOOK_SECRET", SECRET)
    now = [0.0]
    with SmtpServer(RecordingHandler()) as smtp:
        port = configure(workspace, smtp.port)
        control = load_bundle(workspace.config_path).control_socket
        bus = RemoteBus(control, attempts=2, pause=0.05)
        check = daemon_health_check(bus, clock=lambda: now[0])
        log = workspace.root / "daemon.log"
        daemon = start(workspace, port, log)
        try:
            await answering(control)
            before = await RemoteAudit(bus)("console.login", None, {"user": "operator", "client": "127.0.0.1"})
            up = await check()
            assert up.status in ("up", "degraded") and "supervision" in up.details["checks"]

            daemon.kill()
            daemon.wait(HANG)
            with pytest.raises(DaemonBusy, match="the daemon is not answering"):
                await RemoteAudit(bus)("console.logout", None, {"user": "operator", "session": "s1"})
            now[0] += 2
            down = await check()
            assert down.status == "down" and down.details["daemon"].startswith("not answering: ")

            daemon = start(workspace, port, log)
            await answering(control)
            after = await RemoteAudit(bus)("console.logout", None, {"user": "operator", "session": "s1"})
            report = await bus.dispatch(Health(actor="web", via="web"))
            now[0] += 2
            back = await check()
        finally:
            assert stop(daemon) == 0
    assert isinstance(report, HealthReport) and back.status == report.status
    assert after.seq > before.seq
    kinds = [k for (k,) in store_rows(workspace, "SELECT kind FROM audit WHERE kind LIKE 'console.log%' ORDER BY seq")]
    assert kinds == ["console.login", "console.logout"]  # the refused logout was not written by anyone
    verify = await asyncio.to_thread(run_cli, workspace, "audit", "verify")
    assert verify.returncode == 0 and "audit log intact" in verify.stdout, verify.stderr
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
