"""What a trigger, connector or step author may import from crisisbot: the plugin API.

Why one module: plugins live outside this repository and are loaded by entry point
(`crisisbot.triggers`, `crisisbot.connectors`, `crisisbot.steps`). Everything listed in `__all__` is kept
stable across minor releases; anything else in crisisbot is internal and may move (the
core redesign of issue 13 moves a lot). Import from here, not from the modules below:

    from crisisbot.sdk import Trigger, AlarmSink, Alarm, Strict, Seconds, TransientError

The layers (docs/architecture.md) are enforced by the import contracts in
pyproject.toml ([tool.importlinter]): a trigger imports no connector and the reverse.
"""

from __future__ import annotations

from connectors.base import (
    AlertCard,
    BuffersFrames,
    Camera,
    CardPoster,
    Connector,
    EndsMeetings,
    Mailer,
    MeetingProvider,
    MeetingRequest,
    Services,
    Snapshot,
)
from crisisbot.config.types import (
    Identifier,
    Language,
    PlainText,
    Reference,
    Seconds,
    Strict,
    Templated,
    TimeZoneName,
)
from crisisbot.errors import (
    ConfigError,
    ConnectorError,
    CrisisbotError,
    InputRejected,
    NotReached,
    PermanentError,
    Problem,
    Replayed,
    StepFailed,
    TransientError,
)
from crisisbot.hubs import Hubs
from crisisbot.models import (
    Alarm,
    AlarmAction,
    Attachment,
    DeliveryResult,
    DeliveryStatus,
    EventKind,
    Incident,
    IncidentStatus,
    Meeting,
    OutgoingEmail,
    Recipient,
    Severity,
)
from crisisbot.clock import Clock, ManualClock
from crisisbot.retry import RetryPolicy
from crisisbot.notify import Request as NotifyRequest
from crisisbot.notify import notify_of
from crisisbot.steps.base import StepContext, StepServices, StepSpec, StepType
from crisisbot.store.base import Nonce
from triggers.base import AlarmSink, Trigger
from triggers.state import TriggerState

__all__ = [
    # triggers: an alarm input
    "Trigger", "AlarmSink", "TriggerState", "Nonce",
    # connectors: an output provider
    "Connector", "Mailer", "MeetingProvider", "MeetingRequest", "Camera", "Snapshot", "Services",
    "CardPoster", "AlertCard", "BuffersFrames", "EndsMeetings",
    # device connections a trigger and a connector share (crisisbot.hubs.modbus: the Modbus hub)
    "Hubs",
    # steps: a playbook action
    "StepSpec", "StepContext", "StepServices", "StepType",
    # a step that sends a message: `await notify_of(ctx.services).send(NotifyRequest(...))` (crisisbot.notify)
    "NotifyRequest", "notify_of",
    # time: every part reads the daemon's one clock; tests drive it with a ManualClock
    "Clock", "ManualClock",
    # the data every part exchanges
    "Alarm", "AlarmAction", "EventKind", "Severity", "Incident", "IncidentStatus", "Meeting",
    "Attachment", "Recipient", "OutgoingEmail", "DeliveryResult", "DeliveryStatus",
    # config types for a plugin's `Config` model
    "Strict", "Seconds", "Identifier", "Language", "PlainText", "TimeZoneName",
    # a step field naming a contact, connector, template, camera or earlier step: checked by `validate`
    "Reference", "Templated",
    # errors a plugin raises or catches
    "CrisisbotError", "ConfigError", "Problem", "ConnectorError", "TransientError", "PermanentError",
    "InputRejected", "Replayed", "StepFailed", "NotReached",
    # trying again: the one retry policy (backoff, attempts, deadline, Retry-After)
    "RetryPolicy",
]
