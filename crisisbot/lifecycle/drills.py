"""Scheduled exercises: a drill alarm raised on a crontab schedule in the site's time
zone, persisted as a timer so a drill due while the daemon was down runs once, late,
and never twice. A reload that adds or changes a drill reschedules it at once.

Schedules are standard crontab expressions (0 and 7 are Sunday; when both day fields
are restricted either one matches; `2#1` is the first Tuesday), evaluated by APScheduler
through `crisisbot.lifecycle.crontab`, which translates cron's conventions into it.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from crisisbot.clock import Clock
from crisisbot.lifecycle.crontab import next_fire
from crisisbot.store.records import TimerRecord
from crisisbot.lifecycle.schema import DrillSpec
from crisisbot.models import Alarm

if TYPE_CHECKING:
    from crisisbot.config.bundle import Bundle
    from crisisbot.engine import Engine
    from crisisbot.lifecycle.timers import TimerService
    from crisisbot.store.base import Store

log = logging.getLogger(__name__)

RUN = "drill.run"
SOURCE = "drill"


def next_run(spec: DrillSpec, zone: str, after: datetime) -> datetime:
    """The first time strictly after `after` (local time of `zone`, DST as cron does it)."""
    return next_fire(spec.cron, zone, after)


def drill_alarm(drill_id: str, spec: DrillSpec, run_key: str | None = None) -> Alarm:
    """`run_key` (the timer id) makes the alarm id deterministic: a timer fired again after
    a crash submits the same alarm, which the store refuses, so the drill runs once."""
    extra = {"id": hashlib.sha256(f"drill:{run_key}".encode()).hexdigest()[:32]} if run_key else {}
    return Alarm(**extra, source=SOURCE, site=spec.site, zone=spec.zone, input=spec.input, kind=spec.kind,
                 severity=spec.severity, label=spec.label, drill=True,
                 details={"drill": drill_id, "drill_playbook": spec.playbook})


class Drills:
    """`bundle`: the configuration in place (a reload swaps it; `sync` follows it)."""

    def __init__(self, store: "Store", bundle: "Callable[[], Bundle]", engine: "Engine", clock: Clock,
                 timers: "TimerService") -> None:
        self.store = store
        self.bundle = bundle
        self.engine = engine
        self.clock = clock
        self.timers = timers
        timers.register(RUN, self._run, wall_clock=True)

    def _zone(self, spec: DrillSpec) -> str:
        site = self.bundle().config.sites.get(spec.site)
        return site.timezone if site else "UTC"

    async def start(self) -> None:
        await self.sync()

    async def sync(self) -> None:
        """Each enabled drill has exactly its next run scheduled: at start, and after a
        reload added, changed, disabled or removed drills. A run due while the daemon was
        down stays scheduled (it runs once, late) unless its schedule changed."""
        store = self.store
        drills = self.bundle().config.lifecycle.drills
        kept: set[str] = set()
        for timer in [t for t in await store.list_timers() if t.kind == RUN]:
            drill_id = str(timer.payload.get("drill", ""))
            spec = drills.get(drill_id)
            if spec is not None and spec.enabled and drill_id not in kept and \
                    timer.payload.get("when", self._when(spec)) == self._when(spec):
                kept.add(drill_id)
                continue
            if await store.claim_timer(timer.id):  # not firing right now: withdraw it
                await store.finish_timer(timer.id, "cancelled")
                log.info("drill %s: run of %s withdrawn (schedule changed or drill removed)",
                         drill_id, timer.due_at.isoformat())
        for drill_id, spec in drills.items():
            if spec.enabled and drill_id not in kept:
                await self._schedule(drill_id, spec, self.clock.now())

    def _when(self, spec: DrillSpec) -> str:
        """What decides the run times: a timer made for another schedule is replaced."""
        return f"{spec.cron} {self._zone(spec)}"

    async def _schedule(self, drill_id: str, spec: DrillSpec, after: datetime) -> None:
        due = next_run(spec, self._zone(spec), after)
        await self.timers.schedule([TimerRecord(f"drill:{drill_id}:{due.isoformat()}", RUN, due, None,
                                                {"drill": drill_id, "when": self._when(spec)})])
        log.info("drill %s next runs at %s", drill_id, due.isoformat())

    async def run_now(self, drill_id: str, run_key: str | None = None) -> str:
        spec = self.bundle().config.lifecycle.drills[drill_id]
        alarm = drill_alarm(drill_id, spec, run_key)
        await self.store.audit("drill.started", None, {"drill": drill_id, "alarm_id": alarm.id,
                                                               "site": spec.site, "playbook": spec.playbook})
        return await self.engine.submit(alarm)

    async def _run(self, timer: TimerRecord) -> None:
        drill_id = timer.payload["drill"]
        spec = self.bundle().config.lifecycle.drills.get(drill_id)
        if spec is None or not spec.enabled:
            log.info("drill %s is no longer configured; not run", drill_id)
            return
        late = (self.clock.now() - timer.due_at).total_seconds()
        if late > 60:
            log.warning("drill %s runs %.0fs late (the daemon was down at its time)", drill_id, late)
        # next run first, so a failing run does not end the series (strictly after this one)
        await self._schedule(drill_id, spec, max(self.clock.now(), timer.due_at))
        await self.run_now(drill_id, run_key=timer.id)
