"""The cyclic garbage collector, set for a daemon whose alarm path must not pause.

CPython's full (oldest-generation) collection walks every object the collector tracks,
with the event loop stopped. Most of them are the daemon's start-up heap
(configuration models, templates, the web, store and connector libraries), which lives
as long as the daemon; yet each full collection walked it again: 60-150 ms on the
development machine, every few seconds under a console login flood (each refused
connection leaves a little cyclic garbage), and the slowest alarms of
benchmarks/bench_alarm_isolation.py were exactly those that met one.

`settle()` moves what is alive once the daemon is started (or reloaded) out of the
collector's sight (`gc.freeze`, meant for this); cyclic garbage made later is still
collected as before, and a full collection only walks what was made since.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def settle(reloaded: bool = False) -> None:
    """Collect what start-up left over, then freeze what is alive.

    After a reload, the previous configuration was frozen with the rest: unfreeze first,
    so that it can be collected (one full collection, at the reload, not at an alarm)."""
    started = time.perf_counter()
    if reloaded:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    log.debug("garbage collector settled in %.0f ms: %d objects frozen",
              (time.perf_counter() - started) * 1000, gc.get_freeze_count())
