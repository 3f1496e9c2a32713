"""Time as a dependency: one clock for the whole daemon. The engine's join windows, the
duty rosters, timers, escalations, drills, silences, image retention and link expiry
all read the clock the runtime was built with, so tests drive any of them by
advancing a `ManualClock` instead of sleeping.

A clock has two readings: `now()`, the wall clock timers are stored in, which an NTP
correction or an operator can step; and `elapsed()`, seconds that only ever run
forward at the real rate, suspend included (Linux `CLOCK_BOOTTIME`). Comparing the
two tells a step of the wall clock from time really passing (docs/lifecycle.md,
"Clock steps")."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol

# CLOCK_BOOTTIME keeps counting while a VM or laptop is suspended (time really passed);
# CLOCK_MONOTONIC would not. Elsewhere, monotonic is the best the platform offers.
_ELAPSED = getattr(time, "CLOCK_BOOTTIME", None)


class Clock(Protocol):
    def now(self) -> datetime: ...

    def elapsed(self) -> float:
        """Seconds since an arbitrary origin; never steps, counts suspended time."""
        ...

    async def sleep_until(self, when: datetime) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def elapsed(self) -> float:
        return time.clock_gettime(_ELAPSED) if _ELAPSED is not None else time.monotonic()

    async def sleep_until(self, when: datetime) -> None:
        await asyncio.sleep(max(0.0, (when - self.now()).total_seconds()))


class ManualClock:
    """A clock that moves only when a test calls `advance`/`set` (time passes) or
    `step` (the wall clock is corrected, no time passes)."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._elapsed = 0.0
        self._moved = asyncio.Condition()

    def now(self) -> datetime:
        return self._now

    def elapsed(self) -> float:
        return self._elapsed

    async def set(self, when: datetime) -> None:
        """Let time pass until `when`."""
        self._elapsed += max(0.0, (when - self._now).total_seconds())
        await self._move(when)

    async def advance(self, **delta: float) -> None:
        await self.set(self._now + timedelta(**delta))

    async def step(self, **delta: float) -> None:
        """Step the wall clock by `delta` (negative: backwards) as NTP or `date -s` would."""
        await self._move(self._now + timedelta(**delta))

    async def _move(self, when: datetime) -> None:
        self._now = when
        async with self._moved:
            self._moved.notify_all()

    async def sleep_until(self, when: datetime) -> None:
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= when)
