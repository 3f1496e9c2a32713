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
     "playbooks/test.yaml:3:11: priority: Input should be a valid integer"),
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
    # unknown enum value
    (lambda p: p.replace("kinds: [panic]", "kinds: [panik]"),
     "playbooks/test.yaml:4:11: match.kinds[0]: Input should be 'panic', 'intrusion'"),
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
    assert any(e.startswith("contacts/more.yaml:4:12: people.zoe.email: String should match pattern") for e in errors)


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
    assert any("connectors.relay.port: Input should be a valid integer" in e for e in errors)
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
