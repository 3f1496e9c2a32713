"""A daemon with the console on, and HTTP clients coming from chosen loopback addresses
(127.0.0.0/8 is all loopback on Linux: each address is a different client to the daemon)."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from typing import Any, AsyncIterator

import httpx

from daemon_helpers import web_serving
from crisisbot.config.bundle import load_bundle
from crisisbot.daemon import Daemon
from crisisbot.clock import ManualClock
from crisisbot.web.passwords import hash_password

PASSWORD = "correct horse battery staple"
HEALTH_TOKEN = "health-token-0123456789abcdef"


def enable_console(ws: Any, **web: Any) -> None:
    hashed = hash_password(PASSWORD)
    for name in ("operator", "viewer", "admin"):
        ws.write(f"secrets/{name}.hash", hashed + "\n")

    def change(data: dict[str, Any]) -> None:
        data["web"] = {"enabled": True, "host": "127.0.0.1", "port": 0, "users": {
            "operator": {"password_hash": "${file:secrets/operator.hash}", "person": "alice"},
            "viewer": {"password_hash": "${file:secrets/viewer.hash}", "role": "viewer"},
            "admin": {"password_hash": "${file:secrets/admin.hash}", "role": "admin"},
        }, **web}
    ws.edit_config(change)


@contextlib.asynccontextmanager
async def console_daemon(ws: Any, clock: ManualClock | None = None) -> AsyncIterator[Daemon]:
    daemon = Daemon(ws.config_path, load_bundle(ws.config_path), clock=clock)
    await daemon.start()
    await web_serving(daemon)
    try:
        yield daemon
    finally:
        await daemon.stop()


def manual_clock() -> ManualClock:
    return ManualClock(datetime.now(timezone.utc).replace(microsecond=0))


def client(daemon: Daemon, address: str = "127.0.0.1", **kw: Any) -> httpx.AsyncClient:
    """An HTTP client whose connections leave from `address`; a loaded CI machine may take
    seconds to answer a burst of scrypt logins, which is not what these tests judge."""
    kw.setdefault("timeout", 60.0)
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.web.port}",
                             transport=httpx.AsyncHTTPTransport(local_address=address), **kw)


async def login(http: httpx.AsyncClient, user: str, password: str = PASSWORD) -> httpx.Response:
    return await http.post("/console/login", data={"username": user, "password": password})
