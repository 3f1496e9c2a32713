"""Webhook input over real HTTP: HMAC, stale timestamps, replays, PagerDuty Events v2 bodies."""

from __future__ import annotations

import json
import time

import httpx

from daemon_helpers import enable_webhook, post_alarm, running_daemon, signed_headers

PD_KEY = "R0UTINGKEY0123456789abcdefabcdef"


def url(daemon, path: str) -> str:
    return f"http://127.0.0.1:{daemon.runtime.triggers['hook'].port}{path}"


async def test_valid_signature_is_stored_before_202(workspace, monkeypatch):
    enable_webhook(workspace)
    async with running_daemon(workspace, monkeypatch) as daemon:
        response = await post_alarm(daemon, {"site": "paris-hq", "label": "Panique RDC"})
        assert response.status_code == 202
        alarm_id = response.json()["alarm_id"]
        entries = await daemon.runtime.store.audit_entries()
    received = [e for e in entries if e.kind == "alarm.received"]
    assert received[0].data["alarm_id"] == alarm_id and received[0].data["label"] == "Panique RDC"


async def test_bad_signature_stale_timestamp_and_replay_are_refused(workspace, monkeypatch):
    enable_webhook(workspace)
    async with running_daemon(workspace, monkeypatch) as daemon:
        body = json.dumps({"site": "paris-hq"}).encode()
        async with httpx.AsyncClient() as client:
            bad = await client.post(url(daemon, "/alarms"), content=body, headers=signed_headers(body, secret="wrong"))
            stale = await client.post(url(daemon, "/alarms"), content=body,
                                      headers=signed_headers(body, timestamp=time.time() - 3600))
            unsigned = await client.post(url(daemon, "/alarms"), content=body)
            headers = signed_headers(body)
            first = await client.post(url(daemon, "/alarms"), content=body, headers=headers)
            replay = await client.post(url(daemon, "/alarms"), content=body, headers=headers)
            tampered = await client.post(url(daemon, "/alarms"), content=body.replace(b"paris", b"lyon-"),
                                         headers=signed_headers(body))
        stats = daemon.runtime.triggers["hook"].stats
    assert (bad.status_code, bad.json()["error"]) == (401, "bad signature")
    assert stale.status_code == 401 and "stale request" in stale.json()["error"]
    assert unsigned.status_code == 401 and "missing" in unsigned.json()["error"]
    assert first.status_code == 202
    assert replay.status_code == 409 and "replayed" in replay.json()["error"]
    assert tampered.status_code == 401
    assert stats == {"accepted": 1, "rejected": 5}


async def test_replay_is_refused_after_a_restart(workspace, monkeypatch):
    enable_webhook(workspace)
    body = json.dumps({"site": "paris-hq"}).encode()
    headers = signed_headers(body)
    async with running_daemon(workspace, monkeypatch) as daemon:
        async with httpx.AsyncClient() as client:
            assert (await client.post(url(daemon, "/alarms"), content=body, headers=headers)).status_code == 202
    async with running_daemon(workspace, monkeypatch) as daemon:
        async with httpx.AsyncClient() as client:
            assert (await client.post(url(daemon, "/alarms"), content=body, headers=headers)).status_code == 409


async def test_bad_bodies_get_clear_4xx(workspace, monkeypatch):
    enable_webhook(workspace, max_body=1024)
    async with running_daemon(workspace, monkeypatch) as daemon:
        async with httpx.AsyncClient() as client:
            async def post(body: bytes) -> httpx.Response:
                return await client.post(url(daemon, "/alarms"), content=body, headers=signed_headers(body))
            garbage = await post(b"\x00\xffnot json")
            wrong_kind = await post(json.dumps({"site": "paris-hq", "kind": "zombie"}).encode())
            no_site = await post(json.dumps({"label": "x"}).encode())
            huge = await post(json.dumps({"site": "paris-hq", "label": "x" * 5000}).encode())
    assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["error"]
    assert wrong_kind.status_code == 422 and wrong_kind.json()["error"].startswith("kind:")
    assert no_site.status_code == 422 and "site" in no_site.json()["error"]
    assert huge.status_code == 413


async def test_pagerduty_events_v2_trigger_and_resolve(workspace, smtp_server, monkeypatch):
    workspace.use_smtp(smtp_server.port)
    enable_webhook(workspace, routing_keys=[{"key": "${PD_ROUTING_KEY}", "site": "paris-hq", "kind": "technical"}])
    monkeypatch.setenv("PD_ROUTING_KEY", PD_KEY)
    event = {
        "routing_key": PD_KEY, "event_action": "trigger", "dedup_key": "srv-42/disk",
        "payload": {"summary": "Salle serveurs : température critique", "source": "zabbix.exemple.fr",
                    "severity": "critical", "component": "salle-serveurs", "custom_details": {"temp": 48}},
        "images": [{"src": "https://zabbix.exemple.fr/graph.png"}],
        "links": [{"href": "https://zabbix.exemple.fr/event/1", "text": "Zabbix"}],
    }
    async with running_daemon(workspace, monkeypatch) as daemon:
        async with httpx.AsyncClient() as client:
            first = await client.post(url(daemon, "/v2/enqueue"), json=event)
            again = await client.post(url(daemon, "/v2/enqueue"), json=event)
            resolve = await client.post(url(daemon, "/v2/enqueue"), json={
                "routing_key": PD_KEY, "event_action": "resolve", "dedup_key": "srv-42/disk"})
            wrong_key = await client.post(url(daemon, "/v2/enqueue"), json={**event, "routing_key": "nope"})
            no_payload = await client.post(url(daemon, "/v2/enqueue"), json={"routing_key": PD_KEY, "event_action": "trigger"})
        await daemon.engine.idle()
        incidents = await daemon.runtime.store.list_incidents()
        alarms = await daemon.runtime.store.incident_alarms(incidents[0].id)
    assert first.status_code == 202 and first.json() == {"status": "success", "message": "Event processed",
                                                         "dedup_key": "srv-42/disk"}
    assert again.status_code == 202 and resolve.status_code == 202
    assert wrong_key.status_code == 400 and wrong_key.json()["status"] == "invalid event"
    assert no_payload.status_code == 400
    assert len(incidents) == 1  # same dedup_key: one incident
    assert [a.action.value for a in alarms] == ["trigger", "trigger", "resolve"]
    assert alarms[0].label == "Salle serveurs : température critique" and alarms[0].zone == "salle-serveurs"
    assert PD_KEY not in alarms[0].raw  # the integration key is a secret: never stored
    assert [m.rcpt for m in smtp_server.handler.messages] == [["bruno.leroy@exemple.fr"]]  # catch-all ran once
