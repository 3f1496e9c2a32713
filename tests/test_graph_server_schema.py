"""The strict Graph test server refuses what Graph refuses, by the published v1.0 metadata.

These requests are sent raw (httpx), not through the SDK: the point is the server's own
behaviour, so that the connector tests can trust a 2xx from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.graph_schema import metadata
from tests.graph_server import ORGANIZER_ID, GraphServer

CREATE = f"/users/{ORGANIZER_ID}/onlineMeetings/createOrGet"


@pytest.fixture
async def graph() -> AsyncIterator[GraphServer]:
    async with GraphServer() as server:
        yield server


@pytest.fixture
async def client(graph: GraphServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {graph.issue_token()}"}
    async with httpx.AsyncClient(base_url=graph.base_url, verify=str(graph.ca_path), headers=headers) as http:
        yield http


async def meeting(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post(CREATE, json={"externalId": "inc-1", "subject": "Fire"})
    assert response.status_code == 201, response.text
    return response.json()


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["message"]


async def test_unknown_property_is_refused_like_graph(client: httpx.AsyncClient) -> None:
    online = await meeting(client)

    response = await client.patch(f"/users/{ORGANIZER_ID}/onlineMeetings/{online['id']}",
                                  json={"odata_type": None, "allowedPresenters": "organization"})

    status, code, message = error(response)
    assert (status, code) == (400, "RequestBodyRead")
    assert message.startswith("The property 'odata_type' does not exist on type 'microsoft.graph.onlineMeeting'")


async def test_create_or_get_refuses_what_the_action_does_not_take(client: httpx.AsyncClient) -> None:
    # lobbyBypassSettings is a property of onlineMeeting, not a parameter of createOrGet
    response = await client.post(CREATE, json={"externalId": "inc-2", "lobbyBypassSettings": {"scope": "everyone"}})

    status, code, message = error(response)
    assert (status, code) == (400, "RequestBodyRead") and "'lobbyBypassSettings'" in message


async def test_missing_required_parameter_and_null_non_nullable(client: httpx.AsyncClient) -> None:
    status, code, message = error(await client.post(CREATE, json={"subject": "no external id"}))
    assert (status, code) == (400, "RequestBodyRead") and "'externalId'" in message and "required" in message

    body = {"subject": "x", "start": {"timeZone": "UTC"}, "end": {"dateTime": "2030-01-01T10:00:00", "timeZone": "UTC"}}
    status, code, message = error(await client.post(f"/users/{ORGANIZER_ID}/events", json=body))
    assert status == 400 and "'dateTime'" in message and "dateTimeTimeZone" in message

    mail = {"Message": {"subject": "s", "body": {"contentType": "text", "content": "x"},
                        "toRecipients": [{"emailAddress": {"address": "a@b.example"}}],
                        "attachments": [{"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.txt",
                                         "contentBytes": "eA==", "isInline": None}]}}
    status, code, message = error(await client.post(f"/users/{ORGANIZER_ID}/sendMail", json=mail))
    assert status == 400 and "null value" in message and "isInline" in message


async def test_wrong_enum_values_and_evolvable_members(client: httpx.AsyncClient) -> None:
    online = await meeting(client)
    url = f"/users/{ORGANIZER_ID}/onlineMeetings/{online['id']}"

    status, code, message = error(await client.patch(url, json={"allowedPresenters": "anyone"}))
    assert (status, code) == (400, "RequestBodyRead") and "'anyone'" in message and "onlineMeetingPresenters" in message

    # members after unknownFutureValue need Prefer: include-unknown-enum-members
    invited = {"lobbyBypassSettings": {"scope": "invited", "isDialInBypassEnabled": False}}
    status, _, message = error(await client.patch(url, json=invited))
    assert status == 400 and "'invited'" in message
    accepted = await client.patch(url, json=invited, headers={"Prefer": "include-unknown-enum-members"})
    assert accepted.status_code == 200 and accepted.json()["lobbyBypassSettings"]["scope"] == "invited"


async def test_wrong_json_kinds_and_abstract_types(client: httpx.AsyncClient) -> None:
    online = await meeting(client)
    url = f"/users/{ORGANIZER_ID}/onlineMeetings/{online['id']}"
    status, _, message = error(await client.patch(url, json={"lobbyBypassSettings": {"isDialInBypassEnabled": "yes"}}))
    assert status == 400 and "Edm.Boolean" in message

    mail = {"Message": {"subject": "s", "toRecipients": [{"emailAddress": {"address": "a@b.example"}}],
                        "attachments": [{"name": "a.txt", "contentBytes": "eA=="}]}}
    status, _, message = error(await client.post(f"/users/{ORGANIZER_ID}/sendMail", json=mail))
    assert status == 400 and "abstract" in message  # attachment needs its @odata.type


async def test_valid_bodies_pass_including_pascal_case_action_parameters(client: httpx.AsyncClient,
                                                                          graph: GraphServer) -> None:
    mail = {"Message": {"subject": "s", "body": {"contentType": "HTML", "content": "<p>x</p>"},
                        "toRecipients": [{"emailAddress": {"address": "a@b.example", "name": "A"}}],
                        "internetMessageId": "<inc-1.p1@crisisbot>"},
            "SaveToSentItems": False}
    response = await client.post(f"/users/{ORGANIZER_ID}/sendMail", json=mail)
    assert response.status_code == 202, response.text
    assert graph.mails[0]["message"]["internetMessageId"] == "<inc-1.p1@crisisbot>"


def test_extract_is_small_and_comes_from_the_published_csdl() -> None:
    data = metadata()
    assert data["source"].startswith("microsoftgraph/msgraph-metadata")
    assert {"onlineMeeting", "meetingParticipants", "lobbyBypassSettings", "event", "attendee", "message", "itemBody",
            "recipient", "emailAddress", "fileAttachment", "attachmentItem", "chatMessage"} <= set(data["types"])
    assert "createOrGet" in data["actions"] and "lobbyBypassSettings" not in data["actions"]["createOrGet"]
    assert len(data["types"]) < 100
