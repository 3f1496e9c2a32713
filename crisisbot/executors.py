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

`hashing` and `web` threads also run at the lowest CPU priority (nice 19, per thread on
Linux): scrypt releases the GIL, so without it two hashing threads took both cores of a
small machine from the alarm path (alarm -> 50 emails went from 0.2 s to 5 s under a
login flood).
- `rendering`: message templates, off the event loop (see crisisbot/rendering.py for
  the time budget and output cap).

The stdlib ThreadPoolExecutor has no queue bound, hence the semaphore in `Pool`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar
from crisisbot.errors import PoolFull  # noqa: F401 - re-exported for existing importers

T = TypeVar("T")

ALARM_THREADS = 16  # the alarm path: image work, outbox files, name lookups
BACKGROUND_NICE = 19  # CPU priority of the non-alarm pools' threads
HOLD = 3.0  # seconds at most that the console's work waits for an alarm's dispatch

log = logging.getLogger(__name__)


def _lower_priority(nice: int) -> None:
    """Thread initializer: on Linux, setpriority on a thread id changes only that thread."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, AttributeError) as exc:  # other systems: the pools are still separate and bounded
        log.debug("cannot lower the priority of %s: %s", threading.current_thread().name, exc)


class Pool:
    """A named thread pool with at most `workers + queue` jobs accepted at a time.

    With `hold`, a job waits (HOLD s at most) to *start* while an alarm is dispatched: a
    scrypt hash is 16 MB of memory traffic, so even at nice 19 two of them slow the
    alarm path through the shared caches; a job already started is not interrupted."""

    def __init__(self, name: str, workers: int, queue: int, nice: int = 0,
                 hold: "AlarmPriority | None" = None) -> None:
        self.name = name
        self.hold = hold
        self.workers = workers
        self.capacity = workers + queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"crisisbot-{name}",
                                            initializer=functools.partial(_lower_priority, nice) if nice else None)
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
                if self.hold is not None:
                    self.hold.quiet.wait(HOLD)
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

    hashing: Pool = field(default_factory=lambda: Pool("hashing", workers=2, queue=16, nice=BACKGROUND_NICE))
    web: Pool = field(default_factory=lambda: Pool("web", workers=2, queue=64, nice=BACKGROUND_NICE))
    rendering: Pool = field(default_factory=lambda: Pool("rendering", workers=2, queue=256))
    alarm: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=ALARM_THREADS, thread_name_prefix="crisisbot-alarm"))
    priority: "AlarmPriority" = field(default_factory=lambda: AlarmPriority())

    def __post_init__(self) -> None:
        # strangers' hashes never start during a dispatch; the web pool is not held: it
        # also serves logged-in operators' sessions, and they are never held back
        self.hashing.hold = self.priority

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make the alarm pool the loop's default, so every existing `to_thread` of the
        alarm path uses it, and nothing else does."""
        loop.set_default_executor(self.alarm)

    def stats(self) -> dict[str, dict[str, int]]:
        return {p.name: p.stats() for p in (self.hashing, self.web, self.rendering)}

    def shutdown(self) -> None:
        for pool in (self.hashing, self.web, self.rendering):
            pool.shutdown()


class AlarmPriority:
    """Knows when an alarm is being dispatched (intake, meeting, snapshots, emails), so the
    web server can hold back what strangers send meanwhile.

    Separate pools keep threads apart, but every HTTP request is also handled on the
    daemon's one event loop: 1,500 concurrent logins cost it about a second of accepting,
    parsing and answering, interleaved with the alarm's own steps. When a dispatch
    begins, the console's listener stops accepting (crisisbot/web/background.py), its
    open connections stop being read (crisisbot/web/guarded_http.py) and the hashing
    pool starts no new hash, until the dispatch is over, or HOLD seconds at most: the
    kernel keeps the waiting connections and their bytes meanwhile, for free.

    A dispatch is several urgent sections back to back (intake, processing, then each
    step), a few milliseconds apart: the hold ends GRACE seconds after the last one, not
    in each gap, or every gap would let the whole waiting flood in at once."""

    GRACE = 0.05
    PULSE = 0.25  # an input's bytes hold strangers back this long, or until the dispatch begins
    RELEASE_PER_TURN = 16  # held callbacks released per event-loop turn once a dispatch is over (`_wake`)

    def __init__(self) -> None:
        self._active = 0
        self._holding = False
        self._release: asyncio.TimerHandle | None = None
        self._pulse_until = 0.0
        self._waiting: list[Callable[[], None]] = []
        self._waking = False  # a `_wake` is scheduled
        self._on_busy: list[Callable[[], None]] = []
        self.quiet = threading.Event()  # for pool threads: set while no alarm is dispatched
        self.quiet.set()

    @property
    def busy(self) -> bool:
        return self._holding

    def on_busy(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (on the event loop) each time a dispatch begins; returns an
        unsubscribe function."""
        self._on_busy.append(callback)

        def unsubscribe() -> None:
            if callback in self._on_busy:
                self._on_busy.remove(callback)
        return unsubscribe

    def urgent(self) -> "_Urgent":
        return _Urgent(self)

    def when_quiet(self, callback: Callable[[], None], at_most: float) -> None:
        """Call `callback` once: when no alarm is being dispatched, or after `at_most` s."""
        if not self._holding:
            callback()
            return
        done = False

        def once() -> None:
            nonlocal done
            if not done:
                done = True
                timer.cancel()
                callback()

        timer = asyncio.get_running_loop().call_later(at_most, once)
        self._waiting.append(once)

    def pulse(self) -> None:
        """Bytes arrived on an alarm input: hold strangers back for PULSE seconds, so the
        alarm is parsed and taken in without waiting behind them (listeners.INPUT_ACTIVITY).
        Cheap when called for every frame: one clock read while a pulse is under way."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now + self.PULSE / 2 < self._pulse_until:
            return
        self._pulse_until = now + self.PULSE
        self._enter()
        loop.call_later(self.PULSE, self._exit)

    async def wait_quiet(self, at_most: float = HOLD) -> None:
        """Return when no alarm is being dispatched, or after `at_most` seconds."""
        if not self._holding:
            return
        resumed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def resume() -> None:
            if not resumed.done():
                resumed.set_result(None)

        self.when_quiet(resume, at_most)
        await resumed

    def _enter(self) -> None:
        self._active += 1
        if self._release is not None:  # the next section of the same dispatch
            self._release.cancel()
            self._release = None
        if self._holding:
            return
        self._holding = True
        self.quiet.clear()
        for callback in list(self._on_busy):
            try:
                callback()
            except Exception:  # noqa: BLE001 - holding strangers back is an optimisation, never a failure
                log.exception("alarm priority: a busy callback failed")

    def _exit(self) -> None:
        self._active -= 1
        if self._active:
            return
        try:
            self._release = asyncio.get_running_loop().call_later(self.GRACE, self._quiet)
        except RuntimeError:  # no event loop (a synchronous caller): release at once
            self._quiet()

    def _quiet(self) -> None:
        self._release = None
        if self._active:
            return
        self._holding = False
        self.quiet.set()
        if not self._waking:
            self._wake()

    def _wake(self) -> None:
        """Release what waited for the dispatch to end, RELEASE_PER_TURN per event-loop turn.

        All at once, a flood's held requests woke together and made one turn of the loop
        of 200+ ms (asyncio runs every ready callback before it polls the sockets again):
        the next alarm's bytes, arriving meanwhile, waited for the whole of it. If a new
        dispatch begins, the rest wait for its end (or their own HOLD)."""
        self._waking = False
        if self._holding:
            return
        batch, self._waiting = self._waiting[:self.RELEASE_PER_TURN], self._waiting[self.RELEASE_PER_TURN:]
        for callback in batch:
            callback()
        if self._waiting:
            self._waking = True
            try:
                asyncio.get_running_loop().call_soon(self._wake)  # after the next poll of the sockets
            except RuntimeError:  # no event loop (a synchronous caller): release the rest now
                self._waking = False
                waiting, self._waiting = self._waiting, []
                for callback in waiting:
                    callback()


class _Urgent:
    def __init__(self, priority: AlarmPriority) -> None:
        self._priority = priority

    def __enter__(self) -> None:
        self._priority._enter()

    def __exit__(self, *exc: object) -> None:
        self._priority._exit()
