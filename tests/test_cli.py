"""The CLI as an operator uses it: exit codes and what it prints."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from crisisbot.cli import main
from daemon_helpers import running_daemon

ROOT = Path(__file__).resolve().parent.parent


def cli(ws, *args: str) -> list[str]:
    return ["-c", str(ws.config_path), *args]


def test_simulate_shows_playbook_recipients_and_messages_without_sending(workspace, capsys):
    code = main(cli(workspace, "simulate", "--site", "paris-hq", "--zone", "accueil", "--label", "Panique accueil",
                    "--at", "2026-11-23T03:00"))
    out = capsys.readouterr().out
    assert code == 0
    assert "Playbook: panic" in out and "also matching but not run: any-critical" in out
    assert "Alice Martin <alice.martin@exemple.fr>: [CRISE] Panique accueil — Siège Paris — 23/11 03:00" in out
    assert "David Smith <david.smith@exemple.fr>: [CRISIS]" in out
    assert "Ève" not in out  # disabled
    assert "cameras: hall" in out and "| Bonjour Alice Martin," in out
    assert not (workspace.root / "var" / "outbox").exists()


def test_simulate_no_playbook(workspace, capsys):
    assert main(cli(workspace, "simulate", "--site", "paris-hq", "--kind", "trouble", "--severity", "minor")) == 0
    assert "No playbook matches" in capsys.readouterr().out


def test_trigger_without_daemon_runs_in_process_and_incidents_show(workspace, capsys):
    code = main(cli(workspace, "trigger", "--site", "paris-hq", "--zone", "accueil", "--label", "Test terminal"))
    out = capsys.readouterr().out
    assert code == 0
    assert "state:    open" in out and "playbook outcome: done" in out and "delivery.sent" in out
    emails = sorted((workspace.root / "var" / "outbox").glob("*.eml"))
    assert len(emails) == 4
    assert main(cli(workspace, "incidents")) == 0
    header, *listing = capsys.readouterr().out.splitlines()
    assert "STATE" in header and "PLAYBOOK OUTCOME" in header
    assert len(listing) == 1 and listing[0].split()[3:5] == ["open", "done"] and "Test terminal" in listing[0]
    prefix = listing[0].split()[0]
    assert main(cli(workspace, "incidents", "show", prefix)) == 0
    show = capsys.readouterr().out
    assert "Deliveries:" in show and "alice.martin@exemple.fr" in show and "sent" in show


async def test_trigger_goes_through_the_running_daemon(workspace):
    async with running_daemon(workspace) as daemon:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "crisisbot", *cli(workspace, "trigger", "--site", "paris-hq", "--label", "Via socket"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        await daemon.engine.idle()
        incidents = await daemon.runtime.store.list_incidents()
    assert proc.returncode == 0, err.decode()
    assert "accepted by the running daemon" in out.decode()
    assert incidents[0].title.startswith("Via socket")


def test_trigger_unknown_site_is_a_clear_error(workspace, capsys):
    assert main(cli(workspace, "trigger", "--site", "lyon")) == 1
    assert "unknown site 'lyon'; known: paris-hq" in capsys.readouterr().err


def test_incidents_show_unknown_id(workspace, capsys):
    assert main(cli(workspace, "incidents", "show", "deadbeef")) == 1
    assert "no incident 'deadbeef'" in capsys.readouterr().err


def test_audit_verify_detects_modified_and_deleted_entries(workspace, capsys):
    assert main(cli(workspace, "trigger", "--site", "paris-hq", "--label", "Audit")) == 0
    capsys.readouterr()
    assert main(cli(workspace, "audit", "verify")) == 0
    assert "audit log intact" in capsys.readouterr().out
    db = sqlite3.connect(workspace.root / "var" / "crisisbot.db")
    db.execute("UPDATE audit SET data=replace(data, 'alice', 'mallory') WHERE kind='delivery.sent'")
    db.commit()
    assert main(cli(workspace, "audit", "verify")) == 1
    err = capsys.readouterr().err
    assert "was modified: its hash does not match" in err and "TAMPERED" in err
    db.execute("UPDATE audit SET data=replace(data, 'mallory', 'alice') WHERE kind='delivery.sent'")
    db.execute("DELETE FROM audit WHERE seq=3")
    db.commit()
    assert main(cli(workspace, "audit", "verify")) == 1
    err = capsys.readouterr().err
    assert "entry 3 is missing" in err


def test_schema_is_written_and_shipped_files_reference_it(workspace, tmp_path, capsys):
    out = tmp_path / "schema"
    assert main(cli(workspace, "schema", "--out", str(out))) == 0
    playbook = json.loads((out / "playbook.schema.json").read_text())
    assert set(playbook["properties"]) >= {"id", "match", "steps", "priority"}
    config = json.loads((out / "config.schema.json").read_text())
    assert config["properties"]["connectors"]["additionalProperties"]["anyOf"]
    assert (ROOT / "playbooks" / "panic.yaml").read_text().startswith(
        "# yaml-language-server: $schema=../schema/playbook.schema.json")
    assert (ROOT / "config.yaml").read_text().startswith("# yaml-language-server: $schema=schema/config.schema.json")
    for name in ("config", "playbook", "contacts"):
        shipped = json.loads((ROOT / "schema" / f"{name}.schema.json").read_text())
        fresh = json.loads((out / f"{name}.schema.json").read_text())
        assert shipped == fresh, f"schema/{name}.schema.json is stale: run `crisisbot schema`"


def test_demo_command_end_to_end(workspace):
    (workspace.root / "config.yaml").write_text((ROOT / "config.yaml").read_text())  # with the demo button
    result = subprocess.run([sys.executable, "-m", "crisisbot", "-c", str(workspace.config_path), "demo"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "playbook: panic" in result.stdout and "playbook outcome: done" in result.stdout
    assert "meeting.opened" in result.stdout and "https://meet.jit.si/crise-" in result.stdout
    assert "4 email(s) written to" in result.stdout
    assert "[" in result.stderr and "incident" in result.stderr.lower()  # logs carry the incident id
