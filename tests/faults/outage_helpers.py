"""The daemon as a subprocess against real aiosmtpd relays: start, fire, read /health, kill.

Relays are started on ports chosen up front, so a test can have a relay "down"
(nothing listening) and bring it up later on the very port the daemon uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import httpx
import yaml
from aiosmtpd.controller import Controller

from conftest import RecordingHandler, Workspace, free_port, wait_until  # noqa: F401 - re-exported to the fault tests
from daemon_helpers import SECRET, signed_headers


def committee(ws: Workspace, size: int, *, extra: dict[str, dict[str, Any]] | None = None) -> set[str]:
    """Replace the shipped contacts by a `comite-crise` of `size` people (plus `securite`); return their addresses."""
    people = {f"m{i:02d}": {"name": f"Membre {i}", "email": f"m{i:02d}@exemple.fr"} for i in range(size)}
    people.update(extra or {})
    groups: dict[str, Any] = {"comite-crise": {"name": "Comité", "members": [f"m{i:02d}" for i in range(size)]},
                              "securite": {"name": "Sécurité", "members": ["m00"]}}
    for person in extra or {}:
        groups[f"veille-{person}"] = {"name": "Veille", "members": [person]}
    (ws.root / "contacts" / "committee.yaml").write_text(yaml.safe_dump({"people": people, "groups": groups}))
    return {p["email"] for key, p in people.items() if key.startswith("m")}


def configure(ws: Workspace, relays: list[int], *, webhook: int, web: int | None = None,
              connections: int = 4, **mail: Any) -> None:
    """Relays in order as mail.via, short backoffs, a webhook input and (optionally) the web server for /health."""
    def change(data: dict[str, Any]) -> None:
        names = []
        for index, port in enumerate(relays):
            name = f"relay{index + 1}"
            data["connectors"][name] = {"type": "smtp", "host": "127.0.0.1", "port": port, "security": "none",
                                        "timeout": "2s", "connections": connections}
            names.append(name)
        data["mail"].update({"via": names, "backoff": "50ms", "retry_cap": "300ms", **mail})
        data["triggers"]["hook"] = {"type": "webhook", "host": "127.0.0.1", "port": webhook,
                                    "secret": "${CRISISBOT_TEST_WEBHOOK_SECRET}"}
        data["incidents"]["join_window"] = "0s"  # every alarm of a test opens its own incident
        if web is not None:
            data["web"] = {"enabled": True, "host": "127.0.0.1", "port": web}
    ws.edit_config(change)


class Relay:
    """An aiosmtpd relay on a fixed port, started and stopped at will."""

    def __init__(self, handler: RecordingHandler | None = None, port: int | None = None) -> None:
        self.handler = handler or RecordingHandler()
        self.port = port or free_port()
        self.controller: Controller | None = None

    def start(self) -> "Relay":
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def message_ids(self) -> Counter[str]:
        return Counter(str(m.message["Message-ID"]) for m in self.handler.messages)


class Daemon:
    """`crisisbot run` in a subprocess, its output appended to one log file."""

    def __init__(self, ws: Workspace, webhook: int, web: int | None = None) -> None:
        self.ws, self.webhook, self.web = ws, webhook, web
        self.log = ws.root / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Daemon":
        for _ in range(3):
            env = {**os.environ, "CRISISBOT_TEST_WEBHOOK_SECRET": SECRET}
            mark = self.log.stat().st_size if self.log.exists() else 0
            self.process = subprocess.Popen([sys.executable, "-m", "crisisbot", "-c", str(self.ws.config_path), "run"],
                                            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env)
            try:
                wait_until(self._listening, what="the daemon to listen", log=self.log)
                return self
            except AssertionError:
                if "port in use" not in self.log.read_bytes()[mark:].decode(errors="replace"):
                    raise
            self._new_ports()  # another process on this shared machine took a port meanwhile
        raise AssertionError("no free port for the daemon after 3 tries")

    def _new_ports(self) -> None:
        self.webhook = free_port()
        self.web = free_port() if self.web is not None else None

        def change(data: dict[str, Any]) -> None:
            data["triggers"]["hook"]["port"] = self.webhook
            if self.web is not None:
                data["web"]["port"] = self.web
        self.ws.edit_config(change)

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.webhook}/health", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def fire(self, **fields: Any) -> None:
        body = json.dumps({"site": "paris-hq", "zone": "accueil", "label": "Panique", **fields}).encode()
        response = httpx.post(f"http://127.0.0.1:{self.webhook}/alarms", content=body,
                              headers=signed_headers(body), timeout=10)
        assert response.status_code == 202, response.text

    def health(self) -> dict[str, Any]:
        assert self.web is not None
        return httpx.get(f"http://127.0.0.1:{self.web}/health", timeout=5).json()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise AssertionError(f"SIGTERM did not stop the daemon:\n{self.log.read_text()[-3000:]}")
        return self.process.returncode

