"""A test stand-in for the engine as triggers see it (our own interface, not a protocol):
records alarms, can hold (`gate`) or fail (`fail`) the next submissions."""

from __future__ import annotations

import asyncio

from crisisbot.models import Alarm, EventKind
from crisisbot.store.base import Nonce


class RecordingSink:
    def __init__(self) -> None:
        self.alarms: list[Alarm] = []
        self.changed = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.fail = 0
        self.sites: set[str] | None = None  # None: every site is known

    def known_site(self, site: str) -> bool:
        return self.sites is None or site in self.sites

    async def submit(self, alarm: Alarm, nonce: Nonce | None = None) -> str:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise OSError("disk full")
        self.alarms.append(alarm)
        self.changed.set()
        return alarm.id

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Alarm]:
        async with asyncio.timeout(timeout):
            while len(self.alarms) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.alarms

    def of(self, kind: EventKind) -> list[Alarm]:
        return [a for a in self.alarms if a.kind is kind]
