"""The Teams meeting connector against the local Graph server, through the real msgraph-sdk."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.base import MeetingRequest, Services
from connectors.teams import INCIDENT_PROPERTY, TeamsConfig, TeamsMeetings
from crisisbot.errors import PermanentError, TransientError
from crisisbot.models import Recipient
from tests.graph_server import CLIENT_SECRET, ORGANIZER, ORGANIZER_ID, GraphServer

START = datetime(2030, 5, 1, 8, 0, tzinfo=timezone.utc)
ATTENDEES = [
    Recipient("p1", "Alice Martin", "alice@contoso.example", "fr"),
    Recipient("p2", "Bob Ext", "bob@partner.example", "en", external=True),
]


def request(incident: str = "inc-42") -> MeetingRequest:
    return MeetingRequest(incident_id=incident, subject="Panic - Paris HQ", start=START,
                          end=START + timedelta(hours=2), attendees=ATTENDEES)


@pytest.fixture
async def graph() -> AsyncIterator[GraphServer]:
    async with GraphServer() as server:
        yield server


@pytest.fixture
async def make_teams(graph: GraphServer, tmp_path: Path) -> AsyncIterator[Any]:
    """Build started connectors pointed at the server; `use_secret=True` goes through the token endpoint."""
    started: list[TeamsMeetings] = []

    async def make(*, use_secret: bool = False, **overrides: Any) -> TeamsMeetings:
        cred = None if use_secret else graph.credential()
        config = TeamsConfig.model_validate(graph.connector_config("teams", **overrides))
        connector = TeamsMeetings("teams", config, Services(data_dir=tmp_path, root=tmp_path), credential=cred)
        await connector.start()
        started.append(connector)
        return connector

    yield make
    for connector in started:
        await connector.stop()


async def test_online_meeting_with_client_secret_sets_lobby_and_participants(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(use_secret=True, mode="online-meeting", organizer_id=ORGANIZER_ID)

    meeting = await teams.open_meeting(request())

    created = graph.graph_requests("POST", "onlineMeetings/createOrGet")[0]
    assert created.path == f"/users/{ORGANIZER_ID}/onlineMeetings/createOrGet"
    assert created.headers["authorization"].startswith("Bearer ey")
    assert created.body["externalId"] == "inc-42"
    assert created.body["subject"] == "Panic - Paris HQ"
    assert created.body["startDateTime"].startswith("2030-05-01T08:00:00")
    assert created.body["endDateTime"].startswith("2030-05-01T10:00:00")
    assert [a["upn"] for a in created.body["participants"]["attendees"]] == [r.email for r in ATTENDEES]
    stored = graph.meetings[meeting.meeting_id]
    assert stored["lobbyBypassSettings"] == {"scope": "organization", "isDialInBypassEnabled": False}
    assert stored["allowedPresenters"] == "organization"
    patch = graph.graph_requests("PATCH")[0]
    assert patch.headers["prefer"] == "include-unknown-enum-members"
    assert meeting.join_url == stored["joinWebUrl"] and meeting.join_url.startswith("https://teams.microsoft.com/")
    assert meeting.provider == "teams" and meeting.dial_in == "+33 1 23 45 67 89,,123456789#"
    # the client-secret path went through the token endpoint once; the token is cached
    await teams.open_meeting(request())
    assert len(graph.token_requests) == 1
    assert graph.token_requests[0]["scope"] == f"https://127.0.0.1:{graph.port}/.default"


async def test_create_or_get_is_idempotent_across_restarts(graph: GraphServer, make_teams) -> None:
    first = await (await make_teams(mode="online-meeting")).open_meeting(request())
    second = await (await make_teams(mode="online-meeting")).open_meeting(request())  # a restarted daemon

    assert second.meeting_id == first.meeting_id and second.join_url == first.join_url
    assert len(graph.meetings) == 1
    assert len(graph.graph_requests("POST", "createOrGet")) == 2
    assert len(graph.graph_requests("PATCH")) == 1  # options already set: not patched again
    # without organizer_id the object id is looked up from the UPN
    assert graph.graph_requests("GET", f"/users/{ORGANIZER}")


async def test_calendar_mode_sends_invitations_with_only_calendar_permission(graph: GraphServer, make_teams) -> None:
    graph.roles = ["Calendars.ReadWrite"]
    teams = await make_teams()

    meeting = await teams.open_meeting(request())

    post = graph.graph_requests("POST", "/events")[0]
    assert post.path == f"/users/{ORGANIZER}/events"
    body = post.body
    assert body["isOnlineMeeting"] is True and body["onlineMeetingProvider"] == "teamsForBusiness"
    assert body["transactionId"] == "inc-42"
    assert body["singleValueExtendedProperties"] == [{"id": INCIDENT_PROPERTY, "value": "inc-42"}]
    assert body["start"] == {"dateTime": "2030-05-01T08:00:00", "timeZone": "UTC"}
    assert [(a["emailAddress"]["address"], a["type"]) for a in body["attendees"]] == [
        ("alice@contoso.example", "required"), ("bob@partner.example", "required")]
    event = graph.events[meeting.meeting_id]
    assert meeting.join_url == event["onlineMeeting"]["joinUrl"]
    assert not graph.graph_requests(contains="onlineMeetings")  # least privilege: no meeting API


async def test_calendar_mode_finds_the_event_again_after_a_crash(graph: GraphServer, make_teams) -> None:
    first = await (await make_teams()).open_meeting(request())
    again = await (await make_teams()).open_meeting(request())

    assert again.meeting_id == first.meeting_id and again.join_url == first.join_url
    assert len(graph.events) == 1 and len(graph.graph_requests("POST", "/events")) == 1
    lookup = graph.graph_requests("GET", "/events")[-1]
    assert f"ep/id eq '{INCIDENT_PROPERTY}' and ep/value eq 'inc-42'" in lookup.query["$filter"]


async def test_calendar_mode_transaction_id_dedupes_when_the_lookup_misses(graph: GraphServer, make_teams) -> None:
    first = await (await make_teams()).open_meeting(request())
    for event in graph.events.values():
        event["singleValueExtendedProperties"] = []  # e.g. search index not updated yet
    again = await (await make_teams()).open_meeting(request())

    assert len(graph.graph_requests("POST", "/events")) == 2
    assert len(graph.events) == 1 and again.meeting_id == first.meeting_id


async def test_calendar_mode_with_lobby_patches_the_events_meeting(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(lobby_bypass="everyone", dial_in_bypass=True, allowed_presenters="organizer",
                             organizer_id=ORGANIZER_ID)
    meeting = await teams.open_meeting(request())

    (online,) = [m for m in graph.meetings.values() if m["joinWebUrl"] == meeting.join_url]
    assert online["lobbyBypassSettings"] == {"scope": "everyone", "isDialInBypassEnabled": True}
    assert online["allowedPresenters"] == "organizer"
    assert TeamsConfig.model_validate(graph.connector_config("teams", lobby_bypass="everyone")).required_permissions() == [
        "Calendars.ReadWrite", "OnlineMeetings.ReadWrite.All"]


async def test_429_retry_after_is_honoured(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID)
    graph.fail_next(429, retry_after=1, path="createOrGet")

    began = time.monotonic()
    meeting = await teams.open_meeting(request())
    elapsed = time.monotonic() - began

    assert elapsed >= 1.0  # waited Retry-After (a lower bound: sleeps never end early)
    assert len(graph.graph_requests("POST", "createOrGet")) == 2 and meeting.join_url


async def test_503_after_all_retries_is_transient(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID, max_retries=1)
    graph.fail_next(503, retry_after=1, times=2, path="createOrGet")

    with pytest.raises(TransientError, match="throttling or unavailable .*HTTP 503") as caught:
        await teams.open_meeting(request())
    assert caught.value.retry_after == 1.0
    assert len(graph.graph_requests("POST", "createOrGet")) == 2


async def test_retry_after_beyond_budget_returns_at_once(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID)
    graph.fail_next(429, retry_after=60, path="createOrGet")

    with pytest.raises(TransientError) as caught:
        await teams.open_meeting(request())
    assert caught.value.retry_after == 60.0
    assert len(graph.graph_requests("POST", "createOrGet")) == 1  # no sleep-and-retry beyond the budget


async def test_retry_sleep_is_cancelled_by_the_step_deadline(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID)
    await teams.warmed()  # the deadline is meant for the retry sleep, not for the opening after start
    graph.fail_next(429, retry_after=2, path="createOrGet")

    with pytest.raises(TimeoutError):  # the 2 s retry sleep did not outlive the 0.3 s deadline
        async with asyncio.timeout(0.3):
            await teams.open_meeting(request())
    assert len(graph.graph_requests("POST", "createOrGet")) == 1


async def test_hang_becomes_transient_error(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID, request_timeout=0.3, max_retries=1)
    graph.hang_next(5, times=2, path="createOrGet")

    with pytest.raises(TransientError, match="no answer from Graph in time"):
        await teams.open_meeting(request())
    assert len(graph.graph_requests("POST", "createOrGet")) == 2  # idempotent: one retry, then the error


async def test_403_names_the_missing_permission(graph: GraphServer, make_teams) -> None:
    graph.roles = ["Calendars.ReadWrite"]
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID)

    with pytest.raises(PermanentError) as caught:
        await teams.open_meeting(request())
    text = str(caught.value)
    assert "OnlineMeetings.ReadWrite.All" in text and "HTTP 403 ErrorAccessDenied" in text


async def test_403_without_access_policy_explains_the_policy(graph: GraphServer, make_teams) -> None:
    graph.access_policy = False
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID)

    with pytest.raises(PermanentError, match="Grant-CsApplicationAccessPolicy"):
        await teams.open_meeting(request())


async def test_404_unknown_organizer(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(organizer="nobody@contoso.example")

    with pytest.raises(PermanentError, match="mailbox or user 'nobody@contoso.example' not found .*ErrorInvalidUser"):
        await teams.open_meeting(request())


async def test_bad_secret_is_permanent_and_never_printed(graph: GraphServer, make_teams, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "wrong-" + CLIENT_SECRET
    teams = await make_teams(use_secret=True, credential={"type": "secret", "client_secret": secret})

    with pytest.raises(PermanentError, match="AADSTS7000215") as caught:
        await teams.open_meeting(request())
    assert secret not in str(caught.value) and CLIENT_SECRET not in str(caught.value)
    assert CLIENT_SECRET not in caplog.text and secret not in caplog.text
    assert secret not in repr(teams.config)


def test_config_national_cloud_and_strictness() -> None:
    base = {"type": "teams", "tenant_id": "t", "client_id": "c", "organizer": "crisis@x.example",
            "credential": {"type": "secret", "client_secret": "x"}}
    gov = TeamsConfig.model_validate({**base, "cloud": "usgov-high"})
    assert gov.graph_url == "https://graph.microsoft.us/v1.0"
    assert gov.authority_host == "https://login.microsoftonline.us"
    assert gov.scope == "https://graph.microsoft.us/.default"
    china = TeamsConfig.model_validate({**base, "cloud": "china", "credential": {"type": "managed-identity"}})
    assert china.scope == "https://microsoftgraph.chinacloudapi.cn/.default"
    assert TeamsConfig.model_validate({**base, "duration": "45m"}).duration == 2700
    with pytest.raises(ValidationError):
        TeamsConfig.model_validate({**base, "lobby": "everyone"})
    with pytest.raises(ValidationError):
        TeamsConfig.model_validate({**base, "credential": {"type": "password", "password": "x"}})


def self_signed_pem(path: Path) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crisisbot")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(START - timedelta(days=3650)).not_valid_after(START + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))
    return path


async def test_certificate_credential_relative_to_config_dir(graph: GraphServer, make_teams, tmp_path: Path) -> None:
    self_signed_pem(tmp_path / "crisisbot.pem")
    teams = await make_teams(use_secret=True, mode="online-meeting", organizer_id=ORGANIZER_ID,
                             credential={"type": "certificate", "certificate_path": "crisisbot.pem"})

    await teams.open_meeting(request())

    assert len(graph.assertions) == 1 and graph.assertions[0]["iss"] == graph.assertions[0]["sub"]
    assert len(graph.meetings) == 1


async def test_missing_certificate_is_a_clear_permanent_error(graph: GraphServer, tmp_path: Path) -> None:
    config = TeamsConfig.model_validate(graph.connector_config(
        "teams", credential={"type": "certificate", "certificate_path": "keys/missing.pem"}))
    teams = TeamsMeetings("teams", config, Services(data_dir=tmp_path, root=tmp_path))

    with pytest.raises(PermanentError, match=r"cannot load the certificate .*keys/missing.pem: No such file"):
        await teams.start()


async def test_default_online_meeting_flow_sends_only_metadata_valid_bodies(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID)

    meeting = await teams.open_meeting(request())

    assert not meeting.warnings
    (patch,) = graph.graph_requests("PATCH")
    # only what changes: new meetings already admit the organization (the server validated
    # every body against the v1.0 metadata, and would have refused "odata_type": null)
    assert {k for k in patch.body if not k.startswith("@")} == {"allowedPresenters"}
    assert "odata_type" not in str(patch.body)
    stored = graph.meetings[meeting.meeting_id]
    assert stored["allowedPresenters"] == "organization" and stored["lobbyBypassSettings"]["scope"] == "organization"
    created = graph.graph_requests("POST", "createOrGet")[0]
    assert set(created.body) <= {"externalId", "subject", "startDateTime", "endDateTime", "participants", "chatInfo"}


async def test_patch_refused_after_creation_still_hands_out_the_join_url(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID)
    graph.fail_next(400, code="BadRequest", message="Invalid meeting options", path="onlineMeetings/MSp")

    meeting = await teams.open_meeting(request())

    (stored,) = graph.meetings.values()
    assert meeting.join_url == stored["joinWebUrl"] and meeting.meeting_id == stored["id"]
    assert len(meeting.warnings) == 1
    assert "lobby and presenters not set" in meeting.warnings[0] and "HTTP 400 BadRequest" in meeting.warnings[0]


async def test_patch_throttled_beyond_budget_still_hands_out_the_join_url(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID)
    graph.fail_next(503, retry_after=60, path="onlineMeetings/MSp")

    meeting = await teams.open_meeting(request())

    assert meeting.join_url and "HTTP 503" in meeting.warnings[0]


async def test_dropped_connection_during_create_or_get_is_retried(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID)
    graph.drop_next(path="createOrGet")  # the meeting is created, the answer never arrives

    meeting = await teams.open_meeting(request())

    assert len(graph.graph_requests("POST", "createOrGet")) == 2
    (stored,) = graph.meetings.values()  # the retry found the same meeting by externalId
    assert meeting.join_url == stored["joinWebUrl"]


async def test_404_of_the_meeting_is_not_blamed_on_the_mailbox(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID)
    graph.fail_next(404, code="NotFound", message="Meeting not found", path="onlineMeetings/MSp")

    meeting = await teams.open_meeting(request())

    (warning,) = meeting.warnings
    assert "online meeting MSp" in warning and "not found" in warning and "mailbox" not in warning


async def test_404_from_a_wrong_graph_url_names_the_endpoint(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID, graph_url=graph.authority + "/graph/v1.0")

    with pytest.raises(PermanentError) as caught:
        await teams.open_meeting(request())
    text = str(caught.value)
    assert "Graph endpoint not found" in text and "graph_url" in text and "mailbox" not in text


async def test_start_is_immediate_and_an_early_alarm_waits_for_the_opening(graph: GraphServer, make_teams) -> None:
    teams = await make_teams(mode="online-meeting", organizer_id=ORGANIZER_ID)

    meeting = await teams.open_meeting(request())  # an alarm right after start, during the opening

    assert meeting.join_url and len(graph.meetings) == 1
    await teams.warmed()
