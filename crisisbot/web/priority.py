"""The console listener's HTTP protocol, holding new connections while an alarm is
being dispatched (see crisisbot.executors.AlarmPriority).

A paused connection costs the event loop nothing: its request waits in the kernel until
the meeting, snapshots and emails are under way, or HOLD seconds at most. uvicorn
takes the protocol class through its documented `http=` option; this subclasses the
protocol uvicorn would pick itself (httptools, else h11)."""

from __future__ import annotations

import asyncio
from typing import Any

from crisisbot.executors import AlarmPriority

HOLD = 3.0  # seconds a new connection may wait for the dispatch to end


def _base() -> type[asyncio.Protocol]:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:  # httptools is a declared dependency; h11 still works without it
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


def alarm_first_protocol(priority: AlarmPriority, hold: float = HOLD) -> type[asyncio.Protocol]:
    base: Any = _base()

    class AlarmFirstProtocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if priority.busy:
                transport.pause_reading()
                priority.when_quiet(transport.resume_reading, hold)

    return AlarmFirstProtocol
