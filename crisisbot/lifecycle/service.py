"""The lifecycle container: built by the daemon at start, torn down at stop.

It owns the clock, the timer loop and each lifecycle part and answers the engine's
hooks. Operators reach its parts (stand-down, cancel, silences, drills) through the
command bus (crisisbot/command_bus.py), whatever the front door.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Coroutine

from crisisbot.lifecycle import escalation, restores
from crisisbot.lifecycle.cancelwindow import CancelWindows, applies, pressed_again
from crisisbot.clock import Clock
from crisisbot.lifecycle.drills import Drills
from crisisbot.lifecycle.hooks import Handled
from crisisbot.lifecycle.maintenance import Maintenance
from crisisbot.lifecycle.supervision import Supervision
from crisisbot.lifecycle.timers import TimerService
from crisisbot.models import Alarm, Incident

if TYPE_CHECKING:
    from crisisbot.config.bundle import Bundle
    from crisisbot.config.playbook import Playbook
    from crisisbot.engine import Engine
    from crisisbot.runtime import Runtime

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self, runtime: "Runtime", engine: "Engine") -> None:
        self.runtime = runtime
        self.engine = engine
        self.clock: Clock = runtime.clock
        self.timers: TimerService = runtime.timers
        for kind, handler in escalation.handlers(runtime).items():
            self.timers.register(kind, handler)
        def bundle() -> "Bundle":  # the configuration in place: a reload swaps it
            return runtime.bundle

        self.maintenance = Maintenance(runtime.store, bundle, self.clock, self.timers)
        self.drills = Drills(runtime.store, bundle, engine, self.clock, self.timers)
        self.supervision = Supervision(runtime.store, bundle, runtime.triggers, self.clock, self.timers)
        self.cancel_windows = CancelWindows(runtime.store, self.clock)
        self._background: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run slow follow-up work (a restore's stand-down) without holding the alarm queue."""
        task = asyncio.create_task(self._logged(work, name), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def idle(self) -> None:
        """Wait for the follow-up work started with `spawn`."""
        while self._background:
            await asyncio.wait(set(self._background))

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, Any], name: str) -> None:
        try:
            await work
        except Exception:  # noqa: BLE001 - reported, never lost silently
            log.exception("%s failed", name)

    async def start(self) -> None:
        self.engine.hooks = self
        await self.timers.start()
        await self.drills.start()
        await self.supervision.start()

    async def reloaded(self) -> None:
        """A new configuration is in place: drills added or changed get their timer now."""
        await self.drills.sync()

    async def stop(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        await self.supervision.stop()
        await self.timers.stop()
        self.engine.hooks = None

    # -- engine hooks ------------------------------------------------------------
    async def intercept(self, alarm: Alarm) -> Handled | None:
        if restores.is_follow_up(alarm):
            incident = await restores.handle(self.runtime, alarm, self.spawn)
            if incident is not None:
                return Handled(incident)
        silence = await self.maintenance.active_for(alarm)
        if silence is not None and self.maintenance.reduced_playbook(silence) is None:
            store = self.runtime.store
            await store.mark_alarm(alarm.id, "silenced", None)
            await store.audit("alarm.silenced", None, {"alarm_id": alarm.id, "silence_id": silence.id,
                                                       "routed_to": None, "reason": silence.reason})
            return Handled(None)
        return None

    async def route(self, alarm: Alarm, playbook: "Playbook | None") -> "Playbook | None":
        bundle = self.runtime.bundle
        chosen = alarm.details.get("drill_playbook") if alarm.drill else None
        if chosen and bundle.playbook(chosen) is not None:
            return bundle.playbook(chosen)
        silence = await self.maintenance.active_for(alarm)
        reduced = self.maintenance.reduced_playbook(silence) if silence else None
        if silence is not None and reduced is not None and bundle.playbook(reduced) is not None:
            await self.runtime.store.audit("alarm.silenced", None, {
                "alarm_id": alarm.id, "silence_id": silence.id, "routed_to": reduced, "reason": silence.reason,
                "instead_of": playbook.id if playbook else None})
            return bundle.playbook(reduced)
        return playbook

    async def joined(self, incident: Incident, alarm: Alarm) -> None:
        playbook = self.runtime.bundle.playbook(incident.playbook)
        window = playbook.lifecycle.cancel_window if playbook else None
        if window is None or not self.cancel_windows.open_for(incident):
            return
        first = next(iter(await self.runtime.store.incident_alarms(incident.id)), None)
        if first is not None and pressed_again(window, first, alarm, self.runtime.bundle.config):
            await self.cancel_windows.cancel(incident.id, by=f"{alarm.source} pressed again", via="input")

    async def before_run(self, incident: Incident, alarm: Alarm, playbook: "Playbook") -> bool:
        window = playbook.lifecycle.cancel_window
        if not applies(window, alarm, self.runtime.bundle.config):
            return True
        assert window is not None
        return await self.cancel_windows.wait(incident, alarm, window)
