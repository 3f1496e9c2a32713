"""A second daemon on the same data directory is refused at once, naming the first;
the first keeps accepting alarms and its audit chain stays whole."""

from __future__ import annotations

import json

from conftest import RecordingHandler, SmtpServer
from store_helpers import (COMMITTEE, HANG, alarm_request, configure, crisisbot, post, run_cli, start, stop,
                           store_rows, wait_until)


def test_second_daemon_is_refused_and_the_first_keeps_working(workspace):
    handler = RecordingHandler()
    with SmtpServer(handler) as smtp:
        port = configure(workspace, smtp.port)
        log = workspace.root / "first.log"
        first = start(workspace, port, log)
        try:
            second = crisisbot(workspace, "run")
            out, _ = second.communicate(timeout=HANG)
            message = out.decode()
            assert second.returncode != 0
            assert f"pid {first.pid}" in message and "already uses the data directory" in message, message
            assert "Traceback" not in message

            response = post(port, alarm_request())
            assert response.status_code == 202, response.text
            wait_until(lambda: {m.rcpt[0] for m in handler.messages} >= COMMITTEE, what="the committee emails")
            second_alarm = post(port, alarm_request(label="Panique bis"))
            assert second_alarm.status_code == 202, second_alarm.text
        finally:
            assert stop(first) == 0
    assert sorted(m.rcpt[0] for m in handler.messages) == sorted(COMMITTEE)
    verify = run_cli(workspace, "audit", "verify")
    assert verify.returncode == 0 and "audit log intact" in verify.stdout, verify.stderr
    listing = run_cli(workspace, "incidents").stdout
    assert len(listing.splitlines()) == 2, listing  # header and one incident: the second daemon opened nothing
    loaded = store_rows(workspace, "SELECT data FROM audit WHERE kind='config.loaded'")
    assert len(loaded) == 1 and json.loads(loaded[0][0])["instance"]["pid"] == first.pid


def test_the_lock_is_released_when_the_holder_dies(workspace):
    """kill -9 leaves no stale lock: the kernel drops it with the process."""
    with SmtpServer(RecordingHandler()) as smtp:
        port = configure(workspace, smtp.port)
        log = workspace.root / "daemon.log"
        first = start(workspace, port, log)
        first.kill()
        first.wait(HANG)
        again = start(workspace, port, log)
        assert stop(again) == 0
