"""The demo button presses only under `crisisbot demo`, and each demo run shows its own
incident (the shipped configuration, its outbox and Jitsi connector)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import Workspace
from crisisbot.config.bundle import load_bundle
from crisisbot.daemon import Daemon


def shipped(tmp_path: Path, delay: str = "10ms") -> Workspace:
    """The shipped configuration, demo button included, pressed soon after start."""
    ws = Workspace.shipped(tmp_path)
    ws.edit_config(lambda d: d["triggers"]["demo-button"].update(delay=delay))
    return ws


def crisisbot(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crisisbot", "-c", str(ws.config_path), *args],
                          capture_output=True, text=True, timeout=120, cwd=ws.root)


async def test_run_on_the_shipped_config_never_starts_the_demo_button(tmp_path):
    ws = shipped(tmp_path)
    daemon = Daemon(ws.config_path, load_bundle(ws.config_path))
    await daemon.start()
    try:
        started = set(daemon.runtime.triggers)
        pending = await daemon.runtime.store.pending_alarms()
        await daemon.engine.idle()
        incidents = await daemon.runtime.store.list_incidents()
    finally:
        await daemon.stop()
    assert "demo-button" not in started and pending == [] and incidents == []


def test_crisisbot_run_says_the_demo_button_is_off_and_fires_nothing(tmp_path):
    ws = shipped(tmp_path)
    log = (tmp_path / "run.log").open("w+")
    daemon = subprocess.Popen([sys.executable, "-m", "crisisbot", "-c", str(ws.config_path), "run"],
                              stdout=log, stderr=subprocess.STDOUT, cwd=ws.root)
    try:
        while "crisisbot ready" not in Path(log.name).read_text():  # waits for a fact, not for a time
            assert daemon.poll() is None, Path(log.name).read_text()
            time.sleep(0.05)
        time.sleep(0.5)  # fifty times the button's delay: it would have pressed by now
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    output = Path(log.name).read_text()
    assert daemon.returncode == 0, output
    assert "demo-button presses a demo button only under `crisisbot demo`; not started" in output
    listed = crisisbot(ws, "incidents")
    assert listed.stdout.strip() == "no incidents" and not list((ws.root / "var").rglob("*.eml"))


def test_demo_twice_shows_two_incidents_each_its_own(tmp_path):
    ws = shipped(tmp_path)
    first, second = crisisbot(ws, "demo"), crisisbot(ws, "demo")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    ids = [re.search(r"^Incident ([0-9a-f]{32})$", run.stdout, re.M).group(1) for run in (first, second)]
    assert ids[0] != ids[1]
    for run, incident_id in zip((first, second), ids):
        assert "playbook outcome: done" in run.stdout and "meeting.opened" in run.stdout
        assert re.search(rf"4 email\(s\) written to .*\n  .*{incident_id}_", run.stdout)
    rows = {line.split()[0]: line.split()[3:5] for line in crisisbot(ws, "incidents").stdout.splitlines()[1:]}
    assert rows == {ids[1][:12]: ["open", "done"], ids[0][:12]: ["resolved", "done"]}
    shown = crisisbot(ws, "incidents", "show", ids[0]).stdout
    assert "closed by a new `crisisbot demo` run" in shown
