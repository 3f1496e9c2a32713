"""`crisisbot validate`: every problem as `file:line:column: field.path: message`, exit 1."""

from __future__ import annotations

import pytest

from crisisbot.cli import main


def run_validate(ws, capsys) -> tuple[int, list[str], str]:
    code = main(["-c", str(ws.config_path), "validate"])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line], captured.out


def test_shipped_configuration_is_valid(workspace, capsys):
    code, errors, out = run_validate(workspace, capsys)
    assert code == 0 and errors == []
    assert out.startswith("OK: ") and "3 playbook(s), 6 people, 2 group(s)" in out


PLAYBOOK = """\
id: test
name: Test
match:
  kinds: [panic]
steps:
  - action: meeting
    connector: jitsi
  - action: email
    to: [comite-crise]
    template: committee_alert
"""


@pytest.mark.parametrize("edit, expected", [
    # unknown key (typo), with its exact position
    (lambda p: p.replace("    to: [comite-crise]", "    to: [comite-crise]\n    recipents: [x]"),
     "playbooks/test.yaml:10:5: steps[1].recipents: unknown key 'recipents'"),
    # wrong type
    (lambda p: p.replace("name: Test", "name: Test\npriority: high"),
     "playbooks/test.yaml:3:11: priority: expected a whole number"),
    # unknown contact group, with a suggestion
    (lambda p: p.replace("to: [comite-crise]", "to: [comite-crize]"),
     "playbooks/test.yaml:9:10: steps[1].to[0]: unknown contact group or person 'comite-crize'; did you mean 'comite-crise'?"),
    # unknown connector
    (lambda p: p.replace("connector: jitsi", "connector: teams"),
     "playbooks/test.yaml:7:16: steps[0].connector: unknown meeting connector 'teams'; known: jitsi"),
    # unknown template
    (lambda p: p.replace("template: committee_alert", "template: comittee"),
     "playbooks/test.yaml:10:15: steps[1].template: unknown template 'comittee'; did you mean 'committee_alert'?"),
    # unknown camera
    (lambda p: p + "  - action: snapshot\n    cameras: [roof]\n",
     "playbooks/test.yaml:12:15: steps[2].cameras[0]: unknown camera 'roof'; known: hall, parking"),
    # declared references nested in a step (escalation tiers), mail connectors, earlier steps
    (lambda p: p + "  - action: escalate\n    tiers:\n      - to: [comite-crise]\n        template: comittee\n",
     "playbooks/test.yaml:14:19: steps[2].tiers[0].template: unknown template 'comittee'; did you mean 'committee_alert'?"),
    (lambda p: p.replace("template: committee_alert", "template: committee_alert\n    via: [outbx]"),
     "playbooks/test.yaml:11:11: steps[1].via[0]: unknown mail connector 'outbx'; did you mean 'outbox'?"),
    (lambda p: p.replace("template: committee_alert", "template: committee_alert\n    attach: [1-meeting, photos]"),
     "playbooks/test.yaml:11:25: steps[1].attach[1]: unknown earlier snapshot step 'photos'"),
    # unknown enum value
    (lambda p: p.replace("kinds: [panic]", "kinds: [panik]"),
     "playbooks/test.yaml:4:11: match.kinds[0]: 'panik' is not one of panic, intrusion, fire, tamper, trouble, "
     "restore, test, input_fault, technical, other; did you mean 'panic'?"),
    # missing required field
    (lambda p: p.replace("    template: committee_alert\n", ""),
     "playbooks/test.yaml:8:5: steps[1].template: required field is missing"),
    # duplicate playbook id (the shipped one)
    (lambda p: p.replace("id: test", "id: panic"),
     "playbooks/test.yaml:1:5: id: duplicate playbook id 'panic' (already defined in playbooks/panic.yaml)"),
    # duplicate key inside one file
    (lambda p: p.replace("name: Test", "name: Test\nname: Again"),
     "playbooks/test.yaml:3:1: name: duplicate key"),
    # YAML syntax error
    (lambda p: p.replace("kinds: [panic]", "kinds: [panic"),
     "playbooks/test.yaml:5:6: YAML syntax error"),
    # bad duration
    (lambda p: p.replace("    connector: jitsi", "    connector: jitsi\n    timeout: soon"),
     "playbooks/test.yaml:8:14: steps[0].timeout: 'soon' is not a duration; use e.g. 200ms, 30s, 5m, 1h"),
])
def test_playbook_problem_is_located(workspace, capsys, edit, expected):
    workspace.write("playbooks/test.yaml", edit(PLAYBOOK))
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 1
    assert any(line.startswith(expected) for line in errors), errors
    assert errors[-1].endswith("problem(s) found; nothing was started.")


def test_duplicate_person_across_contact_files(workspace, capsys):
    workspace.write("contacts/more.yaml", "people:\n  alice:\n    name: Other Alice\n    email: a@exemple.fr\n")
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 1
    assert "contacts/more.yaml:2:3: people.alice: duplicate id 'alice' (already defined in contacts/committee.yaml)" in errors


def test_bad_email_is_located(workspace, capsys):
    workspace.write("contacts/more.yaml", "people:\n  zoe:\n    name: Zoé\n    email: not-an-address\n")
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 1
    assert "contacts/more.yaml:4:12: people.zoe.email: expected an email address such as name@example.org " \
        "(ASCII letters, digits and . _ - + before the @)" in errors


def test_unknown_group_member(workspace, capsys):
    workspace.write("contacts/more.yaml", "people:\n  zoe:\n    name: Zoé\n    email: zoe@exemple.fr\n"
                                          "groups:\n  astreinte:\n    name: Astreinte\n    members: [zoe, nobody]\n")
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 1
    assert any(e.startswith("contacts/more.yaml:8:20: groups.astreinte.members[1]: unknown person or group 'nobody'") for e in errors)


def test_jinja_syntax_error_is_located(workspace, capsys):
    workspace.write("templates/committee_alert/fr/body.txt", "Bonjour {{ recipient.name }\n")
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 1
    assert any(e.startswith("templates/committee_alert/fr/body.txt:1:1: template syntax error:") for e in errors), errors


def test_config_problems_unknown_plugin_type_missing_env_and_bad_timezone(workspace, capsys, monkeypatch):
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    workspace.write("config.yaml", workspace.config_path.read_text()
                    .replace("timezone: Europe/Paris", "timezone: Europe/Pariss")
                    .replace("  outbox:\n    type: outbox\n",
                             "  outbox:\n    type: outbox\n  relay:\n    type: smtp\n    host: mail\n"
                             "    password: ${SMTP_PASSWORD}\n  cloud:\n    type: carrier-pigeon\n"))
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 1
    text = "\n".join(errors)
    assert "config.yaml:" in text and "sites.paris-hq.timezone: unknown time zone 'Europe/Pariss'" in text
    assert "connectors.relay.password: environment variable SMTP_PASSWORD is not set" in text
    assert "connectors.cloud.type: unknown connector type 'carrier-pigeon'; known:" in text


def test_secret_values_never_appear_in_errors(workspace, capsys, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2-very-secret")
    workspace.write("config.yaml", workspace.config_path.read_text().replace(
        "  outbox:\n    type: outbox\n",
        "  outbox:\n    type: outbox\n  relay:\n    type: smtp\n    host: mail\n    port: ${SMTP_PASSWORD}\n"))
    code, errors, out = run_validate(workspace, capsys)
    assert code == 1
    assert any("connectors.relay.port: secret references (${…}) are only resolved in secret fields" in e for e in errors)
    assert any("connectors.relay.port: expected a whole number" in e for e in errors)
    assert "hunter2" not in "\n".join(errors) + out


def test_missing_config_file(tmp_path, capsys):
    code = main(["-c", str(tmp_path / "nope.yaml"), "validate"])
    assert code == 1
    assert "configuration file not found" in capsys.readouterr().err


def test_daemon_refuses_to_start_on_invalid_config(workspace, capsys):
    workspace.write("playbooks/test.yaml", PLAYBOOK.replace("template: committee_alert", "template: nope"))
    code = main(["-c", str(workspace.config_path), "run"])
    err = capsys.readouterr().err
    assert code == 1
    assert "playbooks/test.yaml:10:15: steps[1].template: unknown template 'nope'" in err
    assert "nothing was started" in err


# -- mistakes caught before any alarm fires (issue 15) ------------------------------
def _edit(ws, rel: str, old: str, new: str) -> None:
    path = ws.root / rel
    text = path.read_text()
    assert old in text, (rel, old)
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("rel, old, new, expected", [
    # unknown filter in a template file
    ("templates/committee_alert/fr/subject.txt", "{{ site_name }}", "{{ site_name | upperr }}",
     "templates/committee_alert/fr/subject.txt:1:1: template error: No filter named 'upperr'."),
    # unknown test
    ("templates/committee_alert/en/body.txt", "{% if drill %}", "{% if drill is drilll %}",
     "templates/committee_alert/en/body.txt:1:1: template fails with a sample 'panic' alarm (playbook 'any-critical'): "
     "No test named 'drilll' found."),
    # Jinja syntax error in a templated playbook field
    ("playbooks/panic.yaml", '"CRISE — {{ incident.title }}"', '"CRISE — {{ incident.title }"',
     "playbooks/panic.yaml:14:14: steps[0].subject: template error: unexpected '}'"),
    # unknown filter in a templated playbook field
    ("playbooks/panic.yaml", '"CRISE — {{ incident.title }}"', '"CRISE — {{ incident.title | upperr }}"',
     "playbooks/panic.yaml:14:14: steps[0].subject: template error: No filter named 'upperr'."),
    # undefined attribute in a templated field, with did-you-mean
    ("playbooks/panic.yaml", '"CRISE — {{ incident.title }}"', '"CRISE — {{ incident.titel }}"',
     "playbooks/panic.yaml:14:14: steps[0].subject: template fails with a sample 'panic' alarm: "
     "'incident' has no 'titel'; did you mean 'incident.title'?"),
    # undefined variable in a template, reported at its line, not rendered as empty
    ("templates/committee_alert/fr/body.txt", "Bonjour {{ recipient.name }}", "Bonjour {{ recipient_name }}",
     "templates/committee_alert/fr/body.txt:3:1: template fails with a sample 'panic' alarm (playbook 'any-critical'): "
     "unknown variable 'recipient_name'; did you mean 'recipient'?"),
    # credentials are not there to be read
    ("templates/committee_alert/en/body.txt", "Hello {{ recipient.name }}", "Hello {{ site.cameras.hall.password }}",
     "templates/committee_alert/en/body.txt:3:1: template fails with a sample 'panic' alarm (playbook 'any-critical'): "
     "'site' has no 'cameras'; it has: id, name, address, timezone, country, language, zones"),
    # a match naming a zone nothing defines would silently route fires to the catch-all
    ("playbooks/panic.yaml", "  min_severity: major\n", "  min_severity: major\n  zones: [acceuil]\n",
     "playbooks/panic.yaml:10:11: match.zones[0]: unknown zone 'acceuil'; did you mean 'accueil'?"),
    ("playbooks/panic.yaml", "  min_severity: major\n", "  min_severity: major\n  sites: [paris_hq]\n",
     "playbooks/panic.yaml:10:11: match.sites[0]: unknown site 'paris_hq'; did you mean 'paris-hq'?"),
    # messages a security manager can act on
    ("playbooks/panic.yaml", "    action: email", "    action: emial",
     "playbooks/panic.yaml:21:13: steps[2].action: unknown action 'emial'; did you mean 'email'?"),
    ("playbooks/panic.yaml", "    template: committee_alert", "    templat: committee_alert\n    template: committee_alert",
     "playbooks/panic.yaml:23:5: steps[2].templat: unknown key 'templat'; did you mean 'template'?"),
    ("playbooks/panic.yaml", "  min_severity: major", "  min_severity: majr",
     "playbooks/panic.yaml:9:17: match.min_severity: 'majr' is not one of info, minor, major, critical; did you mean 'major'?"),
    ("playbooks/panic.yaml", "  kinds: [panic]", "\tkinds: [panic]",
     "playbooks/panic.yaml:8:1: YAML syntax error: tab character: indent with spaces, not tabs"),
    ("playbooks/panic.yaml", "  min_severity: major", "   min_severity: major",
     "playbooks/panic.yaml:9:4: YAML syntax error: bad indentation"),
])
def test_mistake_is_refused_before_any_alarm(workspace, capsys, rel, old, new, expected):
    _edit(workspace, rel, old, new)
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 1
    assert any(line.startswith(expected) for line in errors), errors
    text = "\n".join(errors)
    assert "pydantic" not in text and "String should match pattern" not in text and "Input tag" not in text


def test_no_python_class_name_or_regex_in_messages(workspace, capsys):
    workspace.write("contacts/more.yaml", "people:\n  zoe:\n    name: Zoé\n    email: zoe@exemple\n    language: FR\n"
                                          "groups:\n  g:\n    name: G\n    members: zoe\n  h: [x]\n")
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 1
    text = "\n".join(errors)
    assert "contacts/more.yaml:5:15: people.zoe.language: expected a two-letter lowercase language code such as fr or en" in text
    assert "contacts/more.yaml:9:14: groups.g.members: expected a list (`- item` lines, or [a, b])" in text
    assert "contacts/more.yaml:10:6: groups.h: expected a mapping of keys (key: value lines)" in text
    assert "^" not in text and "instance of" not in text


def test_dynamic_zones_must_be_declared(workspace, capsys):
    _edit(workspace, "playbooks/panic.yaml", "  min_severity: major\n", "  min_severity: major\n  zones: [salle-3]\n")
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 1 and any("set `dynamic_zones: true`" in e for e in errors)
    workspace.edit_config(lambda d: d["sites"]["paris-hq"].update({"dynamic_zones": True}))
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 0, errors


def test_details_keys_are_not_known_in_advance(workspace, capsys):
    """`alarm.details` depends on the input: validation accepts any key; a failure at
    send time falls back to the built-in message (tests/test_rendering.py)."""
    _edit(workspace, "templates/committee_alert/fr/body.txt", "Bonjour {{ recipient.name }}",
          "Bonjour {{ recipient.name }} {{ alarm.details.site_code.upper() }}")
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 0, errors


@pytest.mark.parametrize("command", ["simulate", "trigger"])
@pytest.mark.parametrize("args, expected", [
    (["--site", "paris_hq"], "crisisbot: unknown site 'paris_hq'; did you mean 'paris-hq'?"),
    (["--site", "paris-hq", "--zone", "acceuil"], "crisisbot: unknown zone 'acceuil' at site 'paris-hq'; did you mean 'accueil'?"),
])
def test_trigger_and_simulate_refuse_unknown_places(workspace, capsys, command, args, expected):
    code = main(["-c", str(workspace.config_path), command, *args])
    assert code == 1
    assert expected in capsys.readouterr().err


def test_simulate_bad_time_is_a_clear_message(workspace, capsys):
    code = main(["-c", str(workspace.config_path), "simulate", "--site", "paris-hq", "--at", "demain 3h"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "crisisbot: --at 'demain 3h' is not a date and time; use e.g. 2026-03-03T14:30" in err
    assert main(["-c", str(workspace.config_path), "simulate", "--site", "paris-hq", "--at", "03:00", "--brief"]) == 0


async def test_reload_refuses_a_template_with_an_unknown_filter(workspace, caplog):
    from daemon_helpers import running_daemon

    async with running_daemon(workspace) as daemon:
        good = daemon.runtime.bundle
        _edit(workspace, "templates/committee_alert/fr/subject.txt", "{{ site_name }}", "{{ site_name | upperr }}")
        assert await daemon.reload() is False
        assert daemon.runtime.bundle is good
    assert "No filter named 'upperr'" in caplog.text


def test_match_inputs_of_static_sources_are_checked(workspace, capsys):
    workspace.edit_config(lambda d: d["triggers"].update({"plc": {"type": "modbus", "devices": {"plc1": {
        "host": "127.0.0.1", "site": "paris-hq", "inputs": [{"name": "btn-reception", "address": 0}]}}}}))
    _edit(workspace, "playbooks/panic.yaml", "  min_severity: major\n",
          "  min_severity: major\n  sources: [plc]\n  inputs: [plc1/btn-recepton]\n")
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 1
    assert any(e.startswith("playbooks/panic.yaml:11:12: match.inputs[0]: unknown input 'plc1/btn-recepton'; "
                            "did you mean 'plc1/btn-reception'?") for e in errors), errors
    _edit(workspace, "playbooks/panic.yaml", "plc1/btn-recepton", "plc1/btn-reception")
    assert run_validate(workspace, capsys)[0] == 0
    # manual alarms (and webhook, MQTT) name inputs at run time: not checked
    _edit(workspace, "playbooks/panic.yaml", "  sources: [plc]\n", "")
    _edit(workspace, "playbooks/panic.yaml", "plc1/btn-reception", "anything")
    assert run_validate(workspace, capsys)[0] == 0


def test_sites_named_deep_in_an_inputs_configuration_are_checked(workspace, capsys):
    """Input configurations declare their site fields (Reference("sites")): a Modbus device's
    or input's site, a webhook routing key's, a DC-09 account's; each typo is located."""
    workspace.edit_config(lambda d: d["triggers"].update({"plc": {"type": "modbus", "devices": {"plc1": {
        "host": "127.0.0.1", "site": "paris_hq", "inputs": [
            {"name": "btn", "address": 0}, {"name": "door", "address": 1, "site": "pariss-hq"}]}}}}))
    code, errors, _ = run_validate(workspace, capsys)
    assert code == 1
    assert any("triggers.plc.devices.plc1.site: unknown site 'paris_hq'; did you mean 'paris-hq'?" in e
               for e in errors), errors
    assert any("triggers.plc.devices.plc1.inputs[1].site: unknown site 'pariss-hq'; did you mean 'paris-hq'?" in e
               for e in errors), errors
