"""The daemon as a real process with its web console in a child process (web.isolation:
process): start it, log in, find the web process in /proc, kill either for real."""

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

from conftest import Workspace, free_port, wait_until
from crisisbot.web.passwords import hash_password
from daemon_helpers import SECRET, signed_headers

PASSWORD = "correct horse battery staple"
HEALTH_TOKEN = "health-token-0123456789abcdef"
HANG = 60.0


def configure(ws: Workspace, smtp_port: int, **web: Any) -> None:
    """A webhook input, mail through the test relay, the console with an operator (alice) and an admin."""
    ws.use_smtp(smtp_port)
    ws.write("secrets/operator.hash", hash_password(PASSWORD) + "\n")

    def change(data: dict[str, Any]) -> None:
        data["triggers"]["hook"] = {"type": "webhook", "host": "127.0.0.1", "port": free_port(),
                                    "secret": "${CRISISBOT_TEST_WEBHOOK_SECRET}"}
        data["incidents"]["join_window"] = "0s"
        data["web"] = {"enabled": True, "isolation": "process", "host": "127.0.0.1", "port": free_port(),
                       "health_token": HEALTH_TOKEN,
                       "users": {
                           "operator": {"password_hash": "${file:secrets/operator.hash}", "person": "alice"},
                           "boss": {"password_hash": "${file:secrets/operator.hash}", "role": "admin"}},
                       **web}
    ws.edit_config(change)


def proc_stat(pid: int) -> dict[str, int]:
    """ppid, session and niceness of a process, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    rest = text[text.rfind(")") + 2:].split()  # fields from 3 (state) on
    return {"ppid": int(rest[1]), "session": int(rest[3]), "nice": int(rest[16]), "state": rest[0]}  # type: ignore[dict-item]


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not reaped, counts as gone)."""
    try:
        return proc_stat(pid)["state"] != "Z"  # type: ignore[comparison-overlap]
    except (FileNotFoundError, ProcessLookupError):
        return False


def web_children(pid: int) -> list[int]:
    """The `crisisbot web-worker` processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"web-worker" in (entry / "cmdline").read_bytes() and proc_stat(int(entry.name))["ppid"] == pid:
                found.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return found


def env() -> dict[str, str]:
    return {**os.environ, "CRISISBOT_TEST_WEBHOOK_SECRET": SECRET}


def run_cli(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crisisbot", "-c", str(ws.config_path), *args],
                          capture_output=True, text=True, env=env(), timeout=HANG)


def store_rows(ws: Workspace, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{ws.root / 'var' / 'crisisbot.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql, params).fetchall()


class WebDaemon:
    """`crisisbot run` in a subprocess (output in daemon.log), with its web process."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.log = ws.root / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        config = ws.config()
        self.web_port = int(config["web"]["port"])
        self.hook_port = int(config["triggers"]["hook"]["port"])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> "WebDaemon":
        self.process = subprocess.Popen([sys.executable, "-m", "crisisbot", "-c", str(self.ws.config_path), "run"],
                                        stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env())
        wait_until(self._serving, timeout=HANG, what="the daemon's web process to serve", log=self.log)
        return self

    def _serving(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.base}/console/login", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def web_pid(self) -> int:
        return int(wait_until(lambda: (web_children(self.pid) or [0])[0], what="the web process", log=self.log))

    def fire(self, **fields: Any) -> str:
        """A webhook alarm; returns the incident it opened."""
        body = json.dumps({"site": "paris-hq", "zone": "accueil", "label": "Panique", **fields}).encode()
        response = httpx.post(f"http://127.0.0.1:{self.hook_port}/alarms", content=body,
                              headers=signed_headers(body), timeout=30)
        assert response.status_code == 202, response.text
        return str(wait_until(lambda: self._incident(), what="the alarm's incident", log=self.log))

    def _incident(self) -> str | None:
        rows = store_rows(self.ws, "SELECT id FROM incidents ORDER BY opened_at DESC LIMIT 1")
        return rows[0][0] if rows else None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> int:
        """SIGTERM and the exit code; a daemon that does not end fails the test."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(HANG)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"the daemon did not stop on SIGTERM:\n{self.log.read_text()[-3000:]}") from None

    def kill_all(self) -> None:
        """Cleanup after a failed test: the daemon and any web process of it."""
        if self.process is not None and self.process.poll() is None:
            children = web_children(self.pid)
            self.process.kill()
            self.process.wait(10)
            for child in children:
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def login(client: httpx.Client, user: str = "operator", password: str = PASSWORD) -> httpx.Response:
    return client.post("/console/login", data={"username": user, "password": password})
