"""Maintenance windows: planned silences per site or input.

During a silence alarms are still stored and audited, but routed to a reduced
playbook (the silence's, else `lifecycle.maintenance_playbook`) or only recorded.
Every silence is audited when added, ended or expired; its end is a persisted
timer, so it expires by itself even across restarts (and matching checks the end
time anyway).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable

from crisisbot.errors import SilenceRefused  # noqa: F401 - re-exported for existing importers
from crisisbot.clock import Clock
from crisisbot.store.records import SilenceRecord, TimerRecord
from crisisbot.models import Alarm, new_id

if TYPE_CHECKING:
    from crisisbot.config.bundle import Bundle
    from crisisbot.lifecycle.timers import TimerService
    from crisisbot.store.base import Store

log = logging.getLogger(__name__)

END = "silence.end"


class Maintenance:
    """`bundle`: the configuration in place (a reload swaps it), read at each use."""

    def __init__(self, store: "Store", bundle: "Callable[[], Bundle]", clock: Clock, timers: "TimerService") -> None:
        self.store = store
        self.bundle = bundle
        self.clock = clock
        self.timers = timers
        timers.register(END, self._expire, wall_clock=True)

    async def add(self, site: str, duration: float, reason: str, by: str, *, input: str | None = None,
                  playbook: str | None = None, starts_at: datetime | None = None,
                  silence_id: str | None = None) -> SilenceRecord:
        """`silence_id`: chosen by the caller so that asking twice adds one silence."""
        bundle = self.bundle()
        if site not in bundle.config.sites:
            raise SilenceRefused(f"unknown site '{site}'")
        if playbook is not None and bundle.playbook(playbook) is None:
            raise SilenceRefused(f"unknown playbook '{playbook}'")
        if duration <= 0 or not reason.strip():
            raise SilenceRefused("a silence needs a positive duration and a reason")
        start = starts_at or self.clock.now()
        silence = SilenceRecord(silence_id or new_id()[:12], site, start, start + timedelta(seconds=duration), reason, by,
                                input, playbook)
        await self.store.add_silence(silence)
        await self.timers.schedule([TimerRecord(f"silence:{silence.id}:end", END, silence.ends_at, None,
                                                {"silence": silence.id})])
        log.info("silence %s on %s%s until %s: %s", silence.id, site, f"/{input}" if input else "",
                 silence.ends_at.isoformat(), reason)
        return silence

    async def end(self, silence_id: str, by: str) -> bool:
        return await self.store.end_silence(silence_id, self.clock.now(), "silence.ended", f"ended by {by}")

    async def _expire(self, timer: TimerRecord) -> None:
        await self.store.end_silence(timer.payload["silence"], self.clock.now(), "silence.expired",
                                             "planned end reached")

    async def active_for(self, alarm: Alarm) -> SilenceRecord | None:
        now = self.clock.now()
        for silence in await self.store.list_silences(active_at=now):
            if silence.covers(alarm.site, alarm.input, alarm.zone, now):
                return silence
        return None

    def reduced_playbook(self, silence: SilenceRecord) -> str | None:
        return silence.playbook or self.bundle().config.lifecycle.maintenance_playbook
