"""What a caller asks of the notify service: one message, to people, about an incident.

A playbook step, an escalation tier, a stand-down and a follow-up round all say the
same things: who (contact groups or people), which template, over which channels,
which images, by when, and how many must be reached. The incident's context comes
from the caller (a step's context, or one rebuilt by the lifecycle); the notify
service adds what is personal: language, links, attachments, idempotency key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from connectors.base import Snapshot
from crisisbot.models import Incident

if TYPE_CHECKING:
    from crisisbot.config.playbook import Playbook
    from crisisbot.config.settings import Site
    from crisisbot.services import StepServices

DEFAULT_IMAGE_BUDGET = 10_000_000  # bytes of images per message


class MessageContext(Protocol):
    """The incident a message is about, as a step context presents it (StepContext is one),
    with the services it is rendered through (templates, settings, personal links)."""

    services: "StepServices"
    incident: Incident
    playbook: "Playbook"
    site: "Site | None"
    outputs: dict[str, Any]
    log: logging.LoggerAdapter[Any] | logging.Logger

    def template_context(self) -> dict[str, Any]:
        """The variables every template sees."""
        ...


@runtime_checkable
class ImageOutput(Protocol):
    """A step output that carries camera images (the snapshot step's SnapshotSet)."""

    snapshots: list[Snapshot]
    failures: dict[str, str]


@dataclass(frozen=True, slots=True)
class Request:
    """Send `template` to the people behind `to`, once each (idempotent per step id)."""

    context: MessageContext
    step_id: str
    to: list[str]  # contact groups or people
    template: str
    via: list[str] | None = None  # ordered channels (mail connectors today); default mail.via
    attach: list[str] | None = None  # step ids whose images go along (default: every image output)
    max_attachment_bytes: int = DEFAULT_IMAGE_BUDGET
    require: Literal["any", "all"] | int = "any"  # how many must be reached, else the meta-alert
    timeout: float | None = None  # the message's deadline (default: incidents.step_timeout)
