"""The normalized shapes every trigger produces and every connector consumes.

Triggers speak many protocols (Modbus bits, SIA frames, JSON); playbooks must not care,
so everything is reduced to one `Alarm` before matching.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class Severity(str, Enum):
    info = "info"
    minor = "minor"
    major = "major"
    critical = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


class EventKind(str, Enum):
    panic = "panic"  # hold-up / panic button
    intrusion = "intrusion"
    fire = "fire"
    tamper = "tamper"
    trouble = "trouble"
    restore = "restore"
    test = "test"
    input_fault = "input_fault"  # a device or panel stopped answering
    technical = "technical"
    other = "other"


class AlarmAction(str, Enum):
    """PagerDuty-style action: most inputs only ever `trigger`."""

    trigger = "trigger"
    acknowledge = "acknowledge"
    resolve = "resolve"


class Alarm(BaseModel):
    """One alarm as every playbook sees it, whatever the input that raised it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id)
    source: str  # trigger instance name, e.g. "webhook" or "panel-paris"
    site: str
    zone: str | None = None
    input: str | None = None
    kind: EventKind = EventKind.panic
    severity: Severity = Severity.critical
    label: str = ""
    action: AlarmAction = AlarmAction.trigger
    dedup_key: str | None = None
    occurred_at: datetime = Field(default_factory=utcnow)
    received_at: datetime = Field(default_factory=utcnow)
    drill: bool = False
    details: dict[str, Any] = Field(default_factory=dict)
    links: list[dict[str, str]] = Field(default_factory=list)
    raw: str | None = None  # the frame/payload as received, for the incident log


class IncidentStatus(str, Enum):
    """The incident's state, for humans: is someone on it, is it over?

    Whether the playbook worked is a separate question (`PlaybookOutcome`): an
    incident stays `open` after its playbook ended, until someone stands it down.
    """

    open = "open"  # nobody has taken it yet (the acknowledgement rule is not met)
    acknowledged = "acknowledged"  # the playbook's acknowledgement rule is met
    resolved = "resolved"
    false_alarm = "false_alarm"
    cancelled = "cancelled"

    @property
    def active(self) -> bool:
        """Still under way: new alarms may join it, escalation may go on."""
        return self in (IncidentStatus.open, IncidentStatus.acknowledged)


class PlaybookOutcome(str, Enum):
    """What the playbook achieved, apart from the incident's state."""

    running = "running"
    done = "done"  # every step did its job
    done_with_failures = "done_with_failures"  # something failed, but every notification reached someone
    failed = "failed"  # a notification step reached nobody, or the playbook stopped on a failure
    stopped = "stopped"  # stood down or cancelled before the playbook ended


class DeliveryStatus(str, Enum):
    pending = "pending"
    sending = "sending"  # handed to a transport; a crash now may deliver it twice (same Message-ID)
    retrying = "retrying"  # not delivered yet; kept in the outgoing spool and retried in the background
    sent = "sent"
    rejected = "rejected"  # refused for good (5xx): another try would be refused too
    failed = "failed"  # given up: the incident ended before any transport took it


@dataclass(slots=True)
class Incident:
    id: str
    site: str
    playbook: str
    status: IncidentStatus
    opened_at: datetime
    updated_at: datetime
    title: str = ""
    drill: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    outcome: PlaybookOutcome = PlaybookOutcome.running


@dataclass(slots=True)
class Meeting:
    """What a meeting provider returns: enough to invite people and to find it again."""

    provider: str
    join_url: str
    meeting_id: str
    subject: str
    start: datetime
    end: datetime
    dial_in: str | None = None
    ics: bytes | None = None  # calendar invitation to attach, when the provider sends none itself
    # what went wrong after the meeting existed (e.g. lobby not set): the link is still handed
    # out, and the meeting step puts these on the timeline
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(slots=True)
class Recipient:
    person_id: str
    name: str
    email: str
    language: str
    roles: tuple[str, ...] = ()
    external: bool = False


@dataclass(slots=True)
class OutgoingEmail:
    """One personal message; `key` makes its delivery idempotent across restarts."""

    key: str
    recipient: Recipient
    subject: str
    text: str
    html: str
    attachments: list[Attachment] = field(default_factory=list)
    message_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # the MIME bytes, frozen once: every resend carries exactly these


@dataclass(slots=True)
class DeliveryResult:
    key: str
    address: str
    status: DeliveryStatus
    detail: str = ""
    transport: str = ""
    # False when another attempt through the same mailer cannot help (credential refused,
    # verdict unknown): the delivery chain moves on to the next mailer at once
    retryable: bool = True
