"""Persistent one-shot timers: escalation tiers, reminders, drills, the ends of silences.

Timers live in the project's store rather than in an APScheduler job store: a timer
must be claimed in the same database as the deliveries it causes (so a claim is
atomic and survives a crash), and it must read the injectable clock. A due timer
is claimed (pending -> firing) by exactly one caller; one found `firing` after a
crash fires again at start, which is safe because every handler is idempotent
(deliveries have per-person keys). A timer due while the daemon was down fires
once, late, at the next start.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Awaitable, Callable

from crisisbot.lifecycle.clock import Clock
from crisisbot.lifecycle.records import TimerRecord
from crisisbot.store.base import Store

RETRIES = 3  # a failing timer (mail relay down…) is tried again this many times
RETRY_AFTER = 30.0  # seconds, times the attempt number

log = logging.getLogger(__name__)

Handler = Callable[[TimerRecord], Awaitable[None]]


class UnknownTimer(LookupError):
    """A timer of a kind no handler serves (a newer version scheduled it?)."""


class TimerService:
    def __init__(self, store: Store, clock: Clock, poll: float = 1.0) -> None:
        self.store = store
        self.clock = clock
        self.poll = poll
        self.handlers: dict[str, Handler] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._firing = asyncio.Lock()
        self._attempts: dict[str, int] = {}  # failed attempts per timer, for retries

    def register(self, kind: str, handler: Handler) -> None:
        self.handlers[kind] = handler

    async def schedule(self, timers: list[TimerRecord]) -> int:
        added = await self.store.add_timers(timers)
        self._wake.set()
        return added

    async def start(self) -> None:
        recovered = await self.store.recover_timers()
        if recovered:
            log.warning("%d timer(s) were firing when the daemon stopped; they fire again", recovered)
        self._task = asyncio.create_task(self._loop(), name="crisisbot-timers")

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
