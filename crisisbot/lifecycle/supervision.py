"""Supervision: a heartbeat for monitoring (GET /health) and a dead-man ping, so a
silent daemon is noticed by someone else; silent inputs arrive as input_fault alarms
from the triggers and are routed by ordinary playbooks (`kinds: [input_fault]`)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping

import httpx

from crisisbot.clock import Clock

if TYPE_CHECKING:
    from crisisbot.config.bundle import Bundle
    from crisisbot.lifecycle.timers import TimerService
    from crisisbot.store.base import Store
    from triggers.base import Trigger

log = logging.getLogger(__name__)


class Supervision:
    """`bundle`: the configuration in place; `triggers`: the running inputs (a live table)."""

    def __init__(self, store: "Store", bundle: "Callable[[], Bundle]", triggers: "Mapping[str, Trigger]",
                 clock: Clock, timers: "TimerService") -> None:
        self.store = store
        self.bundle = bundle
        self.triggers = triggers
        self.clock = clock
        self.timers = timers
        self.last_ping: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.bundle().config.lifecycle.supervision.deadman_url:
            self._task = asyncio.create_task(self._deadman(), name="crisisbot-deadman")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def health(self) -> tuple[bool, dict[str, Any]]:
        store = self.store
        now = self.clock.now()
        body: dict[str, Any] = {"time": now.isoformat(), "triggers": sorted(self.triggers)}
        try:
            last = await store.last_alarm_at()
            pending = await store.pending_alarms()
            timers = await store.list_timers()
        except Exception as exc:  # noqa: BLE001 - reported as the health verdict, not hidden
            body.update(status="error", store=f"{type(exc).__name__}: {exc}")
            return False, body
        overdue = [t.id for t in timers if (now - t.due_at).total_seconds() > 10 * self.timers.poll + 30]
        body.update(store=store.problem or "ok", last_alarm_at=last.isoformat() if last else None,
                    queue=len(pending), timers_pending=len(timers), timers_overdue=len(overdue),
                    deadman=self.last_ping or None)
        healthy = not overdue and store.problem is None  # writes waiting on a full disk or a lock
        body["status"] = "ok" if healthy else "degraded"
        return healthy, body

    async def ping(self) -> None:
        config = self.bundle().config.lifecycle.supervision
        assert config.deadman_url
        try:
            async with httpx.AsyncClient(timeout=config.deadman_timeout) as client:
                response = await client.get(config.deadman_url)
            self.last_ping = {"at": self.clock.now().isoformat(), "status": response.status_code}
            if response.status_code >= 400:
                log.warning("dead-man ping answered %s", response.status_code)
        except httpx.HTTPError as exc:
            self.last_ping = {"at": self.clock.now().isoformat(), "error": f"{type(exc).__name__}: {exc}"}
            log.warning("dead-man ping to %s failed: %s", config.deadman_url, exc)

    async def _deadman(self) -> None:
        every = self.bundle().config.lifecycle.supervision.deadman_every
        while True:
            await self.ping()
            await asyncio.sleep(every)
