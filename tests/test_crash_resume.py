"""Kill -9 the daemon in the middle of a playbook, restart it: the incident completes and
nobody receives the committee email twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import RecordingHandler, SmtpServer, free_port, wait_until, webhook_up
from daemon_helpers import SECRET, signed_headers
from crisisbot.cli import main

COMMITTEE = {"alice.martin@exemple.fr", "chloe.dubois@exemple.fr", "david.smith@exemple.fr", "bruno.leroy@exemple.fr"}


def start_daemon(ws, log: Path) -> subprocess.Popen:
    env = {**os.environ, "CRISISBOT_TEST_WEBHOOK_SECRET": SECRET}
    return subprocess.Popen([sys.executable, "-m", "crisisbot", "-c", str(ws.config_path), "run"],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)






def test_kill_mid_playbook_then_restart_sends_nothing_twice(workspace, capsys, monkeypatch):
    handler = RecordingHandler(data_delay=1.0)  # each message takes a second to be accepted
    port = free_port()
    with SmtpServer(handler) as smtp:
        workspace.use_smtp(smtp.port, connections=1)
        workspace.edit_config(lambda d: d["triggers"].update({"hook": {
            "type": "webhook", "host": "127.0.0.1", "port": port, "secret": "${CRISISBOT_TEST_WEBHOOK_SECRET}"}}))
        log = workspace.root / "daemon.log"
        daemon = start_daemon(workspace, log)
        try:
            wait_until(lambda: webhook_up(port), what="the daemon to listen")
            body = json.dumps({"site": "paris-hq", "zone": "accueil", "label": "Panique"}).encode()
            response = httpx.post(f"http://127.0.0.1:{port}/alarms", content=body, headers=signed_headers(body))
            assert response.status_code == 202
            wait_until(lambda: len(handler.messages) >= 1, what="the first email")
            time.sleep(0.4)  # the second message is now in the middle of DATA
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
            assert len(handler.messages) < len(COMMITTEE), "the playbook finished before the kill"
            delivered_before = len(handler.messages)

            handler.data_delay = 0.0
            daemon = start_daemon(workspace, log)
            wait_until(lambda: len(handler.messages) >= len(COMMITTEE), what="the remaining emails")
            time.sleep(0.5)  # give a wrong duplicate the chance to show up
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(15)
    recipients = [m.rcpt[0] for m in handler.messages]
    assert sorted(recipients) == sorted(COMMITTEE), f"duplicates or losses: {recipients}"
    assert delivered_before >= 1
    assert daemon.returncode == 0  # SIGTERM is a clean stop

    monkeypatch.delenv("CRISISBOT_TEST_WEBHOOK_SECRET", raising=False)  # reading needs no secret
    assert main(["-c", str(workspace.config_path), "incidents"]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert row.split()[3:5] == ["open", "done"]  # state, playbook outcome
    incident_id = row.split()[0]
    assert main(["-c", str(workspace.config_path), "incidents", "show", incident_id]) == 0
    timeline = capsys.readouterr().out
    assert "incident.resumed" in timeline
    assert timeline.count("delivery.sent") == len(COMMITTEE)
    assert main(["-c", str(workspace.config_path), "audit", "verify"]) == 0
    assert "audit log intact" in capsys.readouterr().out
