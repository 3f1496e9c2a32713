"""Separate, bounded thread pools, so the alarm path never waits behind another door.

`asyncio.to_thread` shares one default pool (6 threads on a 2-core machine) between
everything: an unauthenticated flood of console logins used to fill it with password
hashes while the panic alarm's outbox writes, image work and even the SMTP relay's
name lookup (`loop.getaddrinfo`) queued behind them. The daemon now gives:

- the loop's default pool to the alarm path only (storage helpers, images, delivery,
  name lookups — whatever already calls `to_thread`);
- `hashing`: console password checks, two threads and a short queue; when the queue
  is full the caller gets `PoolFull` at once (the console answers 503), instead of
  queueing without end;
- `web`: live-view face blurring, session and revocation files, reports;
- `rendering`: message templates, off the event loop (see crisisbot/rendering.py for
  the time budget and output cap).

The stdlib ThreadPoolExecutor has no queue bound, hence the semaphore in `Pool`.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

T = TypeVar("T")

ALARM_THREADS = 16  # the alarm path: image work, outbox files, name lookups


class PoolFull(RuntimeError):
    """The pool's queue is full: refuse the request now (429/503), do not wait."""


class Pool:
    """A named thread pool with at most `workers + queue` jobs accepted at a time."""

    def __init__(self, name: str, workers: int, queue: int) -> None:
        self.name = name
        self.workers = workers
        self.capacity = workers + queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"crisisbot-{name}")
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.completed = 0
        self.refused = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on this pool; raises PoolFull at once when no slot is free."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.refused += 1
            raise PoolFull(f"the {self.name} pool is busy ({self.capacity} jobs in flight)")
        with self._lock:
            self.in_flight += 1

        def job() -> T:
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self.in_flight -= 1
                    self.completed += 1
                self._slots.release()

        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, job)
        except BaseException:
            with self._lock:
                self.in_flight -= 1
            self._slots.release()
            raise
        # a cancelled caller does not free the slot early: the thread still works on it
        return await asyncio.shield(future)

    def stats(self) -> dict[str, int]:
        return {"workers": self.workers, "capacity": self.capacity, "in_flight": self.in_flight,
                "completed": self.completed, "refused": self.refused}

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Executors:
    """The daemon's pools, built with the runtime and shut down with it."""

    hashing: Pool = field(default_factory=lambda: Pool("hashing", workers=2, queue=16))
    web: Pool = field(default_factory=lambda: Pool("web", workers=2, queue=64))
    rendering: Pool = field(default_factory=lambda: Pool("rendering", workers=2, queue=256))
    alarm: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=ALARM_THREADS, thread_name_prefix="crisisbot-alarm"))

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make the alarm pool the loop's default, so every existing `to_thread` of the
        alarm path uses it, and nothing else does."""
        loop.set_default_executor(self.alarm)

    def stats(self) -> dict[str, dict[str, int]]:
        return {p.name: p.stats() for p in (self.hashing, self.web, self.rendering)}

    def shutdown(self) -> None:
        for pool in (self.hashing, self.web, self.rendering):
            pool.shutdown()
