"""The daemon as a real process on a workspace, for the store fault tests: start it,
fire signed webhook alarms at it, read what it stored with the CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from conftest import free_port, wait_until, webhook_up  # noqa: F401 - re-exported to the fault tests
from daemon_helpers import SECRET, signed_headers

COMMITTEE = {"alice.martin@exemple.fr", "chloe.dubois@exemple.fr", "david.smith@exemple.fr",
             "bruno.leroy@exemple.fr"}
HANG = 60.0  # seconds after which a process that should have ended is called hung


def configure(ws: Any, smtp_port: int, **smtp: Any) -> int:
    """Webhook on a fixed port, mail through the test relay; returns the webhook port."""
    port = free_port()
    ws.use_smtp(smtp_port, **smtp)
    ws.edit_config(lambda d: d["triggers"].update({"hook": {
        "type": "webhook", "host": "127.0.0.1", "port": port, "secret": "${CRISISBOT_TEST_WEBHOOK_SECRET}"}}))
    return port


def add_people(ws: Any, count: int) -> set[str]:
    """`count` more members of the crisis committee; returns their addresses."""
    path = ws.root / "contacts" / "committee.yaml"
    data = yaml.safe_load(path.read_text())
    added = set()
    for i in range(count):
        data["people"][f"extra{i}"] = {"name": f"Renfort {i}", "email": f"renfort{i}@exemple.fr"}
        data["groups"]["comite-crise"]["members"].append(f"extra{i}")
        added.add(f"renfort{i}@exemple.fr")
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return added


def crisisbot(ws: Any, *args: str, log: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "CRISISBOT_TEST_WEBHOOK_SECRET": SECRET}
    return subprocess.Popen([sys.executable, "-m", "crisisbot", "-c", str(ws.config_path), *args],
                            stdout=log.open("ab") if log else subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def run_cli(ws: Any, *args: str) -> subprocess.CompletedProcess:
    """A CLI command to its end (fails the test if it hangs)."""
    env = {**os.environ, "CRISISBOT_TEST_WEBHOOK_SECRET": SECRET}
    return subprocess.run([sys.executable, "-m", "crisisbot", "-c", str(ws.config_path), *args],
                          capture_output=True, text=True, env=env, timeout=HANG)






def start(ws: Any, port: int, log: Path) -> subprocess.Popen:
    proc = crisisbot(ws, "run", log=log)
    try:
        wait_until(lambda: webhook_up(port) or proc.poll() is not None, what="the daemon to listen")
    except AssertionError:
        stop(proc)
        raise
    assert proc.poll() is None, f"the daemon exited at start:\n{log.read_text()}"
    return proc


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM, then the exit code; a daemon that does not end fails the test."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(HANG)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("the daemon did not exit after SIGTERM") from None


def alarm_request(**fields: Any) -> tuple[bytes, dict[str, str]]:
    """One signed request, to send (and resend as is, like a retrying sender)."""
    body = json.dumps({"site": "paris-hq", "zone": "accueil", "label": "Panique", **fields}).encode()
    return body, signed_headers(body)


def post(port: int, request: tuple[bytes, dict[str, str]]) -> httpx.Response:
    body, headers = request
    return httpx.post(f"http://127.0.0.1:{port}/alarms", content=body, headers=headers, timeout=HANG)


def store_rows(ws: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the daemon's store as an operator's script would (read-only, WAL-aware)."""
    with sqlite3.connect(f"file:{ws.root / 'var' / 'crisisbot.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql, params).fetchall()
