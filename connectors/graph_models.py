"""The msgraph-sdk models and request types the Graph connectors build, in one place.

Importing this module costs what msgraph costs (about a second): the connectors import
it through `models()` only once the SDK is open (see GraphConnector), never at config time.
"""

from __future__ import annotations

from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.attachment_item import AttachmentItem
from msgraph.generated.models.attachment_type import AttachmentType
from msgraph.generated.models.attendee import Attendee
from msgraph.generated.models.attendee_type import AttendeeType
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.event import Event
from msgraph.generated.models.event_collection_response import EventCollectionResponse
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.importance import Importance
from msgraph.generated.models.internet_message_header import InternetMessageHeader
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.lobby_bypass_scope import LobbyBypassScope
from msgraph.generated.models.lobby_bypass_settings import LobbyBypassSettings
from msgraph.generated.models.meeting_participant_info import MeetingParticipantInfo
from msgraph.generated.models.meeting_participants import MeetingParticipants
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.online_meeting import OnlineMeeting
from msgraph.generated.models.online_meeting_collection_response import OnlineMeetingCollectionResponse
from msgraph.generated.models.online_meeting_presenters import OnlineMeetingPresenters
from msgraph.generated.models.online_meeting_provider_type import OnlineMeetingProviderType
from msgraph.generated.models.online_meeting_role import OnlineMeetingRole
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.models.single_value_legacy_extended_property import SingleValueLegacyExtendedProperty
from msgraph.generated.models.upload_session import UploadSession
from msgraph.generated.models.user import User
from msgraph.generated.users.item.events.events_request_builder import EventsRequestBuilder
from msgraph.generated.users.item.messages.item.attachments.create_upload_session.create_upload_session_post_request_body import (
    CreateUploadSessionPostRequestBody,
)
from msgraph.generated.users.item.online_meetings.create_or_get.create_or_get_post_request_body import (
    CreateOrGetPostRequestBody,
)
from msgraph.generated.users.item.online_meetings.online_meetings_request_builder import (
    OnlineMeetingsRequestBuilder,
)
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody

__all__ = [
    "APIError", "AttachmentItem", "AttachmentType", "Attendee", "AttendeeType", "BodyType", "CreateOrGetPostRequestBody",
    "CreateUploadSessionPostRequestBody", "DateTimeTimeZone", "EmailAddress", "Event", "EventCollectionResponse",
    "EventsRequestBuilder", "FileAttachment", "Importance", "InternetMessageHeader", "ItemBody", "LobbyBypassScope",
    "LobbyBypassSettings", "MeetingParticipantInfo", "MeetingParticipants", "Message", "ODataError", "OnlineMeeting",
    "OnlineMeetingCollectionResponse", "OnlineMeetingPresenters", "OnlineMeetingProviderType", "OnlineMeetingRole",
    "OnlineMeetingsRequestBuilder", "Recipient", "RequestConfiguration", "SendMailPostRequestBody",
    "SingleValueLegacyExtendedProperty", "UploadSession", "User",
]
