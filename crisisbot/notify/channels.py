"""The ways a message reaches a person, tried in order: what one channel could not
deliver by the deadline moves on to the next (crisisbot.delivery does the failover).

Email is the first kind: each mail connector of `mail.via` (a relay, a second relay,
Graph, the local outbox) is one channel. An SMS, Teams chat or voice connector joins
the chain by offering the same three things: a name, `prepare`, and `send_each`
reporting one verdict per message as it comes.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

from connectors.base import Mailer, ResultCallback
from crisisbot.models import DeliveryResult, OutgoingEmail

log = logging.getLogger(__name__)


@runtime_checkable
class Channel(Protocol):
    name: str

    def prepare(self, count: int) -> None:
        """`count` messages are coming: connect while they are rendered."""

    async def send_each(self, messages: list[OutgoingEmail], sender: str,
                        on_result: ResultCallback) -> list[DeliveryResult]:
        """Deliver each message, reporting each verdict as soon as it is known; never raise per person."""
        ...


def channels_of(connectors: dict[str, Any], names: list[str]) -> list[Mailer]:
    """The running connectors named, in order; a name that is not a channel is skipped."""
    return [c for c in (connectors.get(n) for n in names) if isinstance(c, Mailer)]
