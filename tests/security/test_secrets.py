"""Secrets stay in secret fields (issue 12): `${…}` is resolved only where the schema
declares a secret or a host/URL, and templates never see credentials."""

from __future__ import annotations

from crisisbot.cli import main

SECRET = "s3cr3t-webhook-key-do-not-mail"


def validate(ws, capsys) -> tuple[int, str, str]:
    code = main(["-c", str(ws.config_path), "validate"])
    out = capsys.readouterr()
    return code, out.err, out.out


def test_reference_in_a_contact_name_is_refused_and_never_resolved(workspace, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$hash-of-root")
    workspace.write("contacts/more.yaml", "people:\n  mallory:\n"
                    f"    name: \"${{WEBHOOK_SECRET}} / ${{file:{shadow}}}\"\n    email: m@exemple.fr\n")
    code, err, out = validate(workspace, capsys)
    assert code == 1
    assert "contacts/more.yaml:3:11: people.mallory.name: secret references (${…}) are only resolved in secret fields" in err
    assert SECRET not in err + out and "hash-of-root" not in err + out


def test_reference_in_a_playbook_or_label_is_refused(workspace, capsys, monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    panic = workspace.root / "playbooks" / "panic.yaml"
    panic.write_text(panic.read_text().replace('subject: "CRISE — {{ incident.title }}"',
                                               'subject: "CRISE ${WEBHOOK_SECRET}"'))
    workspace.edit_config(lambda d: d["triggers"].update(
        {"button": {"type": "demo", "site": "paris-hq", "label": "${WEBHOOK_SECRET}"}}))
    code, err, _ = validate(workspace, capsys)
    assert code == 1
    assert "playbooks/panic.yaml:14:14: steps[0].subject: secret references" in err
    assert "triggers.button.label: secret references" in err
    assert SECRET not in err


def test_references_still_resolve_in_secret_and_host_fields(workspace, capsys, monkeypatch):
    monkeypatch.setenv("SMTP_PW", SECRET)
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CAM_PW", "camera-password-123")
    def change(data):
        data["connectors"]["relay"] = {"type": "smtp", "host": "${SMTP_HOST}", "port": 2525,
                                       "username": "crisisbot", "password": "${SMTP_PW}"}
        data["sites"]["paris-hq"]["cameras"]["lobby"] = {
            "type": "http-camera", "url": "http://127.0.0.1:9/snap.jpg", "username": "viewer", "password": "${CAM_PW}"}
    workspace.edit_config(change)
    from crisisbot.config.bundle import load_bundle

    bundle = load_bundle(workspace.config_path)
    relay = bundle.connectors["relay"].config
    assert relay.host == "127.0.0.1" and relay.password.get_secret_value() == SECRET
    assert bundle.cameras[("paris-hq", "lobby")].config.password.get_secret_value() == "camera-password-123"


def test_templates_see_no_camera_credentials(workspace, capsys, monkeypatch):
    monkeypatch.setenv("CAM_PW", "camera-password-123")
    workspace.edit_config(lambda d: d["sites"]["paris-hq"]["cameras"].update({"lobby": {
        "type": "http-camera", "url": "http://127.0.0.1:9/snap.jpg", "username": "viewer", "password": "${CAM_PW}"}}))
    body = workspace.root / "templates" / "committee_alert" / "fr" / "body.txt"
    body.write_text("site={{ site }} cams={{ site.cameras | default('none') }}"
                    " zones={{ site.zones | list }} zone={{ zone_name }}\n" + body.read_text())
    code = main(["-c", str(workspace.config_path), "simulate", "--site", "paris-hq", "--zone", "accueil"])
    out = capsys.readouterr().out
    assert code == 0
    assert "cams=none" in out and "zone=Accueil" in out and "Siège Paris" in out
    assert "camera-password-123" not in out and "viewer" not in out
