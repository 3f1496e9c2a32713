"""`crisisbot demo`: run the daemon until the demo button's incident has played its
playbook, then stop, so the quick start ends with a summary instead of a running daemon.

Each run shows a new incident: the incidents that earlier demo runs left open are
closed first (as resolved, audited), otherwise the new press would join them.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from crisisbot.config.bundle import Bundle
from crisisbot.daemon import Daemon, _handle_signals
from crisisbot.errors import CrisisbotError
from crisisbot.models import Incident, IncidentStatus, PlaybookOutcome
from crisisbot.store.base import Store
from triggers.base import Trigger

log = logging.getLogger(__name__)

TIMEOUT = 120.0
CLOSED_BY_DEMO = "closed by a new `crisisbot demo` run"


def demo_sources(bundle: Bundle) -> set[str]:
    """Names of the configured demo buttons (`type: demo` triggers)."""
    return {name for name, pc in bundle.triggers.items() if issubclass(pc.cls, Trigger) and pc.cls.demo_only}


async def close_earlier_demos(store: Store, bundle: Bundle) -> list[str]:
    """Close the incidents a demo button opened in earlier runs (before the engine
    resumes anything); their ids."""
    sources = demo_sources(bundle)
    closed = []
    for incident in await store.active_incidents():
        alarms = await store.incident_alarms(incident.id)
        if not alarms or alarms[0].source not in sources:
            continue
        if await store.set_incident_status(incident.id, IncidentStatus.resolved, CLOSED_BY_DEMO,
                                           only_from=incident.status):
            await store.finish_playbook(incident.id, PlaybookOutcome.stopped, CLOSED_BY_DEMO)
            closed.append(incident.id)
    if closed:
        log.info("closed %d incident(s) left open by earlier demo runs", len(closed))
    return closed


async def _played(daemon: Daemon, timeout: float) -> Incident:
    assert daemon.runtime is not None and daemon.engine is not None
    buttons = [t for t in daemon.runtime.triggers.values() if t.demo_only]
    if not buttons:
        raise CrisisbotError("no demo button in the configuration: add a trigger with `type: demo`")
    alarm_id = await buttons[0].pressed  # type: ignore[attr-defined]
    incident = await daemon.engine.wait_processed(alarm_id, timeout)
    if incident is None:
        raise CrisisbotError(f"the demo alarm {alarm_id} matched no playbook: see `crisisbot simulate`")
    await daemon.engine.wait_incident(incident.id, timeout)
    found = await daemon.runtime.store.get_incident(incident.id)
    assert found is not None
    return found


async def run_demo(config_path: Path, bundle: Bundle, timeout: float = TIMEOUT) -> Incident:
    """Start the daemon with its demo button, wait for the incident it opens to play, stop."""
    daemon = Daemon(config_path, bundle, demo=True)
    _handle_signals(daemon)
    await daemon.start()
    try:
        played = asyncio.ensure_future(_played(daemon, timeout))
        stopped = asyncio.ensure_future(daemon.wait())
        await asyncio.wait({played, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not played.done():
            played.cancel()
            raise CrisisbotError("stopped before the demo incident finished" if stopped.done() and not
                                 stopped.cancelled() else
                                 f"the demo incident did not finish within {timeout:.0f}s; see the log above")
        return played.result()
    finally:
        await daemon.stop()
