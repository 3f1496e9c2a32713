"""The web child's link to the daemon (crisisbot/web/remote.py): commands, audit entries and
the daemon's health over the real control socket of a real daemon."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from security.console_helpers import client, console_daemon, enable_console, login
from crisisbot.cli import main
from crisisbot.commands import (
    MAX_AUDIT_BATCH, Acknowledge, Acknowledged, AuditRecorded, Command, Health, HealthReport, ListSessions, RecordAudit,
    RevokeSessions, SessionsListed, StandDown, Status, encode,
)
from crisisbot.control import ask_daemon
from crisisbot.errors import CommandInvalid, DaemonBusy, IncidentClosed, IncidentNotFound
from crisisbot.health import HealthChecks
from crisisbot.models import IncidentStatus
from crisisbot.web.remote import (
    EXCEPTION_HANDLERS, HELD_KINDS, NOT_ANSWERING, RemoteAudit, RemoteBus, daemon_health_check,
)
from daemon_helpers import fire_manual, running_daemon


def _acks(entries: list[Any]) -> list[dict[str, Any]]:
    """Acknowledgement entries without their moment (`at`, `after_seconds`)."""
    return [{k: v for k, v in e.data.items() if k not in ("at", "after_seconds")} for e in entries
            if e.kind == "incident.acknowledged"]


async def test_remote_bus_acknowledges_an_incident_exactly_as_the_console_does(workspace):
    enable_console(workspace)  # the console user "operator" is the contact alice
    async with console_daemon(workspace) as daemon:
        store = daemon.runtime.store
        bus = RemoteBus(daemon.bundle.control_socket)
        by_console = await fire_manual(daemon)
        async with client(daemon) as http:
            assert (await login(http, "operator")).status_code == 303
            form = await http.post(f"/console/incidents/{by_console.id}/ack", data={"response": "joining"})
        assert form.status_code == 303
        await daemon.commands.dispatch(StandDown(incident_id=by_console.id, outcome=IncidentStatus.resolved,
                                                 reason="fini", actor="operator"))
        by_remote = await fire_manual(daemon)  # a new incident: the first one is over
        assert by_remote.id != by_console.id
        command = Acknowledge(incident_id=by_remote.id, person="alice", response="joining", actor="operator",
                              via="console")
        first = await bus.dispatch(command)
        again = await bus.dispatch(Acknowledge(incident_id=by_remote.id, person="alice", actor="operator",
                                               via="console"))
        console_entries = _acks(await store.audit_entries(by_console.id))
        remote_entries = _acks(await store.audit_entries(by_remote.id))
        alice = daemon.runtime.bundle.people["alice"].name
    assert type(first) is Acknowledged
    assert first == Acknowledged(incident_id=by_remote.id, person="alice", new=True, satisfied=first.satisfied,
                                 person_name=alice)
    assert type(again) is Acknowledged and again.new is False
    assert remote_entries == console_entries and len(console_entries) == 1
    assert (console_entries[0]["person"], console_entries[0]["via"], console_entries[0]["response"]) == \
        ("alice", "console", "joining")


async def test_a_refusal_raises_the_class_and_message_the_in_process_bus_raises(workspace):
    async with running_daemon(workspace) as daemon:
        bus = RemoteBus(daemon.bundle.control_socket)
        closed = await fire_manual(daemon)
        await daemon.commands.dispatch(StandDown(incident_id=closed.id, outcome=IncidentStatus.resolved,
                                                 reason="fini", actor="operator"))

        def commands() -> list[Command]:  # fresh ids each time: a remembered refusal would not be asked again
            return [Acknowledge(incident_id="deadbeef", person="alice"),
                    Acknowledge(incident_id=closed.id, person="alice"),
                    StandDown(incident_id="deadbeef", outcome=IncidentStatus.resolved, reason="x"),
                    RevokeSessions()]

        raised: dict[str, tuple[type, str, type, str]] = {}
        for local, remote in zip(commands(), commands()):
            with pytest.raises(Exception) as here:
                await daemon.commands.dispatch(local)
            with pytest.raises(Exception) as there:
                await bus.dispatch(remote)
            raised[local.name + ":" + type(here.value).__name__] = (
                type(here.value), str(here.value), type(there.value), str(there.value))
    assert {key: (a, b) for key, (a, b, _, _) in raised.items()} == \
        {key: (c, d) for key, (_, _, c, d) in raised.items()}
    assert {a for a, _, _, _ in raised.values()} == {IncidentNotFound, IncidentClosed, CommandInvalid}


async def test_record_audit_appends_to_the_hash_chain_and_refuses_kinds_the_web_does_not_write(workspace, capsys):
    async with running_daemon(workspace) as daemon:
        store = daemon.runtime.store
        audit = RemoteAudit(RemoteBus(daemon.bundle.control_socket))
        login_entry = await audit("console.login", None, {"user": "operator", "client": "127.0.0.1"})
        held = await audit(
            "link.refused", None, {"client": "127.0.0.9", "count": 3, "window_s": 60.0})
        before = len(await store.audit_entries())
        with pytest.raises(CommandInvalid, match="audit kind 'config.loaded' is not one the web console writes"):
            await audit("config.loaded", None, {"digest": "forged"})
        with pytest.raises(CommandInvalid, match="over the 16384 bytes a web entry may hold"):
            await audit("liveview.viewed", "i1", {"recipient": "x" * 20_000})
        # a peer that skips the client-side check is refused by the daemon itself
        forged = encode(RecordAudit(kind="console.login"))
        forged["fields"]["kind"] = "incident.stood_down"
        refused = await ask_daemon(daemon.bundle.control_socket, forged)
        entries = await store.audit_entries()
    assert refused is not None and refused["ok"] is False and refused["error"]["type"] == "CommandInvalid"
    assert "'incident.stood_down' is not one the web console writes" in refused["error"]["message"]
    assert len(entries) == before
    written = {e.seq: e for e in entries}
    for sent in (login_entry, held):
        stored = written[sent.seq]
        assert (stored.kind, stored.data, stored.hash, stored.prev_hash, stored.at) == \
            (sent.kind, sent.data, sent.hash, sent.prev_hash, sent.at)
    assert login_entry.kind == "console.login" and held.kind == "link.refused"
    assert await asyncio.to_thread(main, ["-c", str(workspace.config_path), "audit", "verify"]) == 0
    assert "audit log intact" in capsys.readouterr().out


async def test_a_batch_of_refusal_counts_is_one_command_one_transaction_and_refused_whole(workspace, capsys):
    async with running_daemon(workspace) as daemon:
        store = daemon.runtime.store
        audit = RemoteAudit(RemoteBus(daemon.bundle.control_socket))
        before = len(await store.audit_entries())
        counts = [("console.login_busy", None, {"client": f"127.0.1.{i}", "count": 2, "window_s": 60.0})
                  for i in range(MAX_AUDIT_BATCH + 20)]  # two commands
        assert await audit.many(counts) == len(counts)
        entries = (await store.audit_entries())[before:]
        with pytest.raises(CommandInvalid, match="audit kind 'incident.opened' is not one the web console writes"):
            await audit.many([("link.refused", None, {"client": "x", "count": 1}),
                              ("incident.opened", None, {"forged": True})])
        after = len(await store.audit_entries())
    assert [e.data["client"] for e in entries] == [d["client"] for _, _, d in counts]
    assert len({e.at for e in entries}) <= 2  # one transaction (one time) per command, not one per entry
    assert after == before + len(counts)  # the refused batch wrote nothing, not even its good entry
    assert await asyncio.to_thread(main, ["-c", str(workspace.config_path), "audit", "verify"]) == 0
    assert "audit log intact" in capsys.readouterr().out


async def test_an_answer_longer_than_asyncios_64_kib_line_crosses_the_socket(workspace):
    """An admin's session list (or a health report) is one JSON line of any length."""
    enable_console(workspace)
    async with console_daemon(workspace) as daemon:
        sessions = await daemon.commands._sessions()
        for n in range(250):
            await sessions.create("operator", f"127.0.0.{n % 250 + 1}", "Mozilla/5.0 " + "x" * 190)
        listed = await RemoteBus(daemon.bundle.control_socket).dispatch(ListSessions(actor="admin", via="api"))
    assert type(listed) is SessionsListed and len(listed.sessions) == 250
    assert len(json.dumps(listed.sessions)) > 64 * 1024


def test_every_refusal_kind_the_web_counts_is_held_behind_the_alarm():
    """RefusalAudit's kinds (`.note(...)`, `.refuse(...)` in crisisbot/web) are written by
    the daemon once no alarm is being dispatched, as the in-process console holds them."""
    web = Path(__file__).resolve().parents[1] / "crisisbot" / "web"
    noted = {m.group(1) for path in web.glob("*.py")
             for m in re.finditer(r'\.(?:note|refuse)\(\s*"([a-z_.]+)"', path.read_text())}
    assert noted and noted <= HELD_KINDS, sorted(noted - HELD_KINDS)
    assert {"console.login", "console.logout", "liveview.viewed", "liveview.image"}.isdisjoint(HELD_KINDS)


class CountingBus(RemoteBus):
    """A real RemoteBus that counts the requests it sends (to see callers share one)."""

    asked = 0

    async def ask(self, command: Command, **kw: Any) -> Any:
        self.asked += 1
        return await super().ask(command, **kw)


async def test_health_is_the_daemons_verdict_asked_once_a_second_and_down_when_the_socket_is_gone(workspace):
    now = [0.0]
    async with running_daemon(workspace) as daemon:
        bus = CountingBus(daemon.bundle.control_socket)
        checks = HealthChecks()
        checks.add("daemon", daemon_health_check(bus, clock=lambda: now[0]))
        report = await bus.dispatch(Health(actor="web", via="web"))
        verdict, own = await daemon.runtime.health.gather()
        shared = await asyncio.gather(*(checks.gather() for _ in range(20)))
        cached = await checks.gather()
        asked = bus.asked
    assert type(report) is HealthReport and report.status == verdict and set(report.checks) == set(own)
    assert "supervision" in report.checks  # the lifecycle's verdict, even with no web app in the daemon
    status, details = shared[0]
    assert status == verdict and details["daemon"]["status"] == verdict
    assert set(details["daemon"]["checks"]) == set(own)
    assert all(s == shared[0] for s in shared) and cached == shared[0]
    assert asked == 2  # the Health above, then one for the 20 concurrent callers and the cached one

    down_status, down = await checks.gather()  # the daemon is gone, but the last answer is still fresh
    assert down_status == verdict
    now[0] += 1.5
    down_status, down = await checks.gather()
    assert down_status == "down"
    assert down["daemon"]["status"] == "down" and down["daemon"]["daemon"].startswith("not answering: ")
    assert "no daemon listens on its control socket" in down["daemon"]["daemon"]


async def test_in_process_the_health_command_is_refused_in_words(workspace, capsys):
    from crisisbot.command_bus import in_process
    from crisisbot.config.bundle import load_bundle
    from crisisbot.errors import DaemonRequired

    async with in_process(load_bundle(workspace.config_path)) as bus:
        with pytest.raises(DaemonRequired, match="the health is the running daemon's"):
            await bus.dispatch(Health())


async def _silent_first_proxy(path: Path, daemon_socket: Path, forwarded: list[dict[str, Any]]):
    """A real peer between the bus and the daemon: it carries the first request to the
    daemon but never answers it (as a daemon stalled past the timeout); later ones go through."""
    calls = 0
    hold = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        line = await reader.readline()
        reply = await ask_daemon(daemon_socket, json.loads(line))
        assert reply is not None
        forwarded.append(reply)
        if calls == 1:
            await hold.wait()  # the client gives up; its resend comes on a new connection
        else:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, path=str(path))
    return server, hold


async def test_a_command_resent_after_a_timeout_reuses_its_id_and_acts_once(workspace, tmp_path):
    forwarded: list[dict[str, Any]] = []
    async with running_daemon(workspace) as daemon:
        store = daemon.runtime.store
        server, hold = await _silent_first_proxy(tmp_path / "proxy.sock", daemon.bundle.control_socket, forwarded)
        try:
            bus = RemoteBus(tmp_path / "proxy.sock", timeout=3.0, attempts=3)
            command = RecordAudit(kind="liveview.viewed", incident_id="i-once", data={"recipient": "alice"})
            done = await bus.dispatch(command)
            again = await RemoteBus(daemon.bundle.control_socket).dispatch(command)  # a plain resend
        finally:
            hold.set()
            server.close()
            await server.wait_closed()
        entries = await store.audit_entries("i-once")
    assert type(done) is AuditRecorded and done == again
    assert len(forwarded) >= 2 and {json.dumps(r, sort_keys=True) for r in forwarded} == \
        {json.dumps(forwarded[0], sort_keys=True)}  # the daemon gave every attempt the first answer
    assert [(e.seq, e.kind) for e in entries] == [(done.seq, "liveview.viewed")]


async def test_a_daemon_that_does_not_answer_is_a_503_page_not_a_traceback(tmp_path):
    bus = RemoteBus(tmp_path / "nobody.sock", attempts=2, pause=0.01)
    with pytest.raises(DaemonBusy, match=r"the daemon is not answering \(no daemon listens on its control socket"):
        await bus.dispatch(Status())

    async def acknowledge(request: Request) -> Response:
        await bus.dispatch(Acknowledge(incident_id="i1", person="alice", via="console"))
        return Response("acknowledged")

    app = Starlette(routes=[Route("/ack", acknowledge, methods=["POST"]), Route("/api/ack", acknowledge,
                                                                                  methods=["POST"])],
                    exception_handlers=EXCEPTION_HANDLERS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web") as http:
        page = await http.post("/ack")
        api = await http.post("/api/ack")
    assert page.status_code == 503 and NOT_ANSWERING in page.text and "Traceback" not in page.text
    assert api.status_code == 503 and api.json() == {"error": "daemon_not_answering", "message": NOT_ANSWERING}
    assert page.headers["retry-after"] == "5"
