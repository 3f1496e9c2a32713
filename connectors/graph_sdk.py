"""The msgraph-sdk side of the Graph connectors: credential, HTTP pool, SDK client, warm-up.

Kept apart from connectors/graph_client.py (config and error mapping) because importing
msgraph, kiota and azure-identity costs over a second and ~1,300 modules, most of them
imported lazily by the first request. The connectors import this module in a thread
right after start, and `preload` walks the request builders and models they use and
fetches the first token, so the daemon is ready at once and the first alarm costs what
the tenth does.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import sys
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
from azure.core.credentials_async import AsyncTokenCredential
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_abstractions.serialization import ParseNode
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware import RetryHandler
from kiota_http.middleware.middleware import REQUEST_OPTIONS_KEY
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.entity import Entity
from msgraph_core import GraphClientFactory

from connectors.graph_client import (
    CLOUDS, CertificateCredential, GraphSettings, ManagedIdentity, SecretCredential,
)
from crisisbot.errors import PermanentError

log = logging.getLogger(__name__)


def _entity_fields(self: Entity) -> dict[str, Callable[[ParseNode], None]]:
    """What msgraph's Entity.get_field_deserializers returns, without its ~2,400 imports."""
    return {
        "id": lambda n: setattr(self, "id", n.get_str_value()),
        "@odata.type": lambda n: setattr(self, "odata_type", n.get_str_value()),
    }


# Every Graph model (OnlineMeeting, Event, Message, User…) derives from Entity, and the
# generated Entity.get_field_deserializers imports all ~1,200 entity modules of the SDK
# before returning just `id` and `@odata.type` (msgraph-sdk-python#584/#904, no upstream
# fix): the first answer parsed would cost ~30 MiB and a second of imports for classes
# never used. Replaced by the same two fields; subclasses still add theirs on top, and
# polymorphic answers import their class in create_from_discriminator_value as before.
# tests/test_graph_footprint.py checks it still returns what the generated method returns.
GENERATED_ENTITY_FIELDS = Entity.get_field_deserializers
Entity.get_field_deserializers = _entity_fields


def build_credential(settings: GraphSettings) -> AsyncTokenCredential:
    """An azure-identity async credential; it caches and refreshes tokens itself."""
    from azure.identity import aio

    cred = settings.credential
    common: dict[str, Any] = {"authority": settings.authority_host}
    if settings.ca_bundle:
        common["connection_verify"] = str(settings.ca_bundle)
    if settings.authority_host not in {login for _, login in CLOUDS.values()}:
        common["disable_instance_discovery"] = True  # never ask the public cloud about a private host
    if isinstance(cred, SecretCredential):
        return aio.ClientSecretCredential(
            settings.tenant_id, settings.client_id, cred.client_secret.get_secret_value(), **common
        )
    if isinstance(cred, CertificateCredential):
        password = cred.certificate_password.get_secret_value() if cred.certificate_password else None
        try:
            return aio.CertificateCredential(
                settings.tenant_id, settings.client_id, str(cred.certificate_path), password=password,
                send_certificate_chain=cred.send_certificate_chain, **common,
            )
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or "not a PEM/PKCS#12 certificate with its private key, or wrong password"
            raise PermanentError(f"cannot load the certificate {cred.certificate_path}: {reason}") from None
    if isinstance(cred, ManagedIdentity):
        return aio.ManagedIdentityCredential(client_id=cred.client_id)
    return aio.DefaultAzureCredential(authority=settings.authority_host)


class AtMostOnce(RetryHandlerOption):
    """Per-request retry option for a POST that must not be repeated (sendMail, send).

    A 429 means Graph did not process the request, so it is retried as usual; after a
    503/504 the message may or may not have gone out, so the answer goes back to the
    caller instead of being resent (kiota's handler would resend any POST)."""


class _BudgetRetryHandler(RetryHandler):
    """kiota's retry handler, but a wait longer than `max_wait` is not slept: the 429/503
    goes back to the caller at once, as a TransientError carrying Retry-After."""

    def __init__(self, options: RetryHandlerOption, max_wait: float) -> None:
        super().__init__(options)
        self.max_wait = max_wait

    def get_delay_time(self, retry_count: int, response: Any = None, delay: float = 0.0) -> float:
        wait = super().get_delay_time(retry_count, response, delay)
        return wait if wait <= self.max_wait else RetryHandlerOption.MAX_DELAY

    def should_retry(self, request: httpx.Request, options: RetryHandlerOption, response: httpx.Response) -> bool:
        if isinstance(options, AtMostOnce) and response.status_code != 429:
            return False
        return super().should_retry(request, options, response)


class GraphConnection:
    """One credential + one HTTP pool + the SDK client, opened and closed with the connector."""

    def __init__(self, settings: GraphSettings, credential: AsyncTokenCredential | None = None) -> None:
        self.settings = settings
        self.credential = credential if credential is not None else build_credential(settings)
        self._owns_credential = credential is None
        verify: Any = ssl.create_default_context(cafile=str(settings.ca_bundle)) if settings.ca_bundle else True
        timeout = httpx.Timeout(settings.request_timeout)
        # msgraph-core's transport wrapper does not forward aclose(): keep the pool to close it ourselves
        self._pool = httpx.AsyncHTTPTransport(verify=verify)
        self.http = httpx.AsyncClient(base_url=settings.graph_url or "", timeout=timeout, transport=self._pool)
        self.raw = httpx.AsyncClient(timeout=timeout, verify=verify)  # upload URLs: no bearer token
        options = RetryHandlerOption(delay=0.0, max_retries=settings.max_retries)
        self.at_most_once = AtMostOnce(delay=0.0, max_retries=settings.max_retries)
        middleware = [
            _BudgetRetryHandler(options, settings.max_retry_wait) if isinstance(m, RetryHandler) else m
            for m in KiotaClientFactory.get_default_middleware(None)
        ]
        GraphClientFactory.create_with_custom_middleware(middleware, client=self.http)
        auth = AzureIdentityAuthenticationProvider(
            self.credential, scopes=[settings.scope], allowed_hosts=[urlsplit(settings.graph_url or "").hostname or ""]
        )
        adapter = GraphRequestAdapter(auth, self.http)
        adapter.base_url = settings.graph_url or ""
        self.client = GraphServiceClient(request_adapter=adapter)

    async def close(self) -> None:
        await self.http.aclose()
        await self._pool.aclose()
        await self.raw.aclose()
        if self._owns_credential:
            await self.credential.close()

    async def touch(self) -> None:
        """One unauthenticated GET of the service root, never retried: opens the HTTPS
        connection the first real request will reuse."""
        no_retry = {RetryHandlerOption.get_key(): RetryHandlerOption(delay=0.0, max_retries=0, should_retry=False)}
        await self.http.get("/", extensions={REQUEST_OPTIONS_KEY: no_retry})

    async def token_claims(self) -> dict[str, Any]:
        """Claims of the current app token (unverified: only to tell the admin what is granted)."""
        token = (await self.credential.get_token(self.settings.scope, enable_cae=True)).token  # same cache entry as kiota's
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# Answers shaped like Graph's (documented examples): parsing them imports, once, the
# models the first real answers would import lazily.
_SAMPLES: dict[str, dict[str, Any]] = {
    "OnlineMeeting": {
        "id": "x", "joinWebUrl": "https://teams.microsoft.com/l/meetup-join/x", "subject": "s", "externalId": "x",
        "startDateTime": "2030-01-01T00:00:00Z", "endDateTime": "2030-01-01T01:00:00Z", "creationDateTime": "2030-01-01T00:00:00Z",
        "allowedPresenters": "organization", "isEntryExitAnnounced": True, "meetingType": "meetNow",
        "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": False},
        "audioConferencing": {"tollNumber": "+1", "conferenceId": "1", "tollNumbers": ["+1"], "dialinUrl": "https://x"},
        "chatInfo": {"threadId": "t", "messageId": "0", "replyChainMessageId": None},
        "joinInformation": {"content": "data:text/html,x", "contentType": "html"},
        "joinMeetingIdSettings": {"joinMeetingId": "1", "passcode": "p", "isPasscodeRequired": True},
        "participants": {"organizer": {"upn": "a@b", "role": "presenter", "identity": {"user": {"id": "u", "displayName": "d"}}},
                         "attendees": [{"upn": "a@b", "role": "attendee", "identity": {"user": {"id": "u"}}}]},
        "chatRestrictions": {"allowTextOnly": False}, "watermarkProtection": {"isEnabledForContentSharing": False},
    },
    "Event": {
        "id": "x", "subject": "s", "webLink": "https://x", "importance": "high", "isOnlineMeeting": True,
        "onlineMeetingProvider": "teamsForBusiness", "transactionId": "x", "showAs": "busy", "type": "singleInstance",
        "start": {"dateTime": "2030-01-01T00:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2030-01-01T01:00:00", "timeZone": "UTC"},
        "body": {"contentType": "html", "content": "x"}, "organizer": {"emailAddress": {"address": "a@b", "name": "n"}},
        "attendees": [{"type": "required", "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
                       "emailAddress": {"address": "a@b", "name": "n"}}],
        "onlineMeeting": {"joinUrl": "https://x", "conferenceId": "1", "tollNumber": "+1", "phones": [{"number": "+1", "type": "home"}]},
        "location": {"displayName": "", "locationType": "default", "address": {}, "coordinates": {}}, "locations": [],
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"}, "sensitivity": "normal",
        "singleValueExtendedProperties": [{"id": "x", "value": "x"}], "categories": [], "recurrence": None,
    },
    "User": {"id": "x", "userPrincipalName": "a@b", "mail": "a@b", "displayName": "d", "businessPhones": []},
    "UploadSession": {"uploadUrl": "https://x", "expirationDateTime": "2030-01-01T00:00:00Z", "nextExpectedRanges": ["0-"]},
    "Message": {"id": "x", "subject": "s", "body": {"contentType": "html", "content": "x"}, "importance": "normal",
                "toRecipients": [{"emailAddress": {"address": "a@b"}}], "from": {"emailAddress": {"address": "a@b"}},
                "flag": {"flagStatus": "notFlagged"}, "inferenceClassification": "focused", "isDraft": True},
    "ODataError": {"error": {"code": "c", "message": "m", "innerError": {"request-id": "r", "date": "2030-01-01T00:00:00"},
                             "details": [{"code": "c", "message": "m", "target": "t"}]}},
}


def preload(connection: "GraphConnection") -> int:
    """Import what the first requests would import lazily: the request builders of the
    paths the connectors call, the models their bodies and answers use, the JSON
    (de)serializers. Runs in a thread; returns how many modules it added."""
    before = len(sys.modules)
    from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
    from kiota_serialization_json.json_serialization_writer import JsonSerializationWriter

    from connectors import graph_models as m

    user = connection.client.users.by_user_id("warm-up")
    meetings = user.online_meetings
    _ = (meetings.create_or_get, meetings.by_online_meeting_id("x"), user.events, user.calendar, user.send_mail,
         user.messages.by_message_id("x").attachments.create_upload_session, user.messages.by_message_id("x").send)
    factory = JsonParseNodeFactory()
    for name, sample in _SAMPLES.items():
        cls = getattr(m, name)
        factory.get_root_parse_node("application/json", json.dumps(sample).encode()).get_object_value(cls)
        for wrapper in (m.EventCollectionResponse, m.OnlineMeetingCollectionResponse):
            body = json.dumps({"value": [_SAMPLES["Event" if wrapper is m.EventCollectionResponse else "OnlineMeeting"]]})
            factory.get_root_parse_node("application/json", body.encode()).get_object_value(wrapper)
    writer = JsonSerializationWriter()
    for model in (
        m.CreateOrGetPostRequestBody(external_id="x", participants=m.MeetingParticipants(
            attendees=[m.MeetingParticipantInfo(upn="a@b", role=m.OnlineMeetingRole.Attendee)])),
        m.OnlineMeeting(lobby_bypass_settings=m.LobbyBypassSettings(scope=m.LobbyBypassScope.Organization),
                        allowed_presenters=m.OnlineMeetingPresenters.Organization),
        m.SendMailPostRequestBody(message=m.Message(
            body=m.ItemBody(content_type=m.BodyType.Html, content="x"),
            to_recipients=[m.Recipient(email_address=m.EmailAddress(address="a@b"))],
            attachments=[m.FileAttachment(name="a", content_bytes=b"x")],
            internet_message_headers=[m.InternetMessageHeader(name="X-A", value="b")])),
    ):
        writer.write_object_value(None, model)
    return len(sys.modules) - before
