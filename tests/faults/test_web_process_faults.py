"""Kill the web process or the daemon for real (SIGKILL): the web process is restarted by
the daemon, and never outlives it holding the console's port."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from conftest import wait_until
from web_process_helpers import HEALTH_TOKEN, WebDaemon, alive, configure, login, web_children


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


def test_a_daemon_that_does_not_answer_is_down_in_the_web_process_health(daemon):
    """SIGSTOP: the daemon is there but answers nothing; the web process says so."""
    import httpx

    daemon.signal(signal.SIGSTOP)
    try:
        reply = httpx.get(f"{daemon.base}/health", timeout=30, headers={"Authorization": f"Bearer {HEALTH_TOKEN}"})
    finally:
        daemon.signal(signal.SIGCONT)
    assert reply.status_code == 503 and reply.json()["status"] == "down"
    assert "not answering" in reply.json()["checks"]["daemon"]["daemon"]
    wait_until(lambda: httpx.get(f"{daemon.base}/health", timeout=30).json()["status"] == "up", timeout=30,
               what="the verdict to be up again", log=daemon.log)


async def test_a_web_process_that_cannot_start_is_retried_until_it_can(workspace, smtp_server, monkeypatch,
                                                                        caplog):
    """In-process daemon, real web processes: the key the web process needs is gone for a
    while (restarts fail, logged, health degraded), then back (the next restart serves)."""
    import asyncio

    from daemon_helpers import running_daemon

    configure(workspace, smtp_server.port)
    key = workspace.root / "var" / "images.key"
    async with running_daemon(workspace, monkeypatch) as d:
        first = d.web.pid
        key.rename(key.with_suffix(".away"))
        os.kill(first, signal.SIGKILL)
        for _ in range(6000):
            if d.web.restarts >= 2:
                break
            await asyncio.sleep(0.01)
        check = await d.web.check()
        assert check.status == "degraded" and "stopped before serving" in check.details["web"]
        key.with_suffix(".away").rename(key)
        for _ in range(6000):
            if (await d.web.check()).status == "up":
                break
            await asyncio.sleep(0.01)
        assert (await d.web.check()).status == "up" and d.web.pid != first
    failures = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name == "crisisbot.web.process"]
    assert any("exited unexpectedly" in m for m in failures)
    assert any("stopped before serving" in m for m in failures)


async def test_a_stop_while_a_new_web_process_starts_leaves_no_process(workspace, smtp_server, monkeypatch):
    """A reload's new web process is starting when the daemon stops: both processes end."""
    import asyncio

    from crisisbot.config.bundle import load_bundle
    from crisisbot.daemon import Daemon

    configure(workspace, smtp_server.port)
    monkeypatch.setenv("CRISISBOT_TEST_WEBHOOK_SECRET", "x" * 32)
    daemon = Daemon(workspace.config_path, load_bundle(workspace.config_path))
    await daemon.start()
    try:
        first = await daemon.web.serving(60)
        replacing = asyncio.ensure_future(daemon.web.reload())
        for _ in range(3000):
            starting = [p for p in web_children(os.getpid()) if p != first]
            if starting:
                break
            await asyncio.sleep(0.01)
        assert starting, "no new web process was started"
    finally:
        await asyncio.wait_for(daemon.stop(), 30)
    await asyncio.gather(replacing, return_exceptions=True)
    assert not alive(first) and not alive(starting[0])
    assert web_children(os.getpid()) == []


def test_random_kill_9_of_the_daemon_restarted_at_once_loses_no_email_and_no_start(daemon, smtp_server):
    """kill -9 of the daemon at random moments after an alarm, each time started again at
    once on the same ports, as a supervisor would: the orphaned web process must never make
    the new daemon's start fail (port in use), and every alarm reaches the whole committee."""
    seed = int(os.environ.get("CRISISBOT_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    received = smtp_server.handler.messages

    def reached() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for message in received:
            found.setdefault(str(message.message["X-Crisisbot-Incident"]), set()).update(message.rcpt)
        return found

    daemon.fire(label="warm-up")
    committee = wait_until(lambda: next(iter(reached().values()), None), what="the warm-up's first email",
                           log=daemon.log)
    time.sleep(1.0)  # the rest of its convocation
    committee = next(iter(reached().values()))
    orphans = []
    for crash in range(5):
        orphans.append(daemon.web_pid())
        daemon.fire(details={"run": crash})  # answered 202: stored
        time.sleep(rng.uniform(0.005, 0.2))
        daemon.process.kill()  # type: ignore[union-attr]
        daemon.process.wait(10)  # type: ignore[union-attr]
        daemon.start()  # at once (the console may still answer from the orphan meanwhile)
        daemon.web_pid()  # the new daemon bound the console's port and started its own web process
        assert daemon.process.poll() is None, daemon.log.read_text()[-3000:]  # type: ignore[union-attr]
        wait_until(lambda: len(reached()) == crash + 2 and all(r == committee for r in reached().values()),
                   timeout=60, what=f"every email of alarm {crash + 1} (seed {seed})", log=daemon.log)
    assert daemon.stop() == 0
    wait_until(lambda: not any(alive(pid) for pid in orphans), timeout=15, what="the orphaned web processes to exit")
