"""Start and stop always end: a start that fails exits non-zero with one clear line
(its store closed, no thread left behind), and SIGTERM in the middle of a playbook
exits 0 leaving the rest of the work to the next start."""

from __future__ import annotations

import signal
import socket

from conftest import RecordingHandler, SmtpServer
from test_store_lock_damage import hold_lock
from store_helpers import (COMMITTEE, HANG, add_people, alarm_request, configure, crisisbot, post, run_cli, start,
                           stop, store_rows, wait_until)


def test_a_start_failing_after_the_store_is_open_exits_with_the_reason(workspace):
    with SmtpServer(RecordingHandler()) as smtp, socket.socket() as taken:
        port = configure(workspace, smtp.port)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        daemon = crisisbot(workspace, "run")
        out, _ = daemon.communicate(timeout=HANG)  # before the fix: hung forever, store thread alive
    message = out.decode()
    assert daemon.returncode == 1, message
    assert "could not start" in message and "Traceback" not in message, message
    # the store was closed cleanly: the next start on the same data works
    with SmtpServer(RecordingHandler()) as smtp:
        port = configure(workspace, smtp.port)
        assert stop(start(workspace, port, workspace.root / "daemon.log")) == 0


def test_sigterm_mid_convocation_exits_and_the_next_start_finishes_it(workspace):
    handler = RecordingHandler(data_delay=0.5)  # 24 messages, one connection: longer than the stop grace
    with SmtpServer(handler) as smtp:
        port = configure(workspace, smtp.port, connections=1)
        everyone = COMMITTEE | add_people(workspace, 20)
        log = workspace.root / "daemon.log"
        daemon = start(workspace, port, log)
        assert post(port, alarm_request()).status_code == 202
        wait_until(lambda: handler.messages, what="the first email")
        assert stop(daemon) == 0
        assert len(handler.messages) < len(everyone), "the convocation ended before SIGTERM"
        assert store_rows(workspace, "SELECT status FROM incidents") == [("open",)]

        handler.data_delay = 0.0
        daemon = start(workspace, port, log)
        try:
            wait_until(lambda: store_rows(workspace, "SELECT status, outcome FROM incidents") == [("open", "done")],
                       timeout=HANG, what="the resumed incident to complete")
        finally:
            assert stop(daemon) == 0
    received = [m.rcpt[0] for m in handler.messages]
    assert set(received) == everyone
    assert len(received) - len(everyone) <= 1, "at most the message in flight at SIGTERM is sent again"


def test_a_start_on_a_store_locked_elsewhere_exits_naming_the_lock(workspace):
    with SmtpServer(RecordingHandler()) as smtp:
        configure(workspace, smtp.port)
        assert run_cli(workspace, "audit", "verify").returncode == 0  # creates the store to lock
        holder = hold_lock(workspace.root / "var" / "crisisbot.db", HANG)
        try:
            daemon = crisisbot(workspace, "run")
            out, _ = daemon.communicate(timeout=HANG)
            still_locked = holder.poll() is None
        finally:
            holder.kill()
            holder.wait()
    message = out.decode()
    assert daemon.returncode == 1 and still_locked, message
    assert "locked by another process" in message and "Traceback" not in message, message


def test_sigterm_while_starting_ends_the_start(workspace):
    with SmtpServer(RecordingHandler()) as smtp:
        configure(workspace, smtp.port)
        assert run_cli(workspace, "audit", "verify").returncode == 0  # creates the store to lock
        holder = hold_lock(workspace.root / "var" / "crisisbot.db", HANG)  # the start waits on it
        try:
            log = workspace.root / "second.log"
            daemon = crisisbot(workspace, "run", log=log)
            wait_until(lambda: "claimed the data directory" in log.read_text(), what="the start to reach the store")
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(HANG)
            still_locked = holder.poll() is None
        finally:
            holder.kill()
            holder.wait()
    assert code == 0 and still_locked, log.read_text()
    assert "stop requested while starting" in log.read_text() and "Traceback" not in log.read_text()
