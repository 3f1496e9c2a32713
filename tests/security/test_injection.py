"""Injection into what people read (issue 12): CR/LF, control and bidi characters in
alarm-derived strings or contact names never reach headers, bodies, .ics or reports raw."""

from __future__ import annotations

import email
import email.policy

from icalendar import Calendar

from crisisbot.cli import main
from crisisbot.mime import to_bytes
from crisisbot.models import OutgoingEmail, Recipient
from daemon_helpers import enable_webhook, post_alarm, running_daemon

PHISH = "Cliquez ici pour vous identifier : https://evil.example/login"
HOSTILE_LABEL = f"Porte accueil\r\n\r\n{PHISH}\r\u202egnp.exe\u0007"


def test_contact_name_with_line_break_or_bidi_is_refused(workspace, capsys):
    workspace.write("contacts/more.yaml",
                    'people:\n  mallory:\n    name: "Mallory\\r\\nBcc: all@evil.example"\n    email: m@exemple.fr\n'
                    '  eve2:\n    name: "Eve \\u202Egnp.exe"\n    email: e2@exemple.fr\n')
    code = main(["-c", str(workspace.config_path), "validate"])
    err = capsys.readouterr().err
    assert code == 1
    assert "contacts/more.yaml:3:11: people.mallory.name: contains a line break (U+000D); write it on one line, as people should read it" in err
    assert "contacts/more.yaml:6:11: people.eve2.name: contains a text-direction control (U+202E)" in err


def test_mime_headers_cannot_be_smuggled_by_a_name_or_subject():
    person = Recipient("m", "Mallory\r\nBcc: all@evil.example", "m@exemple.fr", "fr", (), False)
    message = OutgoingEmail(key="k", recipient=person, subject=f"[CRISE] {HOSTILE_LABEL}", text="x", html="",
                            attachments=[], message_id="<k@crisisbot>", headers={})
    parsed = email.message_from_bytes(to_bytes(message, "crisisbot <c@exemple.fr>"), policy=email.policy.default)
    assert parsed["Bcc"] is None and list(parsed.keys()).count("To") == 1
    assert parsed["To"].addresses[0].addr_spec == "m@exemple.fr"
    subject = str(parsed["Subject"])
    assert "\u202e" not in subject and "\r" not in subject and "\n" not in subject and "\x07" not in subject
    assert PHISH in subject  # kept, but on the label's line: readable, not a line of its own


async def test_hostile_label_reaches_no_output_raw(workspace, smtp_server, monkeypatch):
    from crisisbot.lifecycle.report import build, render
    from crisisbot.models import utcnow

    workspace.use_smtp(smtp_server.port)
    enable_webhook(workspace)
    async with running_daemon(workspace, monkeypatch) as daemon:
        response = await post_alarm(daemon, {"site": "paris-hq", "zone": "accueil", "kind": "panic",
                                             "severity": "critical", "label": HOSTILE_LABEL,
                                             "details": {"note": "a\r\nb\u202e"}})
        assert response.status_code == 202, response.text
        incident = await daemon.engine.wait_processed(response.json()["alarm_id"])
        await daemon.engine.wait_incident(incident.id)
        stored = await daemon.runtime.store.incident_alarms(incident.id)
        report = render(await build(daemon.runtime, incident.id, utcnow()), "md").decode()

    assert "\r" not in stored[0].label and "\u202e" not in stored[0].label
    assert stored[0].details["note"] == "a b"
    assert smtp_server.handler.messages
    for received in smtp_server.handler.messages:
        message = received.message
        subject = str(message["Subject"])
        assert "\u202e" not in subject and "\x07" not in subject
        for part in ("plain", "html"):
            body = message.get_body((part,)).get_content()
            assert "\u202e" not in body and "\x07" not in body
            lines = [line for line in body.splitlines() if "evil.example" in line]
            assert lines and all("Porte accueil" in line for line in lines), lines
        ics = next(p for p in message.iter_attachments() if p.get_filename() == "invite.ics")
        raw = ics.get_content()
        calendar = Calendar.from_ical(raw if isinstance(raw, (bytes, str)) else bytes(raw))
        (event,) = calendar.walk("VEVENT")
        summary = str(event["SUMMARY"])
        assert "Porte accueil" in summary and not any(c in summary for c in "\r\n\u202e\x07")
    injected = [line for line in report.splitlines() if "evil.example" in line]
    assert injected and all("Porte accueil" in line for line in injected), injected
    assert "\u202e" not in report
