"""`crisisbot check teams`: verify each teams / graph-mail / teams-channel connector.

Shipped with the Teams connectors (entry point `crisisbot.checks`: teams), so the core
imports none of them.

Read-only unless asked: it gets a token, compares the token's `roles` with the
permissions the configured mode needs, looks up the mailbox, probes calendar access
(Exchange RBAC / application access policy scope) and the Teams application access
policy with a GET. Only `create_test_meeting=True` creates something: one
createOrGet meeting with a fixed externalId, so repeated checks reuse it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.users.item.online_meetings.create_or_get.create_or_get_post_request_body import (
    CreateOrGetPostRequestBody,
)
from msgraph.generated.users.item.online_meetings.online_meetings_request_builder import (
    OnlineMeetingsRequestBuilder,
)
from pydantic import ValidationError

from connectors.graph_client import USER_NOT_FOUND, GraphSettings, explain, graph_errors, with_root
from connectors.graph_sdk import GraphConnection
from connectors.graph_mail import GraphMailConfig
from connectors.teams import MEETING_PERMISSION, TeamsConfig
from connectors.teams_channel import TeamsChannelConfig
from crisisbot.preflight import CheckResult
from crisisbot.errors import ConnectorError

log = logging.getLogger(__name__)

CONFIGS: dict[str, type[GraphSettings] | type[TeamsChannelConfig]] = {
    "teams": TeamsConfig, "graph-mail": GraphMailConfig, "teams-channel": TeamsChannelConfig,
}
CHECK_EXTERNAL_ID = "crisisbot-check"
CONSENT = ("Entra admin center > App registrations > {client} > API permissions > Add a permission > "
           "Microsoft Graph > Application permissions: add {perms}, then 'Grant admin consent'")
POLICY_FIX = (
    "In Teams PowerShell (Connect-MicrosoftTeams):\n"
    "  New-CsApplicationAccessPolicy -Identity crisisbot -AppIds \"{client}\" -Description \"crisisbot meetings\"\n"
    "  Grant-CsApplicationAccessPolicy -PolicyName crisisbot -Identity \"{organizer}\"\n"
    "Changes take up to 30 minutes to apply (docs/teams-setup.md)."
)


async def check_teams(
    config: Any, *, create_test_meeting: bool = False, root: Path | None = None, credential: Any | None = None
) -> list[CheckResult]:
    """Check every Microsoft connector of `config` (the daemon config or its `connectors` mapping)."""
    connectors: Mapping[str, Mapping[str, Any]] = getattr(config, "connectors", config)
    results: list[CheckResult] = []
    parsed_all: dict[str, Any] = {}
    for name, mapping in connectors.items():
        kind = mapping.get("type")
        if kind not in CONFIGS:
            continue
        try:
            parsed_all[name] = CONFIGS[kind].model_validate(dict(mapping))
        except ValidationError as exc:
            results.append(CheckResult(f"{name}: config", False, _validation(exc), "fix the connector in config.yaml"))
    for name, parsed in parsed_all.items():
        if isinstance(parsed, TeamsChannelConfig):
            results.append(_check_channel(name, parsed))
            continue
        # permissions another configured connector of the same app needs are not "extra"
        shared = {p for other, cfg in parsed_all.items() if other != name and isinstance(cfg, GraphSettings)
                  and cfg.client_id == parsed.client_id and cfg.tenant_id == parsed.tenant_id
                  for p in [*_required(cfg), *_optional(cfg)]}
        settings = with_root(parsed, root)
        graph = GraphConnection(settings, credential)
        try:
            results += await _check_graph(name, settings, graph, create_test_meeting, shared)
        finally:
            await graph.close()
    if not results:
        results.append(CheckResult("teams", False, "no teams, graph-mail or teams-channel connector is configured",
                                   "add one under connectors: in config.yaml (docs/teams-setup.md)"))
    return results


async def _check_graph(name: str, settings: GraphSettings, graph: GraphConnection, create: bool,
                       shared: set[str]) -> list[CheckResult]:
    results: list[CheckResult] = []
    try:
        claims = await graph.token_claims()
    except Exception as exc:  # noqa: BLE001 - reported, with the cause named
        error = explain(exc, "get a token")
        results.append(CheckResult(f"{name}: token", False, str(error),
                                   "check tenant_id, client_id and the credential (an expired secret is the usual cause)"))
        return results
    results.append(CheckResult(f"{name}: token", True,
                               f"token for app {claims.get('appid') or claims.get('azp')} in tenant {claims.get('tid')}"))
    results.append(_check_roles(name, settings, set(claims.get("roles") or []), shared))
    mailbox = settings.organizer if isinstance(settings, TeamsConfig) else settings.mailbox  # type: ignore[attr-defined]
    user_id, result = await _check_mailbox(name, graph, mailbox)
    results.append(result)
    if isinstance(settings, TeamsConfig):
        if settings.mode == "calendar":
            results.append(await _check_calendar(name, graph, mailbox))
        if MEETING_PERMISSION in settings.required_permissions():
            organizer = settings.organizer_id or user_id
            results.append(await _check_policy(name, settings, graph, organizer, create))
    return results


def _required(settings: GraphSettings) -> list[str]:
    if isinstance(settings, TeamsConfig):
        needed = settings.required_permissions()
        if MEETING_PERMISSION in needed and not settings.organizer_id:
            needed.append("User.Read.All")  # to turn the organizer's UPN into its object id
        return needed
    return settings.required_permissions()  # type: ignore[attr-defined]


def _optional(settings: GraphSettings) -> dict[str, str]:
    """Permissions a connector can use but does without (what for)."""
    optional = getattr(settings, "optional_permissions", None)
    return optional() if optional else {}


def _check_roles(name: str, settings: GraphSettings, roles: set[str], shared: set[str]) -> CheckResult:
    needed = _required(settings)
    implied = {"Calendars.ReadWrite": {"Calendars.ReadWrite"}, "User.Read.All": {"User.Read.All", "User.ReadBasic.All", "Directory.Read.All"}}
    missing = [p for p in needed if not roles & implied.get(p, {p})]
    granted = ", ".join(sorted(roles)) or "none"
    if missing:
        return CheckResult(f"{name}: permissions", False,
                           f"missing application permission(s) {', '.join(missing)}; the token grants: {granted}",
                           CONSENT.format(client=settings.client_id, perms=", ".join(missing)))
    optional = _optional(settings)
    notes = [f"without {perm}, {what} go through the next mailer" for perm, what in optional.items() if perm not in roles]
    used = [p for p in optional if p in roles]
    extra = sorted(roles - set(needed) - set(optional) - shared - {"User.ReadBasic.All"})
    if extra:
        notes.append(f"not needed by this app's connectors, consider removing: {', '.join(extra)}")
    return CheckResult(f"{name}: permissions", True,
                       f"granted: {', '.join([*needed, *used])}" + "".join(f"; {n}" for n in notes))


async def _check_mailbox(name: str, graph: GraphConnection, mailbox: str) -> tuple[str | None, CheckResult]:
    try:
        with graph_errors(f"look up {mailbox}", permission="User.Read.All", mailbox=mailbox):
            user = await graph.client.users.by_user_id(mailbox).get()
    except ConnectorError as exc:
        status = _status(exc)
        if status == 403:
            return None, CheckResult(f"{name}: mailbox", True,
                                     f"not verified: reading users needs User.Read.All, which crisisbot does not need at "
                                     f"run time ({exc})")
        fix = f"create the mailbox {mailbox} (a shared mailbox is enough) or fix the address" if status == 404 else ""
        return None, CheckResult(f"{name}: mailbox", False, str(exc), fix)
    uid = user.id if user else None
    label = f"{user.display_name} <{user.user_principal_name}>" if user else mailbox
    return uid, CheckResult(f"{name}: mailbox", True, f"{label}, object id {uid}")


async def _check_calendar(name: str, graph: GraphConnection, mailbox: str) -> CheckResult:
    try:
        with graph_errors(f"read the calendar of {mailbox}", permission="Calendars.ReadWrite", mailbox=mailbox):
            await graph.client.users.by_user_id(mailbox).calendar.get()
    except ConnectorError as exc:
        return CheckResult(f"{name}: calendar", False, str(exc),
                           "grant Calendars.ReadWrite and include the mailbox in the app's Exchange access scope "
                           "(docs/teams-setup.md, 'Restrict to the organizer mailbox')")
    return CheckResult(f"{name}: calendar", True, f"the app can use the calendar of {mailbox}")


async def _check_policy(name: str, settings: TeamsConfig, graph: GraphConnection, organizer: str | None,
                        create: bool) -> CheckResult:
    fix = POLICY_FIX.format(client=settings.client_id, organizer=settings.organizer)
    if organizer is None:
        return CheckResult(f"{name}: access policy", False,
                           "cannot test: the organizer's object id is unknown", "set organizer_id in config.yaml")
    meetings = graph.client.users.by_user_id(organizer).online_meetings
    try:
        with graph_errors("Teams application access policy", permission=MEETING_PERMISSION, mailbox=settings.organizer):
            if create:
                meeting = await meetings.create_or_get.post(CreateOrGetPostRequestBody(
                    external_id=CHECK_EXTERNAL_ID, subject="crisisbot check - can be ignored"))
                return CheckResult(f"{name}: access policy", True,
                                   f"test meeting created or reused: {meeting.join_web_url if meeting else '?'}")
            query = OnlineMeetingsRequestBuilder.OnlineMeetingsRequestBuilderGetQueryParameters(
                filter="JoinWebUrl eq 'https://teams.microsoft.com/l/meetup-join/crisisbot-check'")
            await meetings.get(RequestConfiguration(query_parameters=query))
    except ConnectorError as exc:
        if not create and _meeting_not_found(exc):  # the probe URL matches no meeting: the policy let us look
            return CheckResult(f"{name}: access policy", True, "onlineMeetings reachable (read-only probe)")
        if _status(exc) == 404 and _code(exc) in USER_NOT_FOUND:
            fix = f"organizer_id {organizer} is not a user of this tenant: copy the object id of {settings.organizer}"
        return CheckResult(f"{name}: access policy", False, str(exc), fix)
    return CheckResult(f"{name}: access policy", True,
                       "onlineMeetings reachable (read-only probe; run with --create-test-meeting to be certain)")


def _meeting_not_found(exc: ConnectorError) -> bool:
    """A Graph 404 about the meeting searched for - not the user, not a wrong endpoint (no Graph error code)."""
    code = _code(exc)
    return _status(exc) == 404 and bool(code) and code not in USER_NOT_FOUND


def _check_channel(name: str, config: TeamsChannelConfig) -> CheckResult:
    host = urlsplit(config.webhook_url.get_secret_value()).hostname or ""
    if host.endswith("webhook.office.com"):
        return CheckResult(f"{name}: webhook", False, "this is a retired Office 365 connector URL",
                           "create a Workflows flow 'Post to a channel when a webhook request is received' and use its URL")
    workflows = host.endswith((".logic.azure.com", ".api.powerplatform.com", ".logic.azure.us"))
    detail = "Workflows URL configured (not posted to: the check sends nothing)" if workflows else f"URL host {host}"
    return CheckResult(f"{name}: webhook", True, detail)


def _status(exc: ConnectorError) -> int | None:
    cause = exc.__cause__
    return cause.response_status_code if isinstance(cause, APIError) else None


def _code(exc: ConnectorError) -> str:
    error = getattr(exc.__cause__, "error", None)
    return getattr(error, "code", None) or ""


def _validation(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
