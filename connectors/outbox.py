"""Local outbox: each message becomes a real `.eml` file (the embedded default).

Lets a new installation see exactly what the committee would receive, with no
mail server; also a last-resort fallback so a message is never simply lost.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from connectors.base import Mailer
from crisisbot.config.types import Strict
from crisisbot.mime import to_bytes
from crisisbot.models import DeliveryResult, DeliveryStatus, OutgoingEmail


class OutboxConfig(Strict):
    type: Literal["outbox"]
    directory: str = Field("{data}/outbox", description="where .eml files are written")


class OutboxMailer(Mailer):
    Config = OutboxConfig
    config: OutboxConfig

    @property
    def directory(self) -> Path:
        path = Path(self.config.directory.replace("{data}", str(self.services.data_dir)))
        return path if path.is_absolute() else self.services.root / path

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    async def send(self, messages: list[OutgoingEmail], sender: str) -> list[DeliveryResult]:
        return await asyncio.to_thread(self._write_all, messages, sender)

    def _write_all(self, messages: list[OutgoingEmail], sender: str) -> list[DeliveryResult]:
        results = []
        for message in messages:
            name = message.key.replace(":", "_") + ".eml"
            target = self.directory / name
            try:
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(to_bytes(message, sender))
                os.replace(tmp, target)  # a reader never sees half a message
            except (OSError, ValueError) as exc:  # ValueError: a message that cannot be encoded
                results.append(DeliveryResult(message.key, message.recipient.email, DeliveryStatus.failed,
                                              f"cannot write {target}: {getattr(exc, 'strerror', None) or exc}", self.name))
                continue
            results.append(DeliveryResult(message.key, message.recipient.email, DeliveryStatus.sent,
                                          f"written to {target}", self.name))
        return results
