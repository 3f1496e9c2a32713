"""Incident lifecycle: an alarm is stored, matched, joined or opened, and its playbook run.

Alarms are matched one at a time (so two alarms of the same burst cannot open two
incidents); playbooks run concurrently. On start, alarms stored but not yet
processed and incidents whose playbook did not finish are picked up again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import timedelta
from typing import TYPE_CHECKING

from crisisbot import matching
from crisisbot.logs import current_incident
from crisisbot.models import Alarm, AlarmAction, Incident, IncidentStatus, PlaybookOutcome, new_id
from crisisbot.playbook_run import PlaybookRun
from crisisbot.rendering import clean_alarm
from crisisbot.runtime import Runtime
from crisisbot.store.base import Nonce

if TYPE_CHECKING:
    from crisisbot.lifecycle.hooks import EngineHooks

log = logging.getLogger(__name__)

RECENT = 1000


class Engine:
    """The daemon's `AlarmSink`: triggers submit alarms here."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._queue: asyncio.Queue[Alarm] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._runs = runtime.runs  # shared: a stand-down anywhere interrupts a run through it
        # outcome of recent alarms, for callers that wait on one (control socket, tests);
        # bounded so a long-running daemon does not keep every alarm in memory
        self._recent: OrderedDict[str, Incident | None] = OrderedDict()
        self._waiters: dict[str, asyncio.Future[Incident | None]] = {}
        self.hooks: EngineHooks | None = None  # the lifecycle: restores, silences, cancel window

    # -- AlarmSink ---------------------------------------------------------
    async def submit(self, alarm: Alarm, nonce: Nonce | None = None) -> str:
        """Durably store (with its replay nonce, in the same transaction); returns once the
        alarm is safe on disk. Raises `Replayed` for a used nonce. The alarm is queued as
        soon as it is committed: its dispatch overlaps the disk flush (store.add_alarm)."""
        alarm = clean_alarm(alarm)  # no control/bidi characters past this point
        with self.runtime.executors.priority.urgent():  # the web server holds strangers back meanwhile
            await self.runtime.store.add_alarm(alarm, nonce, on_commit=lambda: self._queue.put_nowait(alarm))
        return alarm.id

    def known_site(self, site: str) -> bool:
        return site in self.runtime.bundle.config.sites

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        store = self.runtime.store
        for incident in await store.active_incidents():
            if incident.outcome is not PlaybookOutcome.running:
                continue
            log.info("resuming incident %s (playbook %s) after a restart", incident.id, incident.playbook)
            await store.audit("incident.resumed", incident.id, {"playbook": incident.playbook})
            self._launch(incident)
        for alarm in await store.pending_alarms():
            self._queue.put_nowait(alarm)
        self._worker = asyncio.create_task(self._work(), name="crisisbot-engine")

    async def stop(self, grace: float = 5.0) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        runs = self._runs.tasks()
        if runs:
            await asyncio.wait(runs, timeout=grace)
            for task in runs:
                task.cancel()
            await asyncio.gather(*runs, return_exceptions=True)

    async def wait_processed(self, alarm_id: str, timeout: float = 30.0) -> Incident | None:
        """The incident an alarm opened or joined (None if no playbook matched)."""
        if alarm_id in self._recent:
            return self._recent[alarm_id]
        future = self._waiters.setdefault(alarm_id, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(asyncio.shield(future), timeout)

    async def wait_incident(self, incident_id: str, timeout: float = 60.0) -> None:
        task = self._runs.get(incident_id)
        if task is not None:
            await asyncio.wait_for(asyncio.shield(task), timeout)

    async def idle(self) -> None:
        """Wait until every queued alarm is processed and every playbook finished."""
        await self._queue.join()
        while self._runs:
            await asyncio.gather(*self._runs.tasks(), return_exceptions=True)

    # -- processing --------------------------------------------------------
    async def _work(self) -> None:
        while True:
            alarm = await self._queue.get()
            try:
                with self.runtime.executors.priority.urgent():
                    incident = await self.process(alarm)
            except Exception as exc:  # noqa: BLE001 - one bad alarm must not stop the others
                log.exception("processing alarm %s failed", alarm.id)
                incident = None
                try:
                    await self.runtime.store.audit("alarm.error", None, {"alarm_id": alarm.id, "error": str(exc)})
                except Exception:  # noqa: BLE001 - the worker must outlive a failing store
                    log.exception("could not audit the failure of alarm %s", alarm.id)
            finally:
                self._queue.task_done()
            self._recent[alarm.id] = incident
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)
            future = self._waiters.pop(alarm.id, None)
            if future is not None and not future.done():
                future.set_result(incident)

    async def process(self, alarm: Alarm) -> Incident | None:
        alarm = clean_alarm(alarm)
        runtime, store = self.runtime, self.runtime.store
        bundle = runtime.bundle
        if self.hooks is not None and (handled := await self.hooks.intercept(alarm)) is not None:
            return handled.incident
        now = runtime.clock.now()  # join windows and schedules by the daemon's one clock
        playbook = matching.select(alarm, bundle.playbooks, bundle.config.sites, now)
        if self.hooks is not None:
            playbook = await self.hooks.route(alarm, playbook)
        # drills and real incidents never join each other: a real alarm during a drill
        # must reach the committee as real, and a drill must not land in a real crisis
        existing = None
        if alarm.dedup_key:  # a follow-up (re-trigger, acknowledge, resolve) of a known event
            existing = await store.find_open_incident(alarm.site, None, now, alarm.dedup_key, drill=alarm.drill)
        if existing is None and playbook is not None:
            window = playbook.join_window if playbook.join_window is not None else bundle.config.incidents.join_window
            existing = await store.find_open_incident(
                alarm.site, playbook.id, now - timedelta(seconds=window), alarm.dedup_key, drill=alarm.drill
            )
        if existing is not None:
            token = current_incident.set(existing.id)
            try:
                log.info("alarm %s joins open incident %s", alarm.id, existing.id)
                await store.join_incident(existing.id, alarm)
                if self.hooks is not None:
                    await self.hooks.joined(existing, alarm)
            finally:
                current_incident.reset(token)
            return existing
        if playbook is None or alarm.action is not AlarmAction.trigger:
            why = "matched no playbook" if playbook is None else f"is a {alarm.action.value} with no open incident"
            log.warning("alarm %s (%s/%s %s) %s", alarm.id, alarm.site, alarm.source, alarm.kind.value, why)
            await store.mark_alarm(alarm.id, "unmatched", None)
            await store.audit("alarm.unmatched", None, {"alarm_id": alarm.id, "reason": why})
            return None
        site = bundle.config.sites.get(alarm.site)
        label = alarm.label or alarm.kind.value
        incident = Incident(
            id=new_id(), site=alarm.site, playbook=playbook.id, status=IncidentStatus.open,
            opened_at=now, updated_at=now, drill=alarm.drill,
            title=f"{label} — {site.name if site else alarm.site}",
        )
        token = current_incident.set(incident.id)
        try:
            await store.create_incident(incident, alarm)
            log.info("incident %s opened by alarm %s; playbook %s", incident.id, alarm.id, playbook.id)
            await self._note_overlap(incident)
        finally:
            current_incident.reset(token)
        self._launch(incident, alarm)
        return incident

    async def _note_overlap(self, incident: Incident) -> None:
        """A real incident and a drill at the same site at once: each one's timeline
        names the other, so the drill report lists the real alarm it ran into."""
        store = self.runtime.store
        # only the other kind: a busy site's open incidents of the same kind are not loaded
        # (and parsed) for every new one
        for other in await store.active_incidents(incident.site, drill=not incident.drill):
            drill, real = (other, incident) if other.drill else (incident, other)
            await store.audit("drill.real_incident", drill.id,
                              {"incident_id": real.id, "title": real.title, "opened_at": real.opened_at.isoformat()})
            if real is incident:
                log.warning("real incident %s opened during drill %s: handled as real, apart from the drill",
                            real.id, drill.id)

    async def interrupt(self, incident_id: str) -> None:
        """Stop a playbook still running for an incident that was stood down or cancelled."""
        await self._runs.interrupt(incident_id)

    def _launch(self, incident: Incident, alarm: Alarm | None = None) -> None:
        token = current_incident.set(incident.id)
        try:
            task = asyncio.create_task(self._run(incident, alarm), name=f"incident-{incident.id}")
        finally:
            current_incident.reset(token)
        self._runs.add(incident.id, task)

    async def _run(self, incident: Incident, alarm: Alarm | None) -> None:
        runtime = self.runtime
        playbook = runtime.bundle.playbook(incident.playbook)
        if alarm is None:
            alarms = await runtime.store.incident_alarms(incident.id)
            alarm = alarms[0] if alarms else None
        if playbook is None or alarm is None:
            reason = "playbook no longer exists" if playbook is None else "alarm not found"
            log.error("cannot run incident %s: %s", incident.id, reason)
            await runtime.store.finish_playbook(incident.id, PlaybookOutcome.failed, reason)
            return
        if self.hooks is not None and not await self.hooks.before_run(incident, alarm, playbook):
            return
        try:
            await PlaybookRun(runtime.step_services(), runtime.executors.priority, incident, alarm, playbook).run()
        except asyncio.CancelledError:
            log.warning("playbook of incident %s interrupted; it resumes at next start", incident.id)
            raise
        except Exception:  # noqa: BLE001 - logged with the incident id; the daemon goes on
            log.exception("playbook of incident %s crashed", incident.id)
