"""Refused requests (bad logins, forged or revoked links): rate-limited per client address
and audited as counts, not one hash-chained entry each.

10,000 forged link tokens used to append 10,000 audit entries (95 MB of WAL) and keep
the store's single writer busy while alarms waited. Now the first refusal of a kind
from an address in a window is audited at once (someone sees it start), the rest of
that window become one entry with a count when the window ends; and an address past
`limit` refusals in a window is answered 429 before any work is done.

A flood spread over many addresses would still make one immediate entry per address
(1,500 logins from 250 addresses: 250 to 500 hash-chained writes in the middle of an
alarm's own). So at most FIRST_AT_ONCE entries per window are written at once, the
others wait for the window's end like the rest of their counts, and an immediate entry
waits while an alarm is being dispatched (`hold`, a few seconds at most).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)

Audit = Callable[[str, "str | None", dict[str, Any]], Awaitable[object]]
AuditMany = Callable[[list[tuple[str, "str | None", dict[str, Any]]]], Awaitable[object]]
MAX_KEYS = 1000  # beyond this many (kind, incident, address) keys in a window, one "*" key
FIRST_AT_ONCE = 20  # immediate "it starts" entries per window, over all keys


@dataclass
class _Count:
    count: int = 0
    written: int = 0
    first_at: float = 0.0
    samples: set[str] = field(default_factory=set)


class RefusalAudit:
    """Aggregates refusals per (kind, incident, client address) and window."""

    def __init__(self, audit: Audit, window: float = 60.0, clock: Callable[[], float] = time.time,
                 hold: Callable[[], Awaitable[None]] | None = None, audit_many: AuditMany | None = None) -> None:
        self._audit = audit
        # `store.audit_many`: a window's counts in one transaction (one command from the web
        # process), not one each (a few hundred, under a flood from many addresses)
        self._audit_many = audit_many
        self.window = window
        self._clock = clock
        self._hold = hold  # waits while an alarm is dispatched (executors.AlarmPriority)
        self._firsts = 0
        self._counts: dict[tuple[str, str | None, str], _Count] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="crisisbot-refusal-audit")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.flush()

    def note(self, kind: str, incident_id: str | None, client: str | None, sample: str | None = None) -> None:
        """Count one refusal; the first of its key in this window is audited right away."""
        key = (kind, incident_id, client or "unknown")
        if key not in self._counts and len(self._counts) >= MAX_KEYS:
            key = (kind, None, "*")
        entry = self._counts.setdefault(key, _Count(first_at=self._clock()))
        entry.count += 1
        if sample is not None and len(entry.samples) < 10:
            entry.samples.add(sample[:64])
        if entry.count == 1 and self._firsts < FIRST_AT_ONCE:
            self._firsts += 1
            entry.written = 1
            self._spawn(self._write(key, 1, entry, first=True))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _entry(self, key: tuple[str, str | None, str], count: int, entry: _Count,
               first: bool) -> tuple[str, str | None, dict[str, Any]]:
        kind, incident_id, client = key
        data: dict[str, Any] = {"client": client, "count": count, "window_s": self.window}
        if first:
            data["first"] = True
        if entry.samples:
            data["samples"] = sorted(entry.samples)
        return kind, incident_id, data

    async def _write(self, key: tuple[str, str | None, str], count: int, entry: _Count, first: bool) -> None:
        if first and self._hold is not None:
            await self._hold()
        kind, incident_id, data = self._entry(key, count, entry, first)
        try:
            await self._audit(kind, incident_id, data)
        except Exception:  # noqa: BLE001 - an audit failure is logged, the refusal still happens
            log.exception("could not audit %s from %s", kind, key[2])

    async def flush(self) -> None:
        """Write the counts of the window that ends now; start a new window."""
        counts, self._counts = self._counts, {}
        self._firsts = 0
        ended = [(key, entry.count - entry.written, entry) for key, entry in counts.items()
                 if entry.count > entry.written]
        if self._audit_many is not None and ended:
            try:
                await self._audit_many([self._entry(key, rest, entry, first=False) for key, rest, entry in ended])
            except Exception:  # noqa: BLE001 - as _write: logged, the refusals still happened
                log.exception("could not audit %d refusal counts", len(ended))
        else:
            for key, rest, entry in ended:
                await self._write(key, rest, entry, first=False)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.window)
            await self.flush()


class RefusalLimit:
    """At most `limit` refused attempts per client address and window; then 429."""

    def __init__(self, limit: int = 20, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    def blocked(self, client: str | None) -> float:
        """Seconds this address must wait (0: it may try)."""
        started, count = self._windows.get(client or "unknown", (0.0, 0))
        now = self._clock()
        if now - started >= self.window:
            return 0.0
        return started + self.window - now if count >= self.limit else 0.0

    def refused(self, client: str | None) -> None:
        key = client or "unknown"
        now = self._clock()
        started, count = self._windows.get(key, (now, 0))
        if now - started >= self.window:
            started, count = now, 0
        self._windows[key] = (started, count + 1)
        if len(self._windows) > 10 * MAX_KEYS:
            self._windows = {k: v for k, v in self._windows.items() if now - v[0] < self.window}


class Refusals:
    """What the link routes share: the per-address limit and the aggregated audit."""

    def __init__(self, audit: RefusalAudit, limit: RefusalLimit | None = None) -> None:
        self.audit = audit
        self.limit = limit or RefusalLimit()

    def blocked(self, client: str | None) -> float:
        return self.limit.blocked(client)

    def refuse(self, kind: str, incident_id: str | None, client: str | None, reason: str) -> None:
        self.limit.refused(client)
        self.audit.note(kind, incident_id, client, reason)
