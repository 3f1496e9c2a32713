"""The daemon with a Teams meeting step and Graph mail, against the local Graph server:
the join link reaches the committee; an outage falls back to Jitsi and to SMTP."""

from __future__ import annotations

import re

from crisisbot.timeline import timeline_lines
from daemon_helpers import fire_manual, running_daemon
from graph_server import GraphServer


def teams_playbook(ws, attendees: bool = True) -> None:
    text = (ws.root / "playbooks" / "panic.yaml").read_text()
    extra = "\n    attendees: [comite-crise]" if attendees else ""
    ws.write("playbooks/panic.yaml", text.replace("    connector: jitsi", f"    connector: teams\n    fallback: [jitsi]{extra}"))


async def test_teams_meeting_link_reaches_the_committee(workspace, smtp_server):
    async with GraphServer() as graph:
        workspace.use_smtp(smtp_server.port)
        workspace.edit_config(lambda d: d["connectors"].update(
            {"teams": graph.connector_config("teams", mode="online-meeting")}))
        teams_playbook(workspace)
        async with running_daemon(workspace) as daemon:
            incident = await fire_manual(daemon)
            steps = await daemon.runtime.store.get_steps(incident.id)
        creates = graph.graph_requests("POST", "createOrGet")
    assert steps["meeting"].status == "done"
    assert len(creates) == 1 and creates[0].body["externalId"] == incident.id
    assert creates[0].body["subject"].startswith("CRISE — Bouton panique accueil")
    (meeting,) = graph.meetings.values()
    link = meeting["joinWebUrl"]
    text = smtp_server.handler.to("alice.martin@exemple.fr")[0].message.get_body(("plain",)).get_content()
    assert link in text.replace("=\n", "")


async def test_lobby_patch_refused_keeps_the_teams_link_and_the_timeline_says_so(workspace, smtp_server):
    async with GraphServer() as graph:
        workspace.use_smtp(smtp_server.port)
        workspace.edit_config(lambda d: d["connectors"].update(
            {"teams": graph.connector_config("teams", mode="online-meeting")}))
        teams_playbook(workspace)
        graph.fail_next(403, code="Forbidden", message="Meeting options are locked by policy", path="onlineMeetings/MSp")
        async with running_daemon(workspace) as daemon:
            incident = await fire_manual(daemon)
            timeline = "\n".join(await timeline_lines(daemon.runtime.store, incident))
    (meeting,) = graph.meetings.values()  # no orphan: the one meeting is the one handed out
    text = smtp_server.handler.to("alice.martin@exemple.fr")[0].message.get_body(("plain",)).get_content()
    assert meeting["joinWebUrl"] in text.replace("=\n", "") and "meet.jit.si" not in text
    assert "meeting.opened" in timeline and "provider=teams" in timeline and "meeting.failed" not in timeline
    assert "meeting.degraded" in timeline and "lobby and presenters not set" in timeline and "HTTP 403" in timeline


async def test_teams_outage_falls_back_to_jitsi_and_both_attempts_are_recorded(workspace, smtp_server):
    async with GraphServer() as graph:
        workspace.use_smtp(smtp_server.port)
        workspace.edit_config(lambda d: d["connectors"].update(
            {"teams": graph.connector_config("teams", mode="online-meeting")}))
        teams_playbook(workspace)
        graph.fail_next(503, times=50)
        async with running_daemon(workspace) as daemon:
            incident = await fire_manual(daemon)
            timeline = "\n".join(await timeline_lines(daemon.runtime.store, incident))
    assert not graph.meetings
    text = smtp_server.handler.to("bruno.leroy@exemple.fr")[0].message.get_body(("plain",)).get_content()
    assert re.search(r"https://meet\.jit\.si/crise-[0-9a-f]{24}", text)
    assert "meeting.failed" in timeline and "provider=teams" in timeline
    assert "meeting.opened" in timeline and "provider=jitsi" in timeline and "fallback=True" in timeline


async def test_graph_mail_first_then_smtp_when_graph_refuses(workspace, smtp_server):
    async with GraphServer() as graph:
        workspace.use_smtp(smtp_server.port)

        def change(d):
            d["connectors"]["graph-mail"] = graph.connector_config("graph-mail")
            d["mail"]["via"] = ["graph-mail", "relay1"]
        workspace.edit_config(change)
        async with running_daemon(workspace) as daemon:
            first = await fire_manual(daemon)
            first_deliveries = await daemon.runtime.store.get_deliveries(first.id)
        assert {d.transport for d in first_deliveries.values()} == {"graph-mail"}
        assert len(graph.mails) == 4 and not smtp_server.handler.messages

        graph.fail_next(403, code="ErrorAccessDenied", message="Access is denied.", times=50)
        workspace.edit_config(lambda d: d["incidents"].update({"join_window": 0}))
        async with running_daemon(workspace) as daemon:
            second = await fire_manual(daemon)
            deliveries = await daemon.runtime.store.get_deliveries(second.id)
    assert {d.transport for d in deliveries.values()} == {"relay1"}
    assert len(smtp_server.handler.messages) == 4
