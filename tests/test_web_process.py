"""The web console in its own process (web.isolation: process, the default), with the
daemon as a real subprocess and real HTTP: what an operator and a link holder do works
as before, every change lands in the daemon's store, and the process runs at the
lowest CPU priority in the daemon's session."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import wait_until
from crisisbot.lifecycle.acks import ACK
from crisisbot.links import Signer
from web_process_helpers import (
    HEALTH_TOKEN, PASSWORD, WebDaemon, alive, configure, login, proc_stat, run_cli, store_rows, web_children,
)


@pytest.fixture
def daemon(workspace, smtp_server):
    configure(workspace, smtp_server.port)
    running = WebDaemon(workspace).start()
    yield running
    running.kill_all()


def test_the_web_process_runs_at_the_lowest_priority_in_the_daemons_session(daemon):
    web = daemon.web_pid()
    mine, its = proc_stat(daemon.pid), proc_stat(web)
    assert its["ppid"] == daemon.pid
    assert its["session"] == mine["session"]  # same autogroup: its niceness counts against the daemon's
    assert its["nice"] == min(19, mine["nice"] + 19)
    threads = [int(t.name) for t in Path(f"/proc/{web}/task").iterdir()]
    assert len(threads) > 1  # event loop, pools, store: every one inherited the policy
    assert {os.sched_getscheduler(t) for t in threads} == {os.SCHED_IDLE}  # preempted at once by the alarm path
    assert os.sched_getscheduler(daemon.pid) == os.SCHED_OTHER
    assert "(web pid" in daemon.log.read_text()  # its log lines say where they come from
    status = run_cli(daemon.ws, "status")
    assert f"web console process: serving (process {web}, port {daemon.web_port}, restarts 0)" in status.stdout, \
        status.stdout + status.stderr


def test_console_acknowledge_lands_in_the_daemons_store(daemon):
    incident = daemon.fire()
    with daemon.client() as client:
        assert login(client).status_code == 303
        page = client.get(f"/console/incidents/{incident}")
        assert page.status_code == 200 and incident in page.text
        done = client.post(f"/console/incidents/{incident}/ack", data={"response": "on_it"})
        assert done.status_code == 303, done.text
    assert store_rows(daemon.ws, "SELECT person_id, via FROM acks WHERE incident_id=?", (incident,)) == \
        [("alice", "console")]
    kinds = [k for (k,) in store_rows(daemon.ws, "SELECT kind FROM audit ORDER BY seq")]
    assert "console.login" in kinds and "incident.acknowledged" in kinds
    audit = run_cli(daemon.ws, "audit", "verify")
    assert audit.returncode == 0, audit.stderr


def test_a_link_revoked_in_the_console_is_refused_at_once(daemon):
    incident = daemon.fire()
    key = (daemon.ws.root / "var" / "secret.key").read_bytes()
    token = Signer(key).sign(incident, "alice", ACK, 3600)
    with daemon.client() as client:
        assert client.get(f"/ack/{token}").status_code == 200
        assert login(client).status_code == 303
        revoked = client.post(f"/console/incidents/{incident}/links/revoke", data={"person": "alice"})
        assert revoked.status_code == 303, revoked.text
        refused = client.get(f"/ack/{token}")
    assert refused.status_code == 403 and "revoked" in refused.text


def test_sessions_revoke_from_the_cli_ends_a_console_session_at_once(daemon):
    with daemon.client() as client:
        assert login(client).status_code == 303
        assert client.get("/console").status_code == 200
        revoked = run_cli(daemon.ws, "sessions", "revoke", "--user", "operator")
        assert revoked.returncode == 0, revoked.stderr
        after = client.get("/console")
    assert after.status_code == 303 and after.headers["location"] == "/console/login"


def test_health_says_the_daemons_verdict(daemon):
    with daemon.client() as client:
        public = client.get("/health")
        detailed = client.get("/health", headers={"Authorization": f"Bearer {HEALTH_TOKEN}"})
    body = detailed.json()
    assert public.json() == {"status": body["status"]}
    checks = body["checks"]  # the daemon's checks, as when it served /health itself
    assert body["status"] == "up" and "daemon" not in checks
    assert checks["web"]["status"] == "up" and checks["web"]["pid"] == daemon.web_pid()
    assert {"supervision", "inputs", "deliveries", "daemon_pools"} <= set(checks)
    assert checks["pools"]["pools"]["hashing"]["workers"] == 2  # the web process's own (logins)


def test_reload_with_a_new_user_refuses_no_connection(daemon):
    daemon.ws.edit_config(lambda d: d["web"]["users"].update(
        {"newcomer": {"password_hash": "${file:secrets/operator.hash}", "role": "viewer"}}))
    old = daemon.web_pid()
    failures: list[str] = []
    answered = 0
    done = threading.Event()

    def hammer() -> None:
        nonlocal answered
        with httpx.Client(base_url=daemon.base, timeout=30) as client:
            while not done.is_set():
                try:
                    client.get("/console/login", headers={"Connection": "close"}).raise_for_status()
                    answered += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: not alive(old), timeout=60, what="the old web process to be replaced", log=daemon.log)
        with daemon.client() as client:
            assert login(client, "newcomer").status_code == 303
        time.sleep(0.2)  # a few requests to the new process too
    finally:
        done.set()
        thread.join(30)
    assert failures == [] and answered > 0
    assert web_children(daemon.pid) != [old]


def test_a_changed_web_port_on_reload_says_it_needs_a_restart(daemon):
    daemon.ws.edit_config(lambda d: d["web"].update(port=daemon.web_port + 1))
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "web.port changed: takes effect when the daemon is restarted" in daemon.log.read_text(),
               what="the warning", log=daemon.log)
    with daemon.client() as client:  # still served where it was
        assert client.get("/console/login").status_code == 200


def test_sigterm_stops_the_daemon_and_its_web_process(daemon):
    web = daemon.web_pid()
    assert daemon.stop() == 0
    assert not alive(web)


async def test_a_port_in_use_is_a_clear_start_error(workspace, smtp_server, monkeypatch):
    from crisisbot.config.bundle import load_bundle
    from crisisbot.daemon import Daemon

    configure(workspace, smtp_server.port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        workspace.edit_config(lambda d: d["web"].update(port=taken.getsockname()[1]))
        monkeypatch.setenv("CRISISBOT_TEST_WEBHOOK_SECRET", "x" * 32)
        daemon = Daemon(workspace.config_path, load_bundle(workspace.config_path))
        with pytest.raises(OSError, match="port in use"):
            await daemon.start()


async def test_a_dead_web_process_is_logged_shown_in_health_and_restarted(workspace, smtp_server, caplog,
                                                                           monkeypatch):
    """In-process daemon, real web process: kill -9 it, watch the supervisor."""
    from daemon_helpers import running_daemon

    configure(workspace, smtp_server.port)
    async with running_daemon(workspace, monkeypatch) as d:
        first = d.web.pid
        assert first is not None and (await d.web.check()).status == "up"
        os.kill(first, signal.SIGKILL)
        seen = []
        for _ in range(3000):  # the restart waits 0.5 s at least, then a whole start-up
            check = await d.web.check()
            seen.append(check.status)
            if check.status == "up" and d.web.pid not in (None, first):
                break
            await asyncio.sleep(0.01)
        assert "degraded" in seen
        assert not os.path.exists(f"/proc/{first}")  # reaped: no zombie left
        status, checks = await d.runtime.health.gather()
        assert checks["web"]["status"] == "up" and checks["web"]["restarts"] == 1
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.web.port}") as client:
            assert (await client.post("/console/login", data={"username": "operator", "password": PASSWORD}))\
                .status_code == 303
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "exited unexpectedly" in r.getMessage()]
    assert errors and "SIGKILL" in errors[0].getMessage()


async def test_the_daemon_is_ready_before_its_web_process_and_a_reload_meanwhile_is_not_lost(
        workspace, smtp_server, monkeypatch):
    """In-process daemon, real web processes. `start()` returns without waiting for the web
    process (at the lowest priority it only starts on CPU time the daemon leaves); a
    reload that comes while it starts replaces it once it serves, so the new user exists."""
    from crisisbot.config.bundle import load_bundle
    from crisisbot.daemon import Daemon

    configure(workspace, smtp_server.port)
    monkeypatch.setenv("CRISISBOT_TEST_WEBHOOK_SECRET", "x" * 32)
    daemon = Daemon(workspace.config_path, load_bundle(workspace.config_path))
    await daemon.start()
    try:
        assert daemon.web.pid is None  # ready, its web process not yet serving
        assert (await daemon.web.check()).details["web"].endswith("not serving: starting")
        workspace.edit_config(lambda d: d["web"]["users"].update(
            {"newcomer": {"password_hash": "${file:secrets/operator.hash}", "role": "viewer"}}))
        assert await daemon.reload()
        first = await daemon.web.serving(60)  # started before the reload: it may have read either files
        for _ in range(600):
            if daemon.web.pid not in (None, first) and not alive(first):
                break
            await asyncio.sleep(0.1)
        assert daemon.web.pid not in (None, first) and not alive(first)  # replaced by one started after it
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.web.port}", timeout=30) as client:
            answer = await client.post("/console/login", data={"username": "newcomer", "password": PASSWORD})
        assert answer.status_code == 303
    finally:
        await asyncio.wait_for(daemon.stop(), 30)
    assert web_children(os.getpid()) == []
