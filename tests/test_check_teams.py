"""`crisisbot check teams` against the local Graph server: what is missing, said exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from crisisbot.preflight import CheckResult
from connectors.teams_check import check_teams
from tests.graph_server import CLIENT_SECRET, ORGANIZER_ID, GraphServer


@pytest.fixture
async def graph() -> AsyncIterator[GraphServer]:
    async with GraphServer() as server:
        yield server


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def teams(graph: GraphServer, **overrides: Any) -> SimpleNamespace:
    """Shaped like DaemonConfig: only `.connectors` is read."""
    return SimpleNamespace(connectors={"teams": graph.connector_config("teams", **overrides)})


async def test_everything_in_place_creates_nothing(graph: GraphServer) -> None:
    graph.roles = ["OnlineMeetings.ReadWrite.All", "User.Read.All"]
    config = teams(graph, mode="online-meeting")

    results = by_name(await check_teams(config))

    assert list(results) == ["teams: token", "teams: permissions", "teams: mailbox", "teams: access policy"]
    assert all(r.ok for r in results.values()), results
    assert "object id " + ORGANIZER_ID in results["teams: mailbox"].detail
    assert not graph.meetings and not graph.events
    assert [r.method for r in graph.requests] == ["GET", "GET"]  # user lookup and the read-only policy probe
    assert len(graph.token_requests) == 1  # the client-secret path, token reused


async def test_missing_permission_is_named_with_the_fix(graph: GraphServer) -> None:
    graph.roles = ["Calendars.ReadWrite", "Mail.Send"]

    results = by_name(await check_teams(teams(graph, mode="online-meeting", organizer_id=ORGANIZER_ID)))

    perms = results["teams: permissions"]
    assert not perms.ok
    assert perms.detail.startswith("missing application permission(s) OnlineMeetings.ReadWrite.All;")
    assert "Calendars.ReadWrite, Mail.Send" in perms.detail and "Grant admin consent" in perms.fix
    assert not results["teams: access policy"].ok


async def test_missing_access_policy_explains_powershell(graph: GraphServer) -> None:
    graph.access_policy = False

    results = by_name(await check_teams(teams(graph, mode="online-meeting", organizer_id=ORGANIZER_ID)))

    policy = results["teams: access policy"]
    assert not policy.ok and "No application access policy" in policy.detail
    assert "New-CsApplicationAccessPolicy -Identity crisisbot -AppIds" in policy.fix
    assert "Grant-CsApplicationAccessPolicy -PolicyName crisisbot" in policy.fix
    assert not graph.meetings


async def test_create_test_meeting_only_when_asked_and_reused(graph: GraphServer) -> None:
    config = teams(graph, mode="online-meeting", organizer_id=ORGANIZER_ID)

    first = by_name(await check_teams(config, create_test_meeting=True))
    await check_teams(config, create_test_meeting=True)

    assert first["teams: access policy"].ok and "https://teams.microsoft.com/" in first["teams: access policy"].detail
    assert [m["externalId"] for m in graph.meetings.values()] == ["crisisbot-check"]


async def test_calendar_mode_least_privilege(graph: GraphServer) -> None:
    graph.roles = ["Calendars.ReadWrite"]

    results = by_name(await check_teams(teams(graph)))

    assert results["teams: permissions"].ok and results["teams: calendar"].ok
    assert results["teams: mailbox"].ok and results["teams: mailbox"].detail.startswith("not verified")
    assert "teams: access policy" not in results


async def test_bad_secret_and_unknown_mailbox(graph: GraphServer) -> None:
    config = {  # a bare connectors mapping works too
        "bad": graph.connector_config("teams", credential={"type": "secret", "client_secret": "nope-" + CLIENT_SECRET}),
        "ghost": graph.connector_config("graph-mail", mailbox="ghost@contoso.example"),
    }

    results = by_name(await check_teams(config))

    token = results["bad: token"]
    assert not token.ok and "AADSTS7000215" in token.detail and CLIENT_SECRET not in token.detail
    assert "bad: permissions" not in results
    mailbox = results["ghost: mailbox"]
    assert not mailbox.ok and "'ghost@contoso.example' not found" in mailbox.detail and "create the mailbox" in mailbox.fix


async def test_channel_and_invalid_config() -> None:
    config = {
        "old": {"type": "teams-channel", "webhook_url": "https://contoso.webhook.office.com/webhookb2/x"},
        "new": {"type": "teams-channel", "webhook_url": "https://prod-01.westeurope.logic.azure.com/workflows/x?sig=y"},
        "typo": {"type": "graph-mail", "tenant": "x"},
        "smtp": {"type": "smtp", "host": "relay"},
    }

    results = by_name(await check_teams(config))

    assert not results["old: webhook"].ok and "Workflows" in results["old: webhook"].fix
    assert results["new: webhook"].ok and "sig=y" not in results["new: webhook"].detail
    assert not results["typo: config"].ok and "tenant_id: Field required" in results["typo: config"].detail
    assert not any(name.startswith("smtp") for name in results)


async def test_probe_404_for_an_unknown_organizer_fails_the_policy_check(graph: GraphServer) -> None:
    ghost = "22222222-2222-2222-2222-222222222222"

    results = by_name(await check_teams(teams(graph, mode="online-meeting", organizer_id=ghost)))

    policy = results["teams: access policy"]
    assert not policy.ok and "HTTP 404" in policy.detail and ghost in policy.fix


async def test_graph_mail_needs_only_mail_send_and_shared_app_is_not_told_to_remove(graph: GraphServer) -> None:
    graph.roles = ["Mail.Send"]
    alone = by_name(await check_teams({"mail": graph.connector_config("graph-mail")}))
    perms = alone["mail: permissions"]
    assert perms.ok and perms.detail.startswith("granted: Mail.Send")
    assert "without Mail.ReadWrite" in perms.detail and "3 MB" in perms.detail

    graph.roles = ["OnlineMeetings.ReadWrite.All", "Mail.Send", "Mail.ReadWrite", "Sites.Read.All"]
    both = by_name(await check_teams({
        "teams": graph.connector_config("teams", mode="online-meeting", organizer_id=ORGANIZER_ID),
        "mail": graph.connector_config("graph-mail"),
    }))
    assert both["teams: permissions"].ok and both["mail: permissions"].ok
    for name in ("teams: permissions", "mail: permissions"):
        detail = both[name].detail
        assert "consider removing: Sites.Read.All" in detail
        assert "Mail.Send," not in detail.split("consider removing")[1] and "OnlineMeetings" not in detail.split("consider removing")[1]
    assert both["mail: permissions"].detail.startswith("granted: Mail.Send, Mail.ReadWrite")
