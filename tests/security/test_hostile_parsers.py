"""Hostile bodies and headers on the webhook: each gets a 4xx that says why, never a 500
with a traceback, and the daemon keeps taking alarms afterwards."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from daemon_helpers import SECRET, enable_webhook, post_alarm, running_daemon, signed_headers
from triggers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

PD_KEY = "R0UTINGKEY0123456789abcdefabcdef"


def nested(depth: int) -> dict:
    node: dict = {"leaf": 1}
    for _ in range(depth - 1):
        node = {"x": node}
    return node


NATIVE_BODIES = {  # signed correctly: only the content is hostile
    "details nested 300 deep": json.dumps({"site": "paris-hq", "details": nested(300)}).encode(),
    "30,000 nested arrays": b'{"site": "paris-hq", "details": {"a": ' + b"[" * 30000 + b"]" * 30000 + b"}}",
    "NaN": b'{"site": "paris-hq", "details": {"level": NaN}}',
    "Infinity": b'{"site": "paris-hq", "details": {"level": -Infinity}}',
    "float overflow": b'{"site": "paris-hq", "details": {"level": 1e999}}',
    "5,000-digit integer": b'{"site": "paris-hq", "details": {"n": ' + b"9" * 5000 + b"}}",
    "3,000 fields": json.dumps({"site": "paris-hq", "details": {f"k{i}": i for i in range(3000)}}).encode(),
    "20,000 array items": json.dumps({"site": "paris-hq", "details": {"a": [0] * 20000}}).encode(),
    "not UTF-8": b'{"site": "paris-\xff\xfe"}',
    "lone surrogate": b'{"site": "paris-hq", "label": "\\ud800 panic"}',
    "array body": b"[1, 2, 3]",
}

PAGERDUTY_BODIES = {
    "30,000 nested arrays": b"[" * 30000 + b"]" * 30000,
    "nested payload": json.dumps({"routing_key": PD_KEY, "event_action": "trigger",
                                  "payload": {"summary": "s", "source": "x", "severity": "critical",
                                              "custom_details": nested(300)}}).encode(),
    "non-ASCII routing_key": json.dumps({"routing_key": "clé-secrète-é", "event_action": "trigger",
                                         "payload": {"summary": "s", "source": "x", "severity": "info"}}).encode(),
    "lone surrogate routing_key": b'{"routing_key": "\\udfff", "event_action": "trigger"}',
}

BAD_STAMPS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1", "+1700000000", "1_700_000_000", "0x10", "١٧٠٠٠٠٠٠٠٠"]


@pytest.fixture
def record_errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING)
    return caplog


async def test_hostile_bodies_and_headers_get_4xx_and_the_daemon_keeps_serving(
        workspace, monkeypatch, record_errors) -> None:
    enable_webhook(workspace, routing_keys=[{"key": "${PD_ROUTING_KEY}", "site": "paris-hq"}])
    monkeypatch.setenv("PD_ROUTING_KEY", PD_KEY)
    async with running_daemon(workspace, monkeypatch) as daemon:
        base = f"http://127.0.0.1:{daemon.runtime.triggers['hook'].port}"
        answers: dict[str, httpx.Response] = {}
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for name, body in NATIVE_BODIES.items():
                answers[f"native {name}"] = await client.post("/alarms", content=body, headers=signed_headers(body))
            for name, body in PAGERDUTY_BODIES.items():
                answers[f"pagerduty {name}"] = await client.post("/v2/enqueue", content=body)
            body = json.dumps({"site": "paris-hq"}).encode()
            for stamp in BAD_STAMPS:  # correctly signed over the hostile timestamp
                headers = [(TIMESTAMP_HEADER.encode(), stamp.encode()),
                           (SIGNATURE_HEADER.encode(), sign(SECRET.encode(), stamp, body).encode())]
                answers[f"timestamp {stamp!r}"] = await client.post("/alarms", content=body, headers=headers)
            raw_headers = [(TIMESTAMP_HEADER.encode(), b"1700000000"), (SIGNATURE_HEADER.encode(), b"sha256=\xe9\xff")]
            answers["non-ASCII signature"] = await client.post("/alarms", content=body, headers=raw_headers)
            health = await client.get("/health")
        ok = await post_alarm(daemon, {"site": "paris-hq", "label": "Panique RDC"})

    statuses = {name: r.status_code for name, r in answers.items()}
    assert all(400 <= code < 500 for code in statuses.values()), statuses
    for name, response in answers.items():
        assert response.json().get("error") or response.json().get("message"), name  # says why
    assert all(statuses[f"timestamp {s!r}"] == 401 for s in BAD_STAMPS), statuses
    assert statuses["non-ASCII signature"] == 401
    assert statuses["pagerduty non-ASCII routing_key"] == 400
    assert "nested too deeply" in answers["native details nested 300 deep"].json()["error"]
    assert "too many fields" in answers["native 3,000 fields"].json()["error"]
    assert health.status_code == 200 and ok.status_code == 202
    tracebacks = [r for r in record_errors.records if r.exc_info or "Traceback" in r.getMessage()]
    assert tracebacks == []
