"""`python -m benchmarks.loop_trace -c CONFIG run`: the daemon with an event-loop trace,
for benchmarks/isolation_decoy.py. Diagnosis only, never the daemon's code: it wraps
asyncio's private `Handle._run` to time every callback, and writes those of 1 ms or more
(LOOP_TRACE_MIN seconds; 0: every one) with their start
(perf_counter clock), duration and name (a task's coroutine or the function), and
the loop's idle time in select to $TRACE_OUT when the daemon exits."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import sys
import time
from pathlib import Path
from typing import Any

CALLBACKS: list[tuple[float, float, str]] = []
SHORTEST = float(os.environ.get("LOOP_TRACE_MIN", "0.001"))  # seconds; 0 records every callback
IDLE: list[tuple[float, float]] = []


def _name(handle: Any) -> str:
    owner = getattr(handle._callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        return "task:" + getattr(owner.get_coro(), "__qualname__", "?")
    return getattr(handle._callback, "__qualname__", repr(handle._callback))


def install() -> None:
    run, select = asyncio.events.Handle._run, selectors.EpollSelector.select

    def timed_run(handle: Any) -> None:
        started = time.perf_counter()
        run(handle)
        took = time.perf_counter() - started
        if took >= SHORTEST:
            CALLBACKS.append((started, took, _name(handle)))

    def timed_select(selector: Any, timeout: float | None = None) -> Any:
        started = time.perf_counter()
        ready = select(selector, timeout)
        took = time.perf_counter() - started
        if took >= 0.0002:
            IDLE.append((started, took))
        return ready

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]
    selectors.EpollSelector.select = timed_select  # type: ignore[method-assign,assignment]


def main() -> None:
    from crisisbot.cli import main as crisisbot

    install()
    code = crisisbot(sys.argv[1:])
    Path(os.environ["TRACE_OUT"]).write_text(json.dumps({"callbacks": CALLBACKS, "idle": IDLE}))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # threads a library left running must not keep the traced daemon alive


if __name__ == "__main__":
    main()
