"""End to end: a signed webhook alarm becomes an incident, a meeting and committee emails
received by a real SMTP server."""

from __future__ import annotations

import asyncio
import re

from conftest import RecordingHandler, SmtpServer, free_port
from daemon_helpers import enable_webhook, post_alarm, running_daemon

COMMITTEE = {"alice.martin@exemple.fr", "chloe.dubois@exemple.fr", "david.smith@exemple.fr", "bruno.leroy@exemple.fr"}
PANIC = {"site": "paris-hq", "zone": "accueil", "kind": "panic", "severity": "critical", "label": "Bouton panique accueil"}


async def fire(daemon, alarm=PANIC):
    response = await post_alarm(daemon, alarm)
    assert response.status_code == 202, response.text
    incident = await daemon.engine.wait_processed(response.json()["alarm_id"])
    await daemon.engine.wait_incident(incident.id)
    return incident


async def test_committee_receives_link_both_parts_ics_and_snapshot(workspace, smtp_server, monkeypatch):
    workspace.use_smtp(smtp_server.port)
    enable_webhook(workspace)
    async with running_daemon(workspace, monkeypatch) as daemon:
        incident = await fire(daemon)
        deliveries = await daemon.runtime.store.get_deliveries(incident.id)

    received = smtp_server.handler.messages
    assert {r for m in received for r in m.rcpt} == COMMITTEE  # eve is disabled: skipped
    assert len(received) == len(COMMITTEE)  # one personal message each
    alice = smtp_server.handler.to("alice.martin@exemple.fr")[0].message
    assert alice["Subject"].startswith("[CRISE] Bouton panique accueil — Siège Paris")
    assert alice["From"] == "Cellule de crise <crisisbot@exemple.fr>"
    text = alice.get_body(("plain",)).get_content()
    html = alice.get_body(("html",)).get_content()
    link = re.search(r"https://meet\.jit\.si/crise-[0-9a-f]{24}", text).group(0)
    assert f'href="{link}"' in html
    assert "Bonjour Alice Martin" in text and "Siège Paris" in html
    attachments = {part.get_filename(): part for part in alice.iter_attachments()}
    ics = attachments.pop("invite.ics")
    assert ics.get_content_type() == "text/calendar"
    ics_text = ics.get_content() if isinstance(ics.get_content(), str) else ics.get_content().decode()
    assert "BEGIN:VEVENT" in ics_text and link in ics_text
    (jpeg,) = attachments.values()  # the zone 'accueil' has one camera
    assert jpeg.get_content_type() == "image/jpeg" and jpeg.get_content()[:2] == b"\xff\xd8"
    # David reads English
    david = smtp_server.handler.to("david.smith@exemple.fr")[0].message
    assert david["Subject"].startswith("[CRISIS]") and link in david.get_body(("plain",)).get_content()
    assert {d.status.value for d in deliveries.values()} == {"sent"}


async def test_rejected_recipient_is_recorded_and_others_still_receive(workspace, monkeypatch):
    handler = RecordingHandler(reject={"chloe.dubois@exemple.fr"})
    with SmtpServer(handler) as server:
        workspace.use_smtp(server.port)
        enable_webhook(workspace)
        async with running_daemon(workspace, monkeypatch) as daemon:
            incident = await fire(daemon)
            deliveries = await daemon.runtime.store.get_deliveries(incident.id)
            audit = await daemon.runtime.store.audit_entries(incident.id)
    by_address = {d.address: d for d in deliveries.values()}
    assert by_address["chloe.dubois@exemple.fr"].status.value == "rejected"
    assert "550" in by_address["chloe.dubois@exemple.fr"].detail
    assert {m.rcpt[0] for m in handler.messages} == COMMITTEE - {"chloe.dubois@exemple.fr"}
    assert any(e.kind == "delivery.rejected" and e.data["address"] == "chloe.dubois@exemple.fr" for e in audit)


async def test_dead_primary_relay_falls_back_to_second(workspace, smtp_server, monkeypatch):
    dead_port = free_port()  # nothing listens there
    workspace.use_smtp(dead_port, smtp_server.port)
    enable_webhook(workspace)
    async with running_daemon(workspace, monkeypatch) as daemon:
        incident = await fire(daemon)
        deliveries = await daemon.runtime.store.get_deliveries(incident.id)
        audit = await daemon.runtime.store.audit_entries(incident.id)
    assert {r for m in smtp_server.handler.messages for r in m.rcpt} == COMMITTEE
    assert {d.transport for d in deliveries.values()} == {"relay2"}
    assert all(d.attempts == 4 for d in deliveries.values())  # 3 tries on relay1, then relay2
    failed_first = [e for e in audit if e.kind == "delivery.pending"]  # an attempt failed, another follows
    assert failed_first and all("cannot reach 127.0.0.1" in e.data["detail"] for e in failed_first)


async def test_repeated_alarms_join_the_open_incident(workspace, smtp_server, monkeypatch):
    workspace.use_smtp(smtp_server.port)
    enable_webhook(workspace)
    async with running_daemon(workspace, monkeypatch) as daemon:
        first = await fire(daemon)
        response = await post_alarm(daemon, {**PANIC, "label": "second press"})
        second = await daemon.engine.wait_processed(response.json()["alarm_id"])
        alarms = await daemon.runtime.store.incident_alarms(first.id)
    assert second.id == first.id
    assert [a.label for a in alarms] == ["Bouton panique accueil", "second press"]
    assert len(smtp_server.handler.messages) == len(COMMITTEE)  # the committee was not spammed


async def test_meeting_failure_still_sends_link_less_message(workspace, smtp_server, monkeypatch):
    workspace.use_smtp(smtp_server.port)
    enable_webhook(workspace)
    # a meeting connector that cannot work: Jitsi base URL fine, but the step names a mailer
    workspace.write("playbooks/panic.yaml", (workspace.root / "playbooks/panic.yaml").read_text()
                    .replace("connector: jitsi", "connector: broken-meet"))
    workspace.edit_config(lambda d: d["connectors"].update({"broken-meet": {"type": "broken-meeting"}}))
    import crisisbot.plugins as plugins
    from tests_support_broken import BrokenMeeting

    real_load = plugins.load.__wrapped__

    def load(group, name):
        return BrokenMeeting if name == "broken-meeting" else real_load(group, name)

    plugins.load.cache_clear()
    monkeypatch.setattr(plugins, "load", load)
    async with running_daemon(workspace, monkeypatch) as daemon:
        incident = await fire(daemon)
        steps = await daemon.runtime.store.get_steps(incident.id)
    assert steps["meeting"].status == "failed" and "broken-meet" in steps["meeting"].detail
    alice = smtp_server.handler.to("alice.martin@exemple.fr")[0].message
    text = alice.get_body(("plain",)).get_content()
    assert "n'a pas pu être ouverte" in text and "meet.jit.si" not in text


async def test_hanging_primary_meeting_falls_back_within_deadline(workspace, smtp_server, monkeypatch):
    workspace.use_smtp(smtp_server.port)
    enable_webhook(workspace)
    workspace.write("playbooks/panic.yaml", (workspace.root / "playbooks/panic.yaml").read_text()
                    .replace("connector: jitsi", "connector: slow-meet\n    fallback: [jitsi]")
                    .replace("timeout: 10s", "timeout: 2s", 1))
    workspace.edit_config(lambda d: d["connectors"].update({"slow-meet": {"type": "hanging-meeting"}}))
    import crisisbot.plugins as plugins
    from tests_support_broken import HangingMeeting

    real_load = plugins.load.__wrapped__
    plugins.load.cache_clear()
    monkeypatch.setattr(plugins, "load", lambda g, n: HangingMeeting if n == "hanging-meeting" else real_load(g, n))
    async with running_daemon(workspace, monkeypatch) as daemon:
        incident = await fire(daemon)
        audit = await daemon.runtime.store.audit_entries(incident.id)
    kinds = [(e.kind, e.data.get("provider")) for e in audit if e.kind.startswith("meeting.")]
    assert kinds == [("meeting.failed", "slow-meet"), ("meeting.opened", "jitsi")]
    text = smtp_server.handler.to("alice.martin@exemple.fr")[0].message.get_body(("plain",)).get_content()
    assert "https://meet.jit.si/crise-" in text


async def test_committee_is_emailed_while_the_alarm_is_still_being_flushed_to_disk(workspace, smtp_server, monkeypatch):
    """The dispatch starts once the alarm is committed (safe from a crash of the daemon);
    the sender's acknowledgement still waits for the disk flush (safe from a power cut)."""
    import threading

    from crisisbot.models import Alarm
    from crisisbot.store import sqlite as sqlite_store

    flush = threading.Event()
    real = sqlite_store._datasync

    def held(fd: int) -> None:
        flush.wait(30)
        real(fd)

    workspace.use_smtp(smtp_server.port)
    async with running_daemon(workspace, monkeypatch) as daemon:
        monkeypatch.setattr(sqlite_store, "_datasync", held)
        alarm = Alarm(source="test", site="paris-hq", zone="accueil", label="Bouton panique accueil")
        submitted = asyncio.ensure_future(daemon.engine.submit(alarm))
        try:
            incident = await daemon.engine.wait_processed(alarm.id)
            await daemon.engine.wait_incident(incident.id)
            assert {r for m in smtp_server.handler.messages for r in m.rcpt} == COMMITTEE
            assert not submitted.done()  # not acknowledged yet: the flush is held
        finally:
            flush.set()
        assert await submitted == alarm.id
