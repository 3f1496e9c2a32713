"""Persistent one-shot timers: escalation tiers, reminders, drills, the ends of silences.

Timers live in the project's store rather than in an APScheduler job store: a timer
must be claimed in the same database as the deliveries it causes (so a claim is
atomic and survives a crash), and it must read the injectable clock. A due timer
is claimed (pending -> firing) by exactly one caller; one found `firing` after a
crash fires again at start, which is safe because every handler is idempotent
(deliveries have per-person keys). A timer due while the daemon was down fires
once, late, at the next start.

Clock steps (docs/lifecycle.md): a timer that means a *delay* (escalation tiers,
reminders) keeps its delay when the wall clock is stepped, so a forward step does
not fire a batch of escalations early and a backward one does not hold them back;
a timer that means a *time of day* (end of a silence, a drill) follows the
corrected clock.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Awaitable, Callable

from crisisbot.clock import Clock
from crisisbot.store.records import TimerRecord
from crisisbot.store.base import Store
from crisisbot.errors import UnknownTimer  # noqa: F401 - re-exported for existing importers

RETRIES = 3  # a failing timer (mail relay down…) is tried again this many times
RETRY_AFTER = 30.0  # seconds, times the attempt number
STEP_TOLERANCE = 2.0  # seconds the wall clock may drift from elapsed time between two looks

log = logging.getLogger(__name__)

Handler = Callable[[TimerRecord], Awaitable[None]]


class TimerService:
    def __init__(self, store: Store, clock: Clock, poll: float = 1.0) -> None:
        self.store = store
        self.clock = clock
        self.poll = poll
        self.handlers: dict[str, Handler] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._firing = asyncio.Lock()
        self._stepping = asyncio.Lock()  # a step is applied before any timer is added or read
        self._attempts: dict[str, int] = {}  # failed attempts per timer, for retries
        self._wall_clock_kinds: set[str] = set()
        self._offset: float | None = None  # wall clock minus elapsed time at the last look

    def register(self, kind: str, handler: Handler, *, wall_clock: bool = False) -> None:
        """`wall_clock=True`: the timer means a time of day and follows a corrected clock;
        otherwise it means a delay and keeps it across clock steps."""
        self.handlers[kind] = handler
        if wall_clock:
            self._wall_clock_kinds.add(kind)

    async def schedule(self, timers: list[TimerRecord]) -> int:
        async with self._stepping:
            await self._follow_clock()
            added = await self.store.add_timers(timers)
        self._wake.set()
        return added

    async def start(self) -> None:
        recovered = await self.store.recover_timers()
        if recovered:
            log.warning("%d timer(s) were firing when the daemon stopped; they fire again", recovered)
        self._offset = self._reading()
        self._task = asyncio.create_task(self._loop(), name="crisisbot-timers")

    def _reading(self) -> float:
        return self.clock.now().timestamp() - self.clock.elapsed()

    async def _follow_clock(self) -> float:
        """If the wall clock was stepped since the last look, move every pending delay
        timer by the same step (so its delay still counts from when it was set);
        returns the step in seconds (0 if none)."""
        offset = self._reading()
        previous, self._offset = self._offset, offset
        if previous is None or abs(offset - previous) < STEP_TOLERANCE:
            return 0.0
        step = offset - previous
        shifted = await self.store.shift_timers(timedelta(seconds=step), keep=tuple(self._wall_clock_kinds))
        log.warning("the system clock was stepped by %+.1f s; %d pending delay timer(s) moved with it, "
                    "time-of-day timers follow the new clock", step, shifted)
        await self.store.audit("clock.stepped", None, {"step_seconds": round(step, 3), "timers_shifted": shifted})
        return step

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.fire_due()
            except Exception:  # noqa: BLE001 - a store hiccup must not end the timer loop; logged
                log.exception("firing due timers failed; retrying at the next poll")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll)
            except TimeoutError:
                pass

    async def fire_due(self) -> int:
        """Fire every timer due by the clock's now; returns how many fired."""
        async with self._firing:
            async with self._stepping:
                await self._follow_clock()
            claimed = [t for t in await self.store.due_timers(self.clock.now()) if await self.store.claim_timer(t.id)]
            # side by side: one incident's slow mail relay must not delay another's escalation
            await asyncio.gather(*(self._fire(timer) for timer in claimed))
            return len(claimed)

    async def _fire(self, timer: TimerRecord) -> None:
        handler = self.handlers.get(timer.kind)
        try:
            if handler is None:
                raise UnknownTimer(f"no handler for timer kind '{timer.kind}'")
            await handler(timer)
        except Exception as exc:  # noqa: BLE001 - recorded in the audit log with the incident
            log.exception("timer %s (%s) failed", timer.id, timer.kind)
            attempt = self._attempts.get(timer.id, 0) + 1
            if handler is not None and attempt <= RETRIES:  # handlers are idempotent: a retry sends only what is missing
                self._attempts[timer.id] = attempt
                await self.store.reschedule_timer(timer.id, self.clock.now() + timedelta(seconds=RETRY_AFTER * attempt))
                await self.store.audit("timer.retry", timer.incident_id,
                                       {"timer": timer.id, "kind": timer.kind, "attempt": attempt,
                                        "error": f"{type(exc).__name__}: {exc}"})
                return
            self._attempts.pop(timer.id, None)
            await self.store.finish_timer(timer.id, "failed")
            await self.store.audit("timer.failed", timer.incident_id,
                                   {"timer": timer.id, "kind": timer.kind, "error": f"{type(exc).__name__}: {exc}"})
            return
        self._attempts.pop(timer.id, None)
        await self.store.finish_timer(timer.id, "done")
