"""Personal links: live views end after stand-down (plus a grace), operators revoke a
leaked link from the CLI or the console, and a flood of forged tokens is throttled per
address and audited as a handful of counted entries."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re

import httpx

from console_helpers import client, console_daemon, enable_console, login, manual_clock
from crisisbot.cli import main
from crisisbot.commands import StandDown
from crisisbot.models import IncidentStatus
from daemon_helpers import fire_manual


def link_of(ws, person: str, kind: str = "live") -> str:
    (path,) = (ws.root / "var" / "outbox").glob(f"*_convocation_{person}.eml")
    text = email.message_from_bytes(path.read_bytes(), policy=email.policy.default).get_body(("plain",)).get_content()
    return re.search(rf"http://127\.0\.0\.1:\d+/{kind}/\S+", text).group(0)


async def started(ws, clock=None):
    """The daemon listens on a port chosen at start: links in emails must name it."""
    from conftest import free_port

    port = free_port()
    ws.edit_config(lambda d: d["web"].update(port=port, public_url=f"http://127.0.0.1:{port}"))
    return console_daemon(ws, clock)


async def test_live_links_stop_after_stand_down_and_its_grace(workspace):
    enable_console(workspace, liveview_grace="10m", isolation="inline")
    clock = manual_clock()
    async with await started(workspace, clock) as daemon:
        incident = await fire_manual(daemon)
        live = link_of(workspace, "alice")
        async with httpx.AsyncClient() as http:
            during = await http.get(live)
            await daemon.commands.dispatch(StandDown(incident_id=incident.id, outcome=IncidentStatus.resolved,
                                                     reason="Levée de doute", actor="alice", via="test"))
            await clock.advance(minutes=9)
            grace = await http.get(live)
            await clock.advance(minutes=2)
            after = await http.get(live)
    assert during.status_code == 200 and grace.status_code == 200
    assert after.status_code == 410 and "The incident is over" in after.text


async def test_operators_revoke_links_from_the_cli_and_the_console(workspace, capsys):
    enable_console(workspace)
    async with await started(workspace) as daemon:
        incident = await fire_manual(daemon)
        alice, chloe, david = (link_of(workspace, p) for p in ("alice", "chloe", "david"))
        alice_ack = link_of(workspace, "alice", "ack")
        base = ["-c", str(workspace.config_path), "links", "revoke"]
        assert await asyncio.to_thread(main, [*base, "--incident", incident.id, "--person", "alice"]) == 0
        assert await asyncio.to_thread(main, [*base, "--link", chloe, "--reason", "forwarded"]) == 0
        printed = capsys.readouterr().out
        async with client(daemon) as operator:
            assert (await login(operator, "operator")).status_code == 303
            form = await operator.post(f"/console/incidents/{incident.id}/links/revoke", data={"person": "david"})
        async with httpx.AsyncClient() as http:
            answers = {name: (await http.get(url)).status_code
                       for name, url in (("alice", alice), ("chloe", chloe), ("david", david))}
            ack = await http.get(alice_ack)
            bruno = await http.get(link_of(workspace, "bruno"))
        audit = [e.data for e in await daemon.runtime.store.audit_entries(incident.id) if e.kind == "links.revoked"]
    assert "every link of alice" in printed and "that link of chloe" in printed
    assert form.status_code == 303
    assert answers == {"alice": 403, "chloe": 403, "david": 403} and ack.status_code == 403
    assert bruno.status_code == 200  # nobody else's link
    assert [(a["person"], a["via"]) for a in audit] == [("alice", "cli"), ("chloe", "cli"), ("david", "console")]


async def test_a_forged_token_flood_is_throttled_and_audited_as_counts(workspace):
    enable_console(workspace, isolation="inline")
    async with await started(workspace) as daemon:
        incident = await fire_manual(daemon)
        store = daemon.runtime.store
        before = len(await store.audit_entries())
        async with client(daemon, "127.0.0.9", limits=None) as attacker:
            codes = []
            for batch in range(10):
                answers = await asyncio.gather(*(
                    attacker.get(f"/{'live' if i % 2 else 'ack'}/forged{batch}x{i}.bad") for i in range(100)))
                codes += [a.status_code for a in answers]
        async with httpx.AsyncClient() as http:
            legit = await http.get(link_of(workspace, "alice"))
        await daemon.web.refusals.audit.flush()
        added = (await store.audit_entries())[before:]
        incident_entries = [e.kind for e in added if e.incident_id == incident.id]
    refusals = [e for e in added if e.kind in ("link.refused", "liveview.refused", "link.throttled",
                                               "liveview.throttled")]
    assert codes.count(403) == 20 and codes.count(429) == 980
    assert legit.status_code == 200  # another address is not concerned
    assert len(refusals) <= 8 and sum(e.data["count"] for e in refusals) == 1000
    assert {e.data["client"] for e in refusals} == {"127.0.0.9"}
    assert len(added) - len(incident_entries) <= 8  # 1,000 refusals, a handful of audit entries
