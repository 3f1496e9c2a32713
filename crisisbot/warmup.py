"""Imports deferred past "crisisbot ready", done in the background right after it.

Modules that only the alarm path needs (a panel's event-code tables, the Jitsi invitation's
icalendar, the public holidays of duty rosters) are imported on first use by the code that
needs them, and each plugin names them (`deferred_imports`). Importing them before ready
would delay the start (issue 14: ready < 1 s with every integration); importing them
at the first alarm would slow that alarm. So the daemon imports them here, in a worker
thread, one at a time, as soon as it is ready: an alarm arriving meanwhile waits at most
for the module being imported (Python's import lock), never imports it twice.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crisisbot.config.bundle import Bundle

log = logging.getLogger(__name__)

DUTY_ROSTERS = ("holidays",)  # crisisbot/lifecycle/schedules.py: public holidays of the site's country


def deferred_imports(bundle: Bundle) -> list[str]:
    """What the configured inputs and outputs import on first use, in configuration order."""
    names: list[str] = []
    for pc in [*bundle.triggers.values(), *bundle.connectors.values(), *bundle.cameras.values()]:
        names.extend(getattr(pc.cls, "deferred_imports", ()))
    if any(group.duty for group in bundle.groups.values()):
        names.extend(DUTY_ROSTERS)
    return list(dict.fromkeys(names))


async def warm_up(modules: list[str]) -> None:
    """Import `modules` in a worker thread; a failure is logged (its user will raise it)."""
    began = time.perf_counter()
    for name in modules:
        try:
            await asyncio.to_thread(importlib.import_module, name)
        except Exception:  # noqa: BLE001 - the code that needs it reports it at first use
            log.warning("deferred import of %s failed", name, exc_info=True)
    if modules:
        log.debug("deferred imports done in %.2fs: %s", time.perf_counter() - began, ", ".join(modules))
