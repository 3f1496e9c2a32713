"""Helpers of the lifecycle tests: a recording SMTP server, a workspace copy, the
lifecycle routes served by uvicorn on loopback, and a daemon driven by a ManualClock."""

from __future__ import annotations

import contextlib
import email
import email.policy
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, AsyncIterator

from aiosmtpd.controller import Controller
from starlette.applications import Starlette

from crisisbot.config.bundle import load_bundle
from crisisbot.daemon import Daemon
from crisisbot.clock import ManualClock
from crisisbot.web.ack import ack_routes
from crisisbot.web.background import BackgroundServer

import conftest
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Recorder:
    """aiosmtpd handler keeping every accepted message; can refuse some recipients."""

    messages: list[tuple[str, EmailMessage]] = field(default_factory=list)
    reject: set[str] = field(default_factory=set)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address in self.reject:
            return "550 5.1.1 unknown user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        for rcpt in envelope.rcpt_tos:
            self.messages.append((rcpt, message))  # type: ignore[arg-type]
        return "250 accepted"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for a, m in self.messages if a == address]

    def subjects(self, address: str) -> list[str]:
        return [str(m["Subject"]) for m in self.to(address)]


@contextlib.contextmanager
def smtp_recorder(**kwargs: Any) -> Any:
    handler = Recorder(**kwargs)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def link(message: EmailMessage, kind: str) -> str:
    found = re.search(rf"http://127\.0\.0\.1:\d+/{kind}/[A-Za-z0-9_\-.]+", text_of(message))
    assert found, f"no {kind} link in:\n{text_of(message)}"
    return found.group(0)


class Workspace(conftest.Workspace):
    """The shipped configuration plus a port for the lifecycle routes."""

    def __init__(self, root: Path) -> None:
        if not (root / "config.yaml").exists():
            conftest.Workspace.shipped(root)
        super().__init__(root)
        self.web_port = free_port()

    def setup(self, smtp_port: int, **lifecycle: Any) -> None:
        def change(data: dict[str, Any]) -> None:
            data["triggers"].clear()
            data["connectors"]["relay"] = {"type": "smtp", "host": "127.0.0.1", "port": smtp_port,
                                           "security": "none", "timeout": "2s"}
            data["mail"].update(via=["relay"], backoff="20ms", retries=0)
            # links point at the routes this helper serves itself (see lifecycle_daemon)
            data["web"] = {"enabled": False, "public_url": f"http://127.0.0.1:{self.web_port}",
                           "health_token": HEALTH_TOKEN}
            data["lifecycle"] = {"timer_poll": "50ms", **lifecycle}
        self.edit_config(change)


HEALTH_TOKEN = "lifecycle-health-token"  # GET /health details need it


@contextlib.asynccontextmanager
async def lifecycle_daemon(ws: Workspace, clock: ManualClock) -> AsyncIterator[Daemon]:
    """The real daemon plus the lifecycle routes served by uvicorn on web.port."""
    daemon = Daemon(ws.config_path, load_bundle(ws.config_path), clock=clock)
    await daemon.start()
    assert daemon.runtime is not None
    server = BackgroundServer(Starlette(routes=ack_routes(daemon.runtime, daemon.commands)), "127.0.0.1", ws.web_port, "lifecycle routes")
    await server.start()
    try:
        yield daemon
    finally:
        await server.stop()
        await daemon.stop()


def start_clock() -> ManualClock:
    return ManualClock(datetime.now().astimezone())
