"""Console sessions are server-side: logout, idle timeout and an admin end them at once;
the console API refuses bad query parameters with 400."""

from __future__ import annotations

import asyncio
import json
import stat

from console_helpers import client, console_daemon, enable_console, login, manual_clock
from crisisbot.cli import main


async def test_logout_ends_the_session_server_side(workspace):
    enable_console(workspace)
    async with console_daemon(workspace) as daemon:
        async with client(daemon) as http:
            assert (await login(http, "operator")).status_code == 303
            cookie = http.cookies["crisisbot_session"]
            assert (await http.get("/api/incidents")).status_code == 200
            assert (await http.post("/console/logout")).status_code == 303
        async with client(daemon, cookies={"crisisbot_session": cookie}) as replay:
            after = await replay.get("/api/incidents")
        kinds = [e.kind for e in await daemon.runtime.store.audit_entries()]
    assert after.status_code == 401  # the old cookie, replayed after logout
    assert kinds.count("console.login") == 1 and kinds.count("console.logout") == 1


async def test_an_idle_session_ends_and_a_used_one_lives_on(workspace):
    enable_console(workspace, session_idle="10m", isolation="inline")
    clock = manual_clock()
    async with console_daemon(workspace, clock) as daemon:
        async with client(daemon) as busy, client(daemon) as idle:
            assert (await login(busy, "operator")).status_code == 303
            assert (await login(idle, "viewer")).status_code == 303
            for _ in range(3):
                await clock.advance(minutes=6)
                assert (await busy.get("/api/incidents")).status_code == 200
            stale = await idle.get("/api/incidents")
    assert stale.status_code == 401


async def test_an_admin_lists_and_revokes_sessions_in_the_console(workspace):
    enable_console(workspace)
    async with console_daemon(workspace) as daemon:
        async with client(daemon) as admin, client(daemon, "127.0.0.5") as operator:
            assert (await login(admin, "admin")).status_code == 303
            assert (await login(operator, "operator")).status_code == 303
            listing = (await admin.get("/api/sessions")).json()
            page = await admin.get("/console/sessions")
            target = next(s for s in listing if s["user"] == "operator")
            not_admin = await operator.get("/api/sessions")
            revoked = await admin.post(f"/api/sessions/{target['id']}/revoke")
            after = await operator.get("/api/incidents")
            again = await admin.post(f"/api/sessions/{target['id']}/revoke")
        audit = [e.data for e in await daemon.runtime.store.audit_entries() if e.kind == "console.session_revoked"]
    assert {s["user"] for s in listing} == {"admin", "operator"} and target["client"] == "127.0.0.5"
    assert page.status_code == 200 and target["id"] in page.text
    assert not_admin.status_code == 403
    assert revoked.status_code == 200 and after.status_code == 401 and again.status_code == 404
    assert audit == [{"session": target["id"], "user": "operator", "by": "admin", "via": "api"}]


async def test_the_cli_lists_and_revokes_sessions_through_the_daemon(workspace, capsys):
    enable_console(workspace)
    argv = ["-c", str(workspace.config_path), "sessions"]
    async with console_daemon(workspace) as daemon:
        async with client(daemon) as http:
            assert (await login(http, "operator")).status_code == 303
            assert await asyncio.to_thread(main, argv) == 0  # the CLI runs its own event loop
            listed = capsys.readouterr().out
            assert await asyncio.to_thread(main, [*argv, "revoke", "--user", "operator"]) == 0
            revoked = capsys.readouterr().out
            after = await http.get("/api/incidents")
    assert "operator" in listed and "127.0.0.1" in listed
    assert "1 session(s) revoked" in revoked and after.status_code == 401


async def test_sessions_survive_a_restart_in_a_private_file_without_the_cookie(workspace):
    enable_console(workspace)
    async with console_daemon(workspace) as daemon:
        async with client(daemon) as http:
            assert (await login(http, "operator")).status_code == 303
            cookie = http.cookies["crisisbot_session"]
    path = workspace.root / "var" / "console-sessions.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and cookie not in path.read_text()
    assert [s["user"] for s in json.loads(path.read_text())] == ["operator"]
    async with console_daemon(workspace) as daemon:
        async with client(daemon, cookies={"crisisbot_session": cookie}) as http:
            assert (await http.get("/api/incidents")).status_code == 200


async def test_bad_query_parameters_get_400_with_a_message(workspace):
    enable_console(workspace)
    async with console_daemon(workspace) as daemon:
        async with client(daemon) as http:
            assert (await login(http, "viewer")).status_code == 303
            answers = {value: await http.get("/api/incidents", params={"limit": value})
                       for value in ("abc", "-1", "0", "10" * 20, "1e3", "")}
            good = await http.get("/api/incidents", params={"limit": "5"})
    assert {v: a.status_code for v, a in answers.items()} == dict.fromkeys(answers, 400)
    assert "limit must be a whole number" in answers["abc"].json()["message"]
    assert good.status_code == 200
