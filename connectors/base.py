"""The small interfaces every output provider implements.

A connector module holds one class deriving from one of these bases, a pydantic
`Config` model (extra keys forbidden, secrets as `SecretStr`) and nothing global.
It is registered under the `crisisbot.connectors` entry-point group, e.g.

    [project.entry-points."crisisbot.connectors"]
    smtp = "connectors.smtp:SmtpMailer"

The daemon builds one instance per entry of `connectors:` in config.yaml (cameras:
one per camera of a site), calls `start()` once, and `stop()` at shutdown.
Connectors raise `TransientError` (retry may help) or `PermanentError`; they never
log-and-return-None.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from crisisbot.hubs import Hubs
from crisisbot.models import Attachment, DeliveryResult, Meeting, OutgoingEmail, Recipient


class Connector(ABC):
    """Base of every provider; `kind` tells which capability it offers."""

    kind: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    # modules it imports on first use rather than at start; the daemon imports them in the
    # background right after it is ready (crisisbot/warmup.py), so no alarm pays for them
    deferred_imports: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, config: BaseModel, services: "Services") -> None:
        self.name = name
        self.config = config
        self.services = services
        self.log = logging.getLogger(f"crisisbot.connector.{name}")

    async def start(self) -> None:
        """Open long-lived resources (pools, sessions); default: nothing to do."""

    async def stop(self) -> None:
        """Release what `start` opened."""


@dataclass(slots=True)
class Services:
    """What the daemon lends to connectors, instead of them importing globals."""

    data_dir: Path  # where connectors may keep files (outbox, caches)
    root: Path  # directory of config.yaml: relative paths in connector configs start here
    organization: str = "crisisbot"
    sender: str = "crisisbot <crisisbot@localhost>"
    # the installation's secret (var/secret.key): a connector that must derive something
    # stable and unguessable from it (Jitsi room names) gets it typed, not from a bag of extras
    secret_key: bytes | None = None
    hubs: Hubs = field(default_factory=Hubs)  # device connections shared with triggers (Modbus)


@dataclass(slots=True)
class MeetingRequest:
    incident_id: str  # providers that can must use it as an idempotency key
    subject: str
    start: datetime
    end: datetime
    attendees: list[Recipient] = field(default_factory=list)
    organizer_note: str = ""


class MeetingProvider(Connector):
    kind = "meeting"

    @abstractmethod
    async def open_meeting(self, request: MeetingRequest) -> Meeting:
        """Open (or find again, for the same incident id) the crisis meeting."""


@runtime_checkable
class EndsMeetings(Protocol):
    """A meeting provider that can close its meeting at stand-down (`stand_down.meeting: end`)."""

    async def end_meeting(self, meeting: Meeting) -> None: ...


ResultCallback = Callable[[DeliveryResult], Awaitable[None]]


class Mailer(Connector):
    kind = "mail"

    @abstractmethod
    async def send(self, messages: list[OutgoingEmail], sender: str) -> list[DeliveryResult]:
        """Deliver each message; return one result per message, never raise per recipient."""

    def prepare(self, count: int) -> None:
        """Hint that `count` messages are about to be sent: a transport may start
        connecting now, while the messages are still being rendered. Default: nothing."""

    async def send_each(
        self, messages: list[OutgoingEmail], sender: str, on_result: ResultCallback
    ) -> list[DeliveryResult]:
        """Like `send`, but report each verdict as soon as it is known.

        The engine records every verdict durably on arrival, so a crash in the
        middle of a large batch does not resend what was already accepted.
        Override this when the transport learns verdicts one by one (SMTP does).
        """
        results = await self.send(messages, sender)
        for result in results:
            await on_result(result)
        return results


@dataclass(slots=True)
class AlertCard:
    """What a channel post shows; built by the channel_card step from the incident."""

    title: str
    facts: list[tuple[str, str]]
    join_url: str | None = None
    snapshots: tuple["Snapshot", ...] = ()
    drill: bool = False


class CardPoster(Connector):
    """A chat channel the people on watch read (a Teams channel's Workflows webhook)."""

    kind = "channel"

    @abstractmethod
    async def post_alert(self, alert: AlertCard) -> dict[str, Any]:
        """Post the alert; returns the payload sent (for the incident log)."""


@dataclass(slots=True)
class Snapshot:
    camera: str
    taken_at: datetime
    image: Attachment


class Camera(Connector):
    kind = "camera"

    @abstractmethod
    async def snapshot(self) -> Snapshot:
        """Grab one current JPEG frame."""


@runtime_checkable
class BuffersFrames(Protocol):
    """A camera that keeps a ring of recent frames, so the snapshot step can add those
    from just before the alarm (the intruder is often gone by the time it fires)."""

    def prealarm(self, since: datetime) -> list[Snapshot]: ...
