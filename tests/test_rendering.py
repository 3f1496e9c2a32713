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
