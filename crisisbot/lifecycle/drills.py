"""Scheduled exercises: a drill alarm raised on a cron schedule (APScheduler's
CronTrigger computes the next time in the site's time zone), persisted as a timer
so a drill due while the daemon was down runs once, late, and never twice."""

from __future__ import annotations

import hashlib

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from crisisbot.lifecycle.clock import Clock
from crisisbot.lifecycle.records import TimerRecord
from crisisbot.lifecycle.schema import DrillSpec
from crisisbot.models import Alarm

if TYPE_CHECKING:
    from crisisbot.engine import Engine
    from crisisbot.lifecycle.timers import TimerService
    from crisisbot.runtime import Runtime

log = logging.getLogger(__name__)

RUN = "drill.run"
SOURCE = "drill"


def next_run(spec: DrillSpec, zone: str, after: datetime) -> datetime:
    trigger = CronTrigger.from_crontab(spec.cron, timezone=ZoneInfo(zone))
    when = trigger.get_next_fire_time(None, after.astimezone(ZoneInfo(zone)))
    assert when is not None, "a crontab expression always has a next time"
    return when


def drill_alarm(drill_id: str, spec: DrillSpec, run_key: str | None = None) -> Alarm:
    """`run_key` (the timer id) makes the alarm id deterministic: a timer fired again after
    a crash submits the same alarm, which the store refuses, so the drill runs once."""
    extra = {"id": hashlib.sha256(f"drill:{run_key}".encode()).hexdigest()[:32]} if run_key else {}
    return Alarm(**extra, source=SOURCE, site=spec.site, zone=spec.zone, input=spec.input, kind=spec.kind,
                 severity=spec.severity, label=spec.label, drill=True,
                 details={"drill": drill_id, "drill_playbook": spec.playbook})


class Drills:
    def __init__(self, runtime: "Runtime", engine: "Engine", clock: Clock, timers: "TimerService") -> None:
        self.runtime = runtime
        self.engine = engine
        self.clock = clock
        self.timers = timers
        timers.register(RUN, self._run, wall_clock=True)

    def _zone(self, spec: DrillSpec) -> str:
        site = self.runtime.bundle.config.sites.get(spec.site)
        return site.timezone if site else "UTC"

    async def start(self) -> None:
        """Make sure each enabled drill has its next run scheduled (once)."""
        pending = {t.payload.get("drill") for t in await self.runtime.store.list_timers() if t.kind == RUN}
        for drill_id, spec in self.runtime.bundle.config.lifecycle.drills.items():
            if spec.enabled and drill_id not in pending:
                await self._schedule(drill_id, spec, self.clock.now())

    async def _schedule(self, drill_id: str, spec: DrillSpec, after: datetime) -> None:
        due = next_run(spec, self._zone(spec), after)
        await self.timers.schedule([TimerRecord(f"drill:{drill_id}:{due.isoformat()}", RUN, due, None,
                                                {"drill": drill_id})])
        log.info("drill %s next runs at %s", drill_id, due.isoformat())

    async def run_now(self, drill_id: str, run_key: str | None = None) -> str:
        spec = self.runtime.bundle.config.lifecycle.drills[drill_id]
        alarm = drill_alarm(drill_id, spec, run_key)
        await self.runtime.store.audit("drill.started", None, {"drill": drill_id, "alarm_id": alarm.id,
                                                               "site": spec.site, "playbook": spec.playbook})
        return await self.engine.submit(alarm)

    async def _run(self, timer: TimerRecord) -> None:
        drill_id = timer.payload["drill"]
        spec = self.runtime.bundle.config.lifecycle.drills.get(drill_id)
        if spec is None or not spec.enabled:
            log.info("drill %s is no longer configured; not run", drill_id)
            return
        late = (self.clock.now() - timer.due_at).total_seconds()
        if late > 60:
            log.warning("drill %s runs %.0fs late (the daemon was down at its time)", drill_id, late)
        # next run first, so a failing run does not end the series;
        # strictly after this run: CronTrigger counts a time equal to `after` as the next one
        await self._schedule(drill_id, spec, max(self.clock.now(), timer.due_at) + timedelta(seconds=1))
        await self.run_now(drill_id, run_key=timer.id)
