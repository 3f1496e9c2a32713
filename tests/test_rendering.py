"""Templates: sandboxed, HTML escaped, plain text untouched, language fallback."""

from __future__ import annotations

import io
import json
import logging

import pytest
from jinja2.exceptions import SecurityError

from crisisbot import logs
from crisisbot.rendering import TemplateSet


@pytest.fixture
def templates(tmp_path):
    base = tmp_path / "t" / "alert" / "fr"
    base.mkdir(parents=True)
    (base / "subject.txt").write_text("Alerte\n  {{ label }}\n")
    (base / "body.txt").write_text("Texte: {{ label }}\n")
    (base / "body.html").write_text("<p>{{ label }}</p>\n")
    return TemplateSet(tmp_path / "t")


def test_html_is_escaped_text_is_not_and_subject_is_one_line(templates):
    out = templates.render("alert", "fr", {"label": "<script>alert(1)</script> & co"})
    assert out.subject == "Alerte <script>alert(1)</script> & co"
    assert out.text == "Texte: <script>alert(1)</script> & co\n"
    assert out.html == "<p>&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</p>\n"


def test_sandbox_blocks_python_internals(templates):
    with pytest.raises(SecurityError):
        templates.render_string("{{ x.__class__.__mro__[1].__subclasses__() }}", {"x": 1})


def test_language_falls_back_to_what_exists(templates):
    assert templates.pick_language("alert", ["en", None, "fr"]) == "fr"


def test_json_logs_carry_the_incident_id():
    stream = io.StringIO()
    logs.setup("INFO", "json", stream)
    token = logs.current_incident.set("inc-42")
    try:
        logging.getLogger("crisisbot.test").info("sent %d", 3)
    finally:
        logs.current_incident.reset(token)
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["incident"] == "inc-42" and entry["message"] == "sent 3" and entry["level"] == "INFO"
    logging.getLogger().handlers.clear()


async def test_template_failing_on_real_data_still_reaches_the_committee(workspace, smtp_server, monkeypatch):
    """`{{ alarm.details.site_code.upper() }}` passes validation (details are the input's)
    but this panel sends no site_code: the committee still gets the built-in message with
    what, where, when and the join link, and the timeline and audit log say why."""
    import re

    from crisisbot.cli import main
    from crisisbot.timeline import timeline_lines
    from daemon_helpers import enable_webhook, post_alarm, running_daemon

    for lang in ("fr", "en"):
        body = workspace.root / "templates" / "committee_alert" / lang / "body.txt"
        body.write_text("Code site : {{ alarm.details.site_code.upper() }}\n" + body.read_text())
    assert main(["-c", str(workspace.config_path), "validate"]) == 0
    workspace.use_smtp(smtp_server.port)
    enable_webhook(workspace)
    async with running_daemon(workspace, monkeypatch) as daemon:
        response = await post_alarm(daemon, {"site": "paris-hq", "zone": "accueil", "kind": "panic",
                                             "severity": "critical", "label": "Bouton panique accueil"})
        assert response.status_code == 202, response.text
        incident = await daemon.engine.wait_processed(response.json()["alarm_id"])
        await daemon.engine.wait_incident(incident.id)
        store = daemon.runtime.store
        audit = await store.audit_entries(incident.id)
        timeline = "\n".join(await timeline_lines(store, await store.get_incident(incident.id)))

    received = smtp_server.handler.messages
    assert {r for m in received for r in m.rcpt} == {"alice.martin@exemple.fr", "chloe.dubois@exemple.fr",
                                                     "david.smith@exemple.fr", "bruno.leroy@exemple.fr"}
    alice = smtp_server.handler.to("alice.martin@exemple.fr")[0].message
    text = alice.get_body(("plain",)).get_content()
    assert str(alice["Subject"]).startswith("[CRISE] Bouton panique accueil — Siège Paris — ")
    assert "Alarme : Bouton panique accueil" in text and "Site : Siège Paris" in text and "Zone : Accueil" in text
    assert re.search(r"Heure : \d\d/\d\d/\d{4} \d\d:\d\d:\d\d CE", text)
    assert re.search(r"Réunion de crise : https://meet\.jit\.si/crise-[0-9a-f]{24}", text)
    david = smtp_server.handler.to("david.smith@exemple.fr")[0].message
    assert "Alarm: Bouton panique accueil" in david.get_body(("plain",)).get_content()
    fallbacks = [e for e in audit if e.kind == "template.fallback"]
    assert fallbacks and "templates/committee_alert/" in fallbacks[0].data["error"]
    assert "site_code" in fallbacks[0].data["error"]
    assert "template.fallback" in timeline


def test_templated_field_failing_on_real_data_gives_the_default(templates, caplog):
    out = templates.render_field("CRISE {{ alarm.details.code.upper() }}", {"alarm": {"details": {}}}, "meeting subject")
    assert out == "" and "meeting subject" in caplog.text
    assert templates.render_field("A\r\nB {{ x }}", {"x": "\u202eC"}, "card title") == "A B C"
