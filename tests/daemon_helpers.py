"""Start the real daemon in-process on a workspace, and fire signed webhook alarms at it."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, AsyncIterator

import httpx

from crisisbot.config.bundle import load_bundle
from crisisbot.daemon import Daemon
from triggers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

SECRET = "test-webhook-secret-0123456789"


def enable_webhook(ws: Any, **extra: Any) -> None:
    def change(data: dict[str, Any]) -> None:
        data["triggers"]["hook"] = {"type": "webhook", "host": "127.0.0.1", "port": 0,
                                    "secret": "${CRISISBOT_TEST_WEBHOOK_SECRET}", **extra}
    ws.edit_config(change)


@contextlib.asynccontextmanager
async def running_daemon(ws: Any, monkeypatch: Any = None) -> AsyncIterator[Daemon]:
    if monkeypatch is not None:
        monkeypatch.setenv("CRISISBOT_TEST_WEBHOOK_SECRET", SECRET)
    daemon = Daemon(ws.config_path, load_bundle(ws.config_path))
    await daemon.start()
    await web_serving(daemon)
    try:
        yield daemon
    finally:
        await daemon.stop()


async def web_serving(daemon: Daemon) -> None:
    """The daemon is ready before its web process serves (crisisbot/web/process.py): the
    tests that go on to the console wait for it, as a user's browser would wait."""
    serving = getattr(daemon.web, "serving", None)
    if serving is not None:
        await serving(60)


def signed_headers(body: bytes, secret: str = SECRET, timestamp: float | None = None) -> dict[str, str]:
    stamp = str(int(timestamp if timestamp is not None else time.time()))
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(secret.encode(), stamp, body),
            "Content-Type": "application/json"}


async def post_alarm(daemon: Daemon, alarm: dict[str, Any], **kw: Any) -> httpx.Response:
    trigger = daemon.runtime.triggers["hook"]  # type: ignore[union-attr]
    body = json.dumps(alarm).encode()
    async with httpx.AsyncClient() as client:
        return await client.post(f"http://127.0.0.1:{trigger.port}/alarms", content=body,
                                 headers=signed_headers(body, **kw))


async def fire_manual(daemon: Daemon, **fields: Any):
    """Submit a manual alarm straight to the engine and wait for its playbook to finish."""
    from crisisbot.models import Alarm

    alarm = Alarm(**{"source": "manual", "site": "paris-hq", "zone": "accueil",
                     "label": "Bouton panique accueil", **fields})
    await daemon.engine.submit(alarm)  # type: ignore[union-attr]
    incident = await daemon.engine.wait_processed(alarm.id)  # type: ignore[union-attr]
    await daemon.engine.wait_incident(incident.id)  # type: ignore[union-attr]
    return incident
