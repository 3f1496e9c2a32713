"""Run one incident's playbook: independent steps concurrently, messages after producers.

Each step is journaled (running, done with its output, failed); a step found done
after a restart is not run again, and its output (e.g. the meeting) is reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from crisisbot.config.playbook import Playbook
from crisisbot.executors import AlarmPriority
from crisisbot.lifecycle.outcome import judge
from crisisbot.models import Alarm, Incident, PlaybookOutcome
from crisisbot.steps import kept_output, step_type
from crisisbot.steps.base import StepContext, StepFailed, StepServices, StepSpec
from crisisbot.store.base import StepRecord

log = logging.getLogger(__name__)

GUARD_FACTOR, GUARD_EXTRA = 1.5, 2.0  # outer safety net around a step's own deadline


def dependencies(playbook: Playbook) -> dict[str, list[str]]:
    """Explicit `needs`, else: a step that consumes waits for every earlier producer."""
    deps: dict[str, list[str]] = {}
    producers: list[str] = []
    for step in playbook.steps:
        assert step.id is not None
        if step.needs is not None:
            deps[step.id] = list(step.needs)
        else:
            deps[step.id] = list(producers) if step.consumes else []
        if step.produces:
            producers.append(step.id)
    return deps


class PlaybookRun:
    """`priority`: the dispatch steps (`StepSpec.urgent`) mark the alarm path busy while they run,
    so the web server holds strangers' requests back (executors.AlarmPriority)."""

    def __init__(self, services: StepServices, priority: AlarmPriority | None, incident: Incident, alarm: Alarm,
                 playbook: Playbook):
        self.services = services
        self.priority = priority
        self.incident = incident
        self.playbook = playbook
        self.ctx = StepContext(
            services=services, incident=incident, alarm=alarm, playbook=playbook,
            site=services.bundle.config.sites.get(alarm.site), log=log,
        )
        self.finished: dict[str, asyncio.Event] = {s.id: asyncio.Event() for s in playbook.steps}  # type: ignore[misc]
        self.halted_at: int | None = None

    async def run(self) -> None:
        store = self.services.store
        journal = await store.get_steps(self.incident.id)
        deps = dependencies(self.playbook)
        ended = {sid for sid, r in journal.items() if r.status in ("done", "failed", "skipped")}
        for index, step in enumerate(self.playbook.steps):
            record = journal.get(step.id)  # type: ignore[arg-type]
            if record is None or step.id not in ended:
                continue
            if record.status == "done":
                output = kept_output(step, record)
                if output is not None:
                    self.ctx.outputs[step.id] = output  # type: ignore[index]
                elif step.produces and any(step.id in deps[other.id] and other.id not in ended
                                           for other in self.playbook.steps):
                    # its output (e.g. snapshots) was not kept: run it again, since a step that
                    # uses it has yet to run, so the resumed emails still carry the images
                    continue
            if record.status == "failed" and not step.continue_on_error:
                self.halted_at = index if self.halted_at is None else min(self.halted_at, index)
            self.finished[step.id].set()  # type: ignore[index]
        await asyncio.gather(*(
            self._step(index, step, deps[step.id], journal)  # type: ignore[index]
            for index, step in enumerate(self.playbook.steps)
        ))
        outcome, reason = judge(self.playbook, await store.get_steps(self.incident.id))
        if await store.finish_playbook(self.incident.id, outcome, reason):
            level = {PlaybookOutcome.done: logging.INFO, PlaybookOutcome.failed: logging.ERROR}.get(outcome, logging.WARNING)
            log.log(level, "playbook %s of incident %s: %s (%s)", self.playbook.id, self.incident.id,
                    outcome.value, reason)

    async def _step(self, index: int, step: StepSpec, needs: list[str], journal: dict[str, StepRecord]) -> None:
        assert step.id is not None
        if self.finished[step.id].is_set():
            return
        try:
            for need in needs:
                await self.finished[need].wait()
            if self.halted_at is not None and self.halted_at < index:
                await self._save(step, "skipped", detail="an earlier step failed and stops the playbook")
                return
            await self._execute(index, step, journal.get(step.id))
        finally:
            self.finished[step.id].set()

    async def _execute(self, index: int, step: StepSpec, previous: StepRecord | None) -> None:
        assert step.id is not None
        kind = step_type(step.action)
        started = previous.started_at if previous else self.services.clock.now()
        await self._save(step, "running", started=started)
        timeout = step.timeout or self.services.bundle.config.incidents.step_timeout
        urgent = self.priority.urgent() if self.priority and step.urgent else contextlib.nullcontext()
        try:
            with urgent:  # the web server holds back strangers' requests meanwhile (executors.AlarmPriority)
                async with asyncio.timeout(timeout * GUARD_FACTOR + GUARD_EXTRA):
                    output = await kind.run(self.ctx, step)
        except (StepFailed, TimeoutError, Exception) as exc:  # noqa: BLE001 - recorded, never silent
            detail = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TimeoutError):
                detail = f"step did not finish within its deadline ({timeout:.0f}s)"
            log.error("step %s failed: %s", step.id, detail, exc_info=not isinstance(exc, (StepFailed, TimeoutError)))
            await self._save(step, "failed", detail=detail, started=started)
            if not step.continue_on_error:
                self.halted_at = index if self.halted_at is None else min(self.halted_at, index)
            return
        self.ctx.outputs[step.id] = output
        await self._save(step, "done", output=kind.dump(output), started=started)

    async def _save(self, step: StepSpec, status: str, *, detail: str = "", output=None, started=None) -> None:
        assert step.id is not None
        now = self.services.clock.now()
        ended = now if status in ("done", "failed", "skipped") else None
        await self.services.store.save_step(
            StepRecord(self.incident.id, step.id, status, output, detail, started or now, ended)
        )
