"""Web console behind login: HTTP-level checks, then a real headless Chromium session."""

from __future__ import annotations

import shutil

import httpx
import pytest

from crisisbot.web.passwords import hash_password
from daemon_helpers import fire_manual, running_daemon

PASSWORD = "correct horse battery staple"


def enable_console(ws, **web) -> None:
    """`isolation="inline"` for a test that looks inside the running console."""
    ws.write("secrets/operator.hash", hash_password(PASSWORD) + "\n")
    ws.write("secrets/viewer.hash", hash_password(PASSWORD) + "\n")

    def change(data):
        data["web"] = {"enabled": True, "host": "127.0.0.1", "port": 0, "users": {
            "operator": {"password_hash": "${file:secrets/operator.hash}", "person": "alice"},
            "viewer": {"password_hash": "${file:secrets/viewer.hash}", "role": "viewer"},
        }, **web}
    ws.edit_config(change)


async def open_incident(daemon):
    return await fire_manual(daemon, label="Console test")


async def login(client: httpx.AsyncClient, user: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/console/login", data={"username": user, "password": password})


async def test_everything_is_behind_login(workspace):
    enable_console(workspace)
    async with running_daemon(workspace) as daemon:
        incident = await open_incident(daemon)
        base = f"http://127.0.0.1:{daemon.web.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            page = await client.get("/console")
            api = await client.get("/api/incidents")
            detail = await client.get(f"/console/incidents/{incident.id}")
            forged = await client.post(f"/console/incidents/{incident.id}/stand-down",
                                       data={"outcome": "resolved", "reason": "x"},
                                       cookies={"crisisbot_session": "forged.token"})
    assert page.status_code == 303 and page.headers["location"] == "/console/login"
    assert api.status_code == 401 and detail.status_code == 303 and forged.status_code == 303
    assert page.headers["x-frame-options"] == "DENY"


async def test_wrong_password_lockout_and_audit(workspace):
    enable_console(workspace, isolation="inline")
    async with running_daemon(workspace) as daemon:
        base = f"http://127.0.0.1:{daemon.web.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            codes = [(await login(client, "operator", "guess")).status_code for _ in range(5)]
            locked = await login(client, "operator")  # right password, but locked out from this address
            await daemon.web.refusals.audit.flush()  # the minute's counts, written now
        audit = [e for e in await daemon.runtime.store.audit_entries() if e.kind.startswith("console.")]
    assert codes == [401] * 5
    assert locked.status_code == 429 and "Too many failed attempts" in locked.text
    assert int(locked.headers["retry-after"]) >= 1
    failed = [e.data for e in audit if e.kind == "console.login_failed"]
    assert sum(e["count"] for e in failed) == 5 and len(failed) == 2  # the first at once, then the count
    assert failed[0]["client"] == "127.0.0.1" and failed[0]["samples"] == ["operator"]
    assert [e.data["count"] for e in audit if e.kind == "console.login_refused"] == [1]
    assert all(PASSWORD not in str(e.data) for e in audit)


async def test_operator_api_viewer_limits_and_cross_origin(workspace):
    enable_console(workspace)
    async with running_daemon(workspace) as daemon:
        incident = await open_incident(daemon)
        base = f"http://127.0.0.1:{daemon.web.port}"
        async with httpx.AsyncClient(base_url=base) as viewer:
            assert (await login(viewer, "viewer")).status_code == 303
            listing = (await viewer.get("/api/incidents")).json()
            detail = (await viewer.get(f"/api/incidents/{incident.id}")).json()
            refused = await viewer.post(f"/console/incidents/{incident.id}/stand-down",
                                        data={"outcome": "resolved", "reason": "x"})
        async with httpx.AsyncClient(base_url=base) as operator:
            assert (await login(operator, "operator")).status_code == 303
            cross = await operator.post(f"/console/incidents/{incident.id}/stand-down",
                                        data={"outcome": "resolved", "reason": "x"},
                                        headers={"Origin": "https://evil.example"})
            cross_site = await operator.post(f"/console/incidents/{incident.id}/stand-down",
                                             data={"outcome": "resolved", "reason": "x"},
                                             headers={"Sec-Fetch-Site": "cross-site"})
    assert listing[0]["id"] == incident.id and listing[0]["status"] == "open" and listing[0]["outcome"] == "done"
    assert {d["address"] for d in detail["deliveries"]} >= {"alice.martin@exemple.fr"}
    assert any(e["kind"] == "meeting.opened" for e in detail["timeline"])
    assert refused.status_code == 403 and cross.status_code == 403 and cross_site.status_code == 403


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed (tests/browser_setup.py installs it)")
async def test_operator_logs_in_acknowledges_and_stands_down_in_a_real_browser(workspace, tmp_path):
    from playwright.async_api import async_playwright

    enable_console(workspace)
    async with running_daemon(workspace) as daemon:
        incident = await open_incident(daemon)
        base = f"http://127.0.0.1:{daemon.web.port}"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium_path(), args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = await browser.new_page()
            await page.goto(f"{base}/console")
            assert page.url.endswith("/console/login")
            await page.fill("input[name=username]", "operator")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/console")
            await page.click("text=Console test")
            assert "meet.jit.si/crise-" in await page.inner_text("#join")
            await page.click("#ack")
            await page.wait_for_selector("text=Acknowledged.")
            assert "ack" in (await page.inner_text("#timeline"))
            await page.fill("input[name=reason]", "Fausse manipulation")
            await page.select_option("select[name=outcome]", "false_alarm")
            await page.click("#stand-down")
            await page.wait_for_selector("text=The alert is over.")
            assert await page.inner_text("#status") == "false_alarm"
            await page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
            await browser.close()
        final = await daemon.runtime.store.get_incident(incident.id)
    assert final.status.value == "false_alarm"
