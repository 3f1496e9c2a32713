"""The notify service's pure parts: idempotency keys, the require rule, the channel shape."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from connectors.base import Mailer, Services
from crisisbot.models import DeliveryResult, DeliveryStatus, OutgoingEmail
from crisisbot.notify import delivery_key, message_id, required
from crisisbot.notify.channels import Channel, channels_of


def test_message_id_of_a_key_never_changes_across_releases():
    """A message resent after an upgrade must carry the Message-ID of its first attempt."""
    key = delivery_key("inc-20261129-0001", "convocation", "alice")
    assert key == "inc-20261129-0001:convocation:alice"
    assert message_id(key) == "<2ade2ad767c10744457dc60490155c6e@crisisbot>"


def test_require_rule_counts_people_never_more_than_there_are():
    assert [required("any", n) for n in (0, 1, 5)] == [0, 1, 1]
    assert required("all", 5) == 5
    assert required(3, 5) == 3 and required(9, 5) == 5


class _NoConfig(BaseModel):
    pass


class _Pager(Mailer):
    """A stand-in for a future channel kind: anything shaped like a mail connector."""

    async def send(self, messages: list[OutgoingEmail], sender: str) -> list[DeliveryResult]:
        return [DeliveryResult(m.key, m.recipient.email, DeliveryStatus.sent) for m in messages]


def test_mail_connectors_are_channels_taken_in_the_order_named():
    services = Services(data_dir=Path("."), root=Path("."))
    first, second = _Pager("first", _NoConfig(), services), _Pager("second", _NoConfig(), services)
    assert isinstance(first, Channel)
    chain = channels_of({"second": second, "first": first, "meeting": object()}, ["first", "meeting", "second", "gone"])
    assert chain == [first, second]
