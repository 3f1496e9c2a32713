"""Microsoft Teams meetings through Microsoft Graph (app-only).

Two modes, both idempotent on the incident id so a retry after a crash finds the
meeting again instead of opening a second one:

- `calendar` (least privilege: Calendars.ReadWrite): a calendar event of the organizer
  mailbox with a Teams meeting; Exchange sends the invitations to the attendees. The
  event carries the incident id in a single-value extended property (looked up first)
  and as `transactionId` (Graph drops a duplicate POST).
- `online-meeting` (OnlineMeetings.ReadWrite.All + a Teams application access policy):
  `onlineMeetings/createOrGet` with `externalId` = incident id; no invitation is sent,
  crisisbot emails the join link itself.

Lobby bypass and presenters are not parameters of createOrGet (Graph v1.0 metadata: it
takes externalId, subject, start/end, participants, chatInfo), so they are set with a
PATCH of the online meeting carrying only those two properties (in calendar mode only
when configured, since that needs the OnlineMeetings permission too). Once the meeting
exists its join URL is always handed out: a failed PATCH becomes a warning on the
Meeting (the step puts it on the timeline), never a fallback that orphans the meeting.
A dropped connection during createOrGet is retried: the call is idempotent by externalId.
"""

from __future__ import annotations

import asyncio
import html
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import Field, model_validator

from connectors.base import Meeting, MeetingProvider, MeetingRequest, Services
from connectors.graph_client import GraphConnector, GraphSettings, graph_errors, sdk_models
from crisisbot.config.types import Seconds
from crisisbot.errors import ConnectorError, PermanentError, TransientError
from crisisbot.retry import RetryPolicy

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from connectors import graph_models as m
else:
    m = sdk_models  # msgraph's models, imported on first use (see connectors/graph_client.py)

# A named MAPI property in crisisbot's own GUID namespace: holds the incident id on the event.
INCIDENT_PROPERTY = "String {6f0c2a5e-5b1f-4c1e-9d55-2b8f3c9a7e41} Name crisisbotIncidentId"
CALENDAR_PERMISSION = "Calendars.ReadWrite"
MEETING_PERMISSION = "OnlineMeetings.ReadWrite.All"
USER_PERMISSION = "User.Read.All (or User.ReadBasic.All; avoid it by setting organizer_id)"
# Needed to send/receive the newer lobby scopes ("invited", "organizationExcludingGuests").
UNKNOWN_ENUMS = {"Prefer": "include-unknown-enum-members"}

LobbyScope = Literal["organizer", "organization", "organizationAndFederated", "everyone", "invited",
                     "organizationExcludingGuests"]
Presenters = Literal["everyone", "organization", "roleIsPresenter", "organizer"]


class TeamsConfig(GraphSettings):
    type: Literal["teams"]
    mode: Literal["calendar", "online-meeting"] = Field(
        "calendar", description="calendar: event + invitations (Calendars.ReadWrite); "
        "online-meeting: createOrGet, crisisbot mails the link (OnlineMeetings.ReadWrite.All + access policy)",
    )
    organizer: str = Field(description="UPN/mail of the mailbox that owns the meetings, e.g. crisis@contoso.com")
    organizer_id: str | None = Field(
        None, description="its Entra object id; needed by onlineMeetings, looked up (User.Read.All) when absent"
    )
    subject: str = Field("Crisis room", description="used when the playbook gives no subject")
    duration: Seconds = Field(7200.0, gt=0, description="used when the request has no end after its start")
    lobby_bypass: LobbyScope | None = Field(
        None, description="who skips the lobby; default: organization in online-meeting mode, "
        "the tenant meeting policy in calendar mode (setting it there needs OnlineMeetings.ReadWrite.All)",
    )
    dial_in_bypass: bool = Field(False, description="phone dial-in callers skip the lobby too")
    allowed_presenters: Presenters | None = Field(
        None, description="default: organization in online-meeting mode, the tenant policy in calendar mode"
    )

    @model_validator(mode="after")
    def _mode_defaults(self) -> "TeamsConfig":
        if self.mode == "online-meeting":
            self.lobby_bypass = self.lobby_bypass or "organization"
            self.allowed_presenters = self.allowed_presenters or "organization"
        return self

    @property
    def patches_meeting(self) -> bool:
        return self.lobby_bypass is not None or self.allowed_presenters is not None

    def required_permissions(self) -> list[str]:
        """Application permissions this configuration uses at run time."""
        if self.mode == "online-meeting":
            return [MEETING_PERMISSION]
        return [CALENDAR_PERMISSION] + ([MEETING_PERMISSION] if self.patches_meeting else [])


class TeamsMeetings(GraphConnector, MeetingProvider):
    """Opens (or finds again) the incident's Teams meeting."""

    Config = TeamsConfig
    config: TeamsConfig

    def __init__(self, name: str, config: TeamsConfig, services: Services, *, credential: "AsyncTokenCredential | None" = None) -> None:
        super().__init__(name, config, services, credential=credential)
        self._organizer_id = config.organizer_id

    async def open_meeting(self, request: MeetingRequest) -> Meeting:
        start = _utc(request.start)
        end = _utc(request.end) if request.end > request.start else start + timedelta(seconds=self.config.duration)
        subject = request.subject or self.config.subject
        if self.config.mode == "online-meeting":
            meeting = await self._create_or_get(request, subject, start, end)
        else:
            meeting = await self._calendar_event(request, subject, start, end)
        self.log.info("teams meeting %s for incident %s", meeting.meeting_id, request.incident_id)
        return meeting

    # -- mode online-meeting ---------------------------------------------------------------

    async def _create_or_get(self, request: MeetingRequest, subject: str, start: datetime, end: datetime) -> Meeting:
        organizer = await self.organizer_id()
        body = m.CreateOrGetPostRequestBody(
            external_id=request.incident_id, subject=subject, start_date_time=start, end_date_time=end,
            participants=m.MeetingParticipants(attendees=[
                m.MeetingParticipantInfo(upn=r.email, role=m.OnlineMeetingRole.Attendee) for r in request.attendees
            ]),
        )
        online = await self._post_create_or_get(organizer, body)
        if online is None or not online.join_web_url or not online.id:
            raise TransientError("create the Teams meeting: Graph answered without a join URL")
        warnings: list[str] = []
        online = await self._apply_options(organizer, online, warnings)
        return Meeting(
            provider="teams", join_url=online.join_web_url or "", meeting_id=online.id or "", subject=subject,
            start=start, end=end, dial_in=_dial_in(online), warnings=warnings,
        )

    async def _post_create_or_get(self, organizer: str, body: m.CreateOrGetPostRequestBody) -> m.OnlineMeeting | None:
        """createOrGet, sent again when the connection drops or hangs: the same externalId returns
        the same meeting, so a retry cannot open a second one. The step deadline bounds the loop."""
        builder = (await self.graph()).client.users.by_user_id(organizer).online_meetings.create_or_get
        policy = RetryPolicy(first=0.25, cap=self.config.max_retry_wait, attempts=self.config.max_retries + 1)

        def connection_lost(exc: BaseException) -> bool:
            return isinstance(exc, TransientError) and isinstance(exc.__cause__, httpx.TransportError)

        def log_retry(exc: BaseException, pause: float) -> None:
            self.log.info("createOrGet for %s lost its connection (%s); retrying in %.2fs",
                          body.external_id, type(exc.__cause__).__name__, pause)

        async for attempt in policy.retrying(retry_on=connection_lost, before_sleep=log_retry):
            with attempt:
                with graph_errors("create the Teams meeting", permission=MEETING_PERMISSION, mailbox=self.config.organizer):
                    online = await builder.post(body)
        return online

    # -- mode calendar ---------------------------------------------------------------------

    async def _calendar_event(self, request: MeetingRequest, subject: str, start: datetime, end: datetime) -> Meeting:
        events = (await self.graph()).client.users.by_user_id(self.config.organizer).events
        event = await self._find_event(request.incident_id)
        if event is None:
            note = html.escape(request.organizer_note or subject)
            body = m.Event(
                subject=subject, body=m.ItemBody(content_type=m.BodyType.Html, content=f"<p>{note}</p>"),
                start=_slot(start), end=_slot(end), importance=m.Importance.High, allow_new_time_proposals=False,
                is_online_meeting=True, online_meeting_provider=m.OnlineMeetingProviderType.TeamsForBusiness,
                attendees=[
                    m.Attendee(email_address=m.EmailAddress(address=r.email, name=r.name), type=m.AttendeeType.Required)
                    for r in request.attendees
                ],
                transaction_id=request.incident_id,
                single_value_extended_properties=[
                    m.SingleValueLegacyExtendedProperty(id=INCIDENT_PROPERTY, value=request.incident_id)
                ],
            )
            with graph_errors("create the calendar event", permission=CALENDAR_PERMISSION, mailbox=self.config.organizer):
                event = await events.post(body)
        join_url = event.online_meeting.join_url if event and event.online_meeting else None
        if event is None or not event.id or not join_url:
            raise TransientError("create the calendar event: Teams has not attached a join URL yet")
        warnings: list[str] = []
        if self.config.patches_meeting:
            try:
                await self._patch_by_join_url(join_url, warnings)
            except ConnectorError as exc:  # the event exists and the invitations are out: keep the link
                warnings.append(f"lobby and presenters not set: {exc}")
        info = event.online_meeting
        dial_in = f"{info.toll_number},,{info.conference_id}#" if info and info.toll_number and info.conference_id else None
        return Meeting(provider="teams", join_url=join_url, meeting_id=event.id, subject=event.subject or subject,
                       start=start, end=end, dial_in=dial_in, warnings=warnings)

    async def _find_event(self, incident_id: str) -> m.Event | None:
        """The event an earlier attempt created for this incident, if any."""
        value = incident_id.replace("'", "''")
        query = m.EventsRequestBuilder.EventsRequestBuilderGetQueryParameters(
            filter=f"singleValueExtendedProperties/Any(ep: ep/id eq '{INCIDENT_PROPERTY}' and ep/value eq '{value}')",
            select=["id", "subject", "start", "end", "onlineMeeting", "webLink"], top=1,
        )
        with graph_errors("look up the incident's calendar event", permission=CALENDAR_PERMISSION, resource="calendar",
                          mailbox=self.config.organizer):
            found = await (await self.graph()).client.users.by_user_id(self.config.organizer).events.get(
                m.RequestConfiguration(query_parameters=query)
            )
        return found.value[0] if found and found.value else None

    async def _patch_by_join_url(self, join_url: str, warnings: list[str]) -> None:
        organizer = await self.organizer_id()
        query = m.OnlineMeetingsRequestBuilder.OnlineMeetingsRequestBuilderGetQueryParameters(
            filter=f"JoinWebUrl eq '{join_url}'"
        )
        with graph_errors("find the event's Teams meeting to set the lobby", permission=MEETING_PERMISSION,
                          resource="the event's online meeting",
                          mailbox=self.config.organizer):
            found = await (await self.graph()).client.users.by_user_id(organizer).online_meetings.get(
                m.RequestConfiguration(query_parameters=query)
            )
        if not found or not found.value:
            raise TransientError("find the event's Teams meeting: not visible yet")
        await self._apply_options(organizer, found.value[0], warnings)

    # -- shared ----------------------------------------------------------------------------

    async def _apply_options(self, organizer: str, online: m.OnlineMeeting, warnings: list[str]) -> m.OnlineMeeting:
        """PATCH lobby bypass and presenters unless the meeting already has them (retries).

        The meeting exists by now: a failure here (refused, throttled, no answer in time)
        is added to `warnings` and the meeting is returned as it is, so its link goes out."""
        cfg = self.config
        lobby = online.lobby_bypass_settings
        wanted_lobby = m.LobbyBypassScope(cfg.lobby_bypass) if cfg.lobby_bypass else None
        wanted_presenters = m.OnlineMeetingPresenters(cfg.allowed_presenters) if cfg.allowed_presenters else None
        lobby_ok = wanted_lobby is None or (
            lobby is not None and lobby.scope == wanted_lobby and bool(lobby.is_dial_in_bypass_enabled) == cfg.dial_in_bypass
        )
        presenters_ok = wanted_presenters is None or online.allowed_presenters == wanted_presenters
        if lobby_ok and presenters_ok:
            return online
        # only the properties meant to change: a model built with odata_type=None, or a field
        # assigned None, would be sent as a key Graph refuses (msgraph-sdk-python issue #440)
        patch = m.OnlineMeeting()
        if not lobby_ok and wanted_lobby is not None:
            patch.lobby_bypass_settings = m.LobbyBypassSettings(scope=wanted_lobby, is_dial_in_bypass_enabled=cfg.dial_in_bypass)
        if not presenters_ok and wanted_presenters is not None:
            patch.allowed_presenters = wanted_presenters
        config: m.RequestConfiguration[Any] = m.RequestConfiguration()
        config.headers.add_all(UNKNOWN_ENUMS)
        item = (await self.graph()).client.users.by_user_id(organizer).online_meetings.by_online_meeting_id(online.id or "")
        try:
            async with asyncio.timeout(cfg.request_timeout):  # retries of a throttled PATCH must not eat the step
                with graph_errors("set the meeting's lobby and presenters", permission=MEETING_PERMISSION,
                                  mailbox=cfg.organizer, resource=f"online meeting {online.id}"):
                    updated = await item.patch(patch, config)
        except (ConnectorError, TimeoutError) as exc:
            reason = str(exc) or f"no answer within {cfg.request_timeout:.0f}s"
            warnings.append(f"lobby and presenters not set (the meeting is open with the tenant's defaults): {reason}")
            return online
        return updated if updated is not None and updated.join_web_url else online

    async def organizer_id(self) -> str:
        """The organizer's object id (onlineMeetings needs it), looked up once if not configured."""
        if self._organizer_id is None:
            with graph_errors("look up the organizer", permission=USER_PERMISSION, mailbox=self.config.organizer):
                user = await (await self.graph()).client.users.by_user_id(self.config.organizer).get()
            if user is None or not user.id:
                raise PermanentError(f"look up the organizer: no id for {self.config.organizer}")
            self._organizer_id = user.id
        return self._organizer_id


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _slot(moment: datetime) -> m.DateTimeTimeZone:
    return m.DateTimeTimeZone(date_time=moment.strftime("%Y-%m-%dT%H:%M:%S"), time_zone="UTC")


def _dial_in(online: m.OnlineMeeting) -> str | None:
    audio = online.audio_conferencing
    if audio and audio.toll_number and audio.conference_id:
        return f"{audio.toll_number},,{audio.conference_id}#"
    return None
