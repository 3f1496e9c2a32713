"""Kill the web process or the daemon for real (SIGKILL): the web process is restarted by
the daemon, and never outlives it holding the console's port."""

from __future__ import annotations

import os
import signal

import pytest

from conftest import wait_until
from web_process_helpers import WebDaemon, alive, configure, login, web_children


@pytest.fixture
def daemon(workspace, smtp_server):
    configure(workspace, smtp_server.port)
    running = WebDaemon(workspace).start()
    yield running
    running.kill_all()


def test_kill_9_of_the_web_process_is_logged_and_it_is_restarted(daemon):
    first = daemon.web_pid()
    incident = daemon.fire()
    os.kill(first, signal.SIGKILL)
    second = wait_until(lambda: next((p for p in web_children(daemon.pid) if p != first), None), timeout=60,
                        what="a new web process", log=daemon.log)
    wait_until(daemon._serving, timeout=60, what="the new web process to serve", log=daemon.log)
    log = daemon.log.read_text()
    assert f"process {first} exited unexpectedly (killed by signal SIGKILL)" in log
    assert "ERROR" in log.split(f"process {first} exited unexpectedly")[0].splitlines()[-1]
    with daemon.client() as client:
        assert login(client).status_code == 303
        assert client.get(f"/console/incidents/{incident}").status_code == 200
    assert alive(second)
    assert daemon.stop() == 0
    assert not alive(second)


def test_kill_9_of_the_daemon_ends_the_web_process_and_a_new_daemon_binds_the_port(daemon):
    web = daemon.web_pid()
    daemon.process.kill()  # type: ignore[union-attr]
    daemon.process.wait(10)  # type: ignore[union-attr]
    wait_until(lambda: not alive(web), timeout=15, what="the orphaned web process to exit", log=daemon.log)
    again = WebDaemon(daemon.ws).start()  # same ports: nothing holds the console's any more
    try:
        with again.client() as client:
            assert login(client).status_code == 303
    finally:
        assert again.stop() == 0
