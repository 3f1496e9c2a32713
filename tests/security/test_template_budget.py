"""A hostile or broken template costs at most its time budget and its output cap: it
renders off the event loop, the inputs keep answering, and the committee still gets the
built-in message, with the reason in the audit log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from console_helpers import console_daemon, enable_console
from crisisbot.models import Alarm
from crisisbot.render_limits import TemplateLimit, TemplateTimeout
from crisisbot.rendering import TemplateSet
from daemon_helpers import SECRET, enable_webhook

COMMITTEE = {"alice.martin@exemple.fr", "chloe.dubois@exemple.fr", "david.smith@exemple.fr", "bruno.leroy@exemple.fr"}
SLOW = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
# only with the real alarm's data (validation renders a sample alarm without these details)
SLOW_ON_DATA = ("{% for i in range(alarm.details.get('n', 0)) %}{% for j in range(alarm.details.get('n', 0)) %}"
                "{% endfor %}{% endfor %}")
HUGE_ON_DATA = "{{ 'x' * alarm.details.get('n', 0) }}"


def poison(ws, source: str) -> None:
    for lang in ("fr", "en"):
        (ws.root / "templates" / "committee_alert" / lang / "body.txt").write_text(source + "\n")


@pytest.mark.parametrize("source", [
    "{{ 'x' * 10**9 }}", "{{ [0] * 10**8 }}", "{{ 'x' | center(10**9) }}", "{{ 'x'.ljust(10**9) }}",
    "{{ '%1000000000d' % 1 }}", "{{ '{:>1000000000}'.format(1) }}", "{{ '%1000000000d' | format(1) }}",
    "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "{{ 7 ** 100000 }}",
])
def test_output_is_capped_before_it_is_built(source):
    with pytest.raises(TemplateLimit):
        TemplateSet(Path("/nonexistent")).render_string(source, {})


def test_a_runaway_loop_is_stopped_at_its_budget():
    with pytest.raises(TemplateTimeout):
        TemplateSet(Path("/nonexistent")).render_string(SLOW, {})


def test_ordinary_templates_are_untouched():
    text = "{{ name | upper }} {{ 'ab' * 3 }} {{ [1] + [2] }} {{ 2 ** 10 }} {{ '%05d' % 7 }} Ticket 1234567 {{ '{}'.format(1) }}"
    assert TemplateSet(Path("/nonexistent")).render_string(text, {"name": "alice"}) == \
        "ALICE ababab [1, 2] 1024 00007 Ticket 1234567 1"


async def test_a_template_looping_for_ever_neither_freezes_the_inputs_nor_silences_the_alarm(workspace, smtp_server,
                                                                                             monkeypatch):
    poison(workspace, SLOW_ON_DATA)
    workspace.use_smtp(smtp_server.port)
    enable_console(workspace)
    enable_webhook(workspace)
    monkeypatch.setenv("CRISISBOT_TEST_WEBHOOK_SECRET", SECRET)
    async with console_daemon(workspace) as daemon:
        pool = daemon.runtime.executors.rendering
        alarm = Alarm(source="manual", site="paris-hq", zone="accueil", label="Bouton panique accueil",
                      details={"n": 10_000})
        await daemon.engine.submit(alarm)
        while pool.in_flight == 0 and pool.completed == 0:
            await asyncio.sleep(0.005)
        async with httpx.AsyncClient() as http:  # an input: never held back during a dispatch
            health = await http.get(f"http://127.0.0.1:{daemon.runtime.triggers['hook'].port}/health")
            rendering_meanwhile = pool.in_flight
        incident = await daemon.engine.wait_processed(alarm.id)
        await daemon.engine.wait_incident(incident.id)
        audit = await daemon.runtime.store.audit_entries(incident.id)
    assert health.status_code == 200 and rendering_meanwhile >= 1  # answered while the template ran
    assert {r for m in smtp_server.handler.messages for r in m.rcpt} == COMMITTEE
    text = smtp_server.handler.to("alice.martin@exemple.fr")[0].message.get_body(("plain",)).get_content()
    assert "Message de secours" in text and "Bouton panique accueil" in text
    errors = [e.data["error"] for e in audit if e.kind == "template.fallback"]
    assert errors and all("budget" in e for e in errors)
    assert len(errors) <= 2  # once per language: the other messages did not wait out the budget again


async def test_a_gigabyte_template_sends_the_fallback_message(workspace, smtp_server):
    poison(workspace, HUGE_ON_DATA)
    workspace.use_smtp(smtp_server.port)
    enable_console(workspace)
    async with console_daemon(workspace) as daemon:
        alarm = Alarm(source="manual", site="paris-hq", zone="accueil", label="Bouton panique accueil",
                      details={"n": 10**9})
        await daemon.engine.submit(alarm)
        incident = await daemon.engine.wait_processed(alarm.id)
        await daemon.engine.wait_incident(incident.id)
        audit = await daemon.runtime.store.audit_entries(incident.id)
    assert {r for m in smtp_server.handler.messages for r in m.rcpt} == COMMITTEE
    assert all(len(m.message.get_body(("plain",)).get_content()) < 10_000 for m in smtp_server.handler.messages)
    errors = [e.data["error"] for e in audit if e.kind == "template.fallback"]
    assert errors and "1,000,000,000 items" in errors[0]


def test_validate_reports_a_runaway_template_instead_of_hanging(workspace, capsys):
    from crisisbot.cli import main

    poison(workspace, SLOW)
    assert main(["-c", str(workspace.config_path), "validate"]) == 1
    assert "budget" in capsys.readouterr().err
