"""Shared fixtures: a real SMTP server (aiosmtpd) that records what arrives, and a
throw-away copy of the shipped configuration that each test can tweak."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import socket
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer, Envelope, Session

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Received:
    envelope_from: str
    rcpt: list[str]
    message: EmailMessage


@dataclass
class RecordingHandler:
    """Records accepted messages; can refuse recipients or stall DATA like real servers do."""

    messages: list[Received] = field(default_factory=list)
    reject: set[str] = field(default_factory=set)
    data_delay: float = 0.0
    arrived: asyncio.Event | None = None

    async def handle_RCPT(self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        if address in self.reject:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
            transport = server.transport
            if transport is None or transport.is_closing():
                return "421 client went away"  # never delivered: the client did not see a 250
        parsed = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.rcpt]


class SmtpServer:
    def __init__(self, handler: RecordingHandler, **kwargs: Any):
        self.handler = handler
        self.controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **kwargs)

    @property
    def port(self) -> int:
        return self.controller.port

    def __enter__(self) -> "SmtpServer":
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server():
    with SmtpServer(RecordingHandler()) as server:
        yield server


@dataclass
class Workspace:
    """A copy of the shipped config.yaml, contacts, playbooks and templates in tmp_path."""

    root: Path

    @classmethod
    def shipped(cls, root: Path) -> "Workspace":
        for name in ("contacts", "playbooks", "templates"):
            shutil.copytree(ROOT / name, root / name)
        shutil.copy(ROOT / "config.yaml", root / "config.yaml")
        return cls(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    def config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_path.read_text())

    def edit_config(self, change: Callable[[dict[str, Any]], None]) -> None:
        data = self.config()
        change(data)
        self.config_path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def use_smtp(self, *ports: int, **extra: Any) -> None:
        """Send mail through local SMTP relays (first is primary, the others fallbacks)."""
        def change(data: dict[str, Any]) -> None:
            names = []
            for index, port in enumerate(ports):
                name = f"relay{index + 1}"
                data["connectors"][name] = {"type": "smtp", "host": "127.0.0.1", "port": port,
                                            "security": "none", "timeout": "2s", **extra}
                names.append(name)
            data["mail"]["via"] = names
            data["mail"]["backoff"] = "50ms"
        self.edit_config(change)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws = Workspace.shipped(tmp_path)
    ws.edit_config(lambda d: d["triggers"].clear())  # no demo button unless a test wants one
    return ws


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
               log: Path | None = None) -> Any:
    """Poll `predicate` until it returns something true (returned); on time-out, fail naming
    `what`, with the tail of the daemon's `log` when given."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := predicate():
            return value
        time.sleep(0.05)
    tail = f"\n--- daemon log ---\n{log.read_text()[-3000:]}" if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}{tail}")


def webhook_up(port: int) -> bool:
    """The daemon's webhook answers /health on `port`."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False
