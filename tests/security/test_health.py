"""GET /health tells everyone up/degraded/down, and the details only to the health token."""

from __future__ import annotations

import httpx

from console_helpers import HEALTH_TOKEN, console_daemon, enable_console
from crisisbot.health import Check
from daemon_helpers import fire_manual


async def test_unauthenticated_health_has_no_details(workspace):
    enable_console(workspace, health_token=HEALTH_TOKEN)
    async with console_daemon(workspace) as daemon:
        await fire_manual(daemon, label="Intrusion quai")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.web.port}") as http:
            anonymous = await http.get("/health")
            wrong = await http.get("/health", headers={"Authorization": "Bearer guess"})
            non_ascii = await http.get("/health", headers={"Authorization": "Bearer é".encode()})
            monitoring = await http.get("/health", headers={"Authorization": f"Bearer {HEALTH_TOKEN}"})
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "up"}
    assert wrong.json() == {"status": "up"} and non_ascii.json() == {"status": "up"}
    assert "last_alarm_at" not in anonymous.text and anonymous.headers["cache-control"] == "no-store"
    checks = monitoring.json()["checks"]
    assert monitoring.json()["status"] == "up" and checks["supervision"]["last_alarm_at"]
    assert checks["pools"]["pools"]["hashing"]["workers"] == 2


async def test_without_a_token_configured_nobody_gets_details(workspace):
    enable_console(workspace)
    async with console_daemon(workspace) as daemon:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.web.port}") as http:
            answer = await http.get("/health", headers={"Authorization": "Bearer x"})
    assert answer.json() == {"status": "up"}


async def test_a_named_check_turns_the_verdict_degraded_or_down(workspace):
    enable_console(workspace, health_token=HEALTH_TOKEN, isolation="inline")
    async with console_daemon(workspace) as daemon:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.web.port}") as http:
            async def waiting() -> Check:
                return Check("degraded", {"messages_waiting": 3})

            async def broken() -> Check:
                raise OSError("disk gone")

            daemon.runtime.health.add("delivery", waiting)
            degraded = await http.get("/health")
            daemon.runtime.health.add("inputs", broken)
            down = await http.get("/health", headers={"Authorization": f"Bearer {HEALTH_TOKEN}"})
    assert degraded.status_code == 503 and degraded.json() == {"status": "degraded"}
    assert down.status_code == 503 and down.json()["status"] == "down"
    assert down.json()["checks"]["delivery"] == {"status": "degraded", "messages_waiting": 3}
    assert down.json()["checks"]["inputs"] == {"status": "down", "error": "OSError: disk gone"}
