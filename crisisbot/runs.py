"""The playbooks running now, one task per incident.

A runtime service rather than the engine's private table: the engine starts runs,
and whoever stands an incident down or cancels it (web link, console, CLI, timer)
interrupts its run through this table, without reaching for the engine.
"""

from __future__ import annotations

import asyncio


class PlaybookRuns:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def add(self, incident_id: str, task: asyncio.Task[None]) -> None:
        self._tasks[incident_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(incident_id, None) if self._tasks.get(incident_id) is _t
                               else None)

    def get(self, incident_id: str) -> asyncio.Task[None] | None:
        return self._tasks.get(incident_id)

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    def __bool__(self) -> bool:
        return bool(self._tasks)

    async def interrupt(self, incident_id: str) -> None:
        """Stop the run of an incident stood down or cancelled (it resumes at no restart:
        the incident is closed). Not the calling task itself: a run may stand its own down."""
        task = self._tasks.get(incident_id)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
