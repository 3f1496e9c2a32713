"""A scheduled drill runs its playbook with every message marked as an exercise and
produces a report with response times and failed deliveries."""

from __future__ import annotations

import asyncio

import httpx

from crisisbot.cli import main
from crisisbot.lifecycle.report import build, render
from lifecycle_helpers import Workspace, lifecycle_daemon, link, smtp_recorder, start_clock, text_of

DRILLS = {"minute": {"cron": "* * * * *", "site": "paris-hq", "zone": "accueil", "label": "Exercice bouton panique"}}


async def test_drill_emails_are_marked_and_report_has_response_times(tmp_path):
    ws = Workspace(tmp_path)
    clock = start_clock()
    with smtp_recorder(reject={"chloe.dubois@exemple.fr"}) as (smtp, port):
        ws.setup(port, drills=DRILLS)
        async with lifecycle_daemon(ws, clock) as daemon:
            store = daemon.runtime.store
            (scheduled,) = [t for t in await store.list_timers() if t.kind == "drill.run"]
            await clock.set(scheduled.due_at)
            await daemon.lifecycle.timers.fire_due()
            await daemon.engine.idle()
            (incident,) = await store.list_incidents()
            assert incident.drill
            async with httpx.AsyncClient() as http:
                await clock.advance(seconds=42)
                answer = await http.post(link(smtp.to("bruno.leroy@exemple.fr")[0], "ack"),
                                         data={"response": "on_it"}, headers={"Accept": "application/json"})
                assert answer.status_code == 200 and answer.json()["new"], answer.text
            report = await build(daemon.runtime, incident.id, clock.now())
            markdown = render(report, "md").decode()
            (following,) = [t for t in await store.list_timers() if t.kind == "drill.run"]

    assert following.due_at > scheduled.due_at  # the next run is scheduled once; this one never again
    assert {a for a, _ in smtp.messages} == {"alice.martin@exemple.fr", "bruno.leroy@exemple.fr",
                                              "david.smith@exemple.fr"}
    for address, message in smtp.messages:
        assert message["Subject"].startswith(("[EXERCICE]", "[DRILL]")), message["Subject"]
        assert "EXERCICE" in text_of(message) or "DRILL" in text_of(message)
        assert "ceci n'est pas une alerte" in message.get_body(("html",)).get_content().lower() or \
            "this is not a real alert" in message.get_body(("html",)).get_content().lower()
    (ack,) = report.acks
    assert ack["name"] == "Bruno Leroy" and ack["after_seconds"] > 0 and ack["after_alert_seconds"] is not None
    assert "[EXERCISE]" in markdown and "| Bruno Leroy |" in markdown
    assert "Failed deliveries: 1" in markdown and "chloe.dubois@exemple.fr" in markdown
    assert "Audit chain verified: **intact**" in markdown

    out = tmp_path / "report.html"
    argv = ["-c", str(ws.config_path), "report", incident.id[:10], "--format", "html", "--out", str(out)]
    assert await asyncio.to_thread(main, argv) == 0  # the CLI runs its own event loop
    html = out.read_text()
    assert "EXERCISE / EXERCICE" in html and "Bruno Leroy" in html and report.audit_head in html
