"""Limits every inbound listener shares, so no one door can take the daemon down.

Each listener (DC-09 TCP, webhook, console) admits connections through a
`ConnectionGate`: a cap on connections in total and per peer address, the oldest
idle connection closed to make room for a new one at the cap (a flood of idle
sockets cannot lock a real panel or browser out; a busy one is never closed), an
idle timeout and a header/frame timeout. File descriptors are a per-process
resource, so all gates also draw on one budget: the open-files limit (raised from
the soft to the hard limit at start) minus a reserve for the store, logs and
outgoing connections. Refusals and accept errors are logged once per burst with a
count, never once per attempt.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import resource
import time
import weakref
from collections import Counter
from typing import Any, Callable, Protocol

from pydantic import Field

from crisisbot.config.types import Seconds, Strict

log = logging.getLogger(__name__)

FD_RESERVE_MIN = 256  # descriptors kept for the store, logs, SMTP/HTTP clients, cameras
ACCEPT_BACKLOG = 100  # asyncio accepts up to `backlog` sockets per wake-up before any protocol
# sees them: each listener's burst is kept out of the budget, or a flood reaches EMFILE
BURST_INTERVAL = 60.0  # seconds between two summaries of the same kind of refusal


class ListenerLimits(Strict):
    """`limits:` of a listener in config.yaml."""

    max_connections: int = Field(512, ge=1, le=100_000, description="open connections at once, all peers")
    max_per_peer: int = Field(
        128, ge=1, le=100_000,
        description="open connections at once from one address (behind a reverse proxy: as max_connections)")
    idle_timeout: Seconds = Field(30.0, description="close a connection that sends nothing this long")
    header_timeout: Seconds = Field(
        10.0, description="a request's headers (DC-09: a frame) must be complete this long after they begin")


class Guarded(Protocol):
    """What a gate needs of a connection it admitted."""

    busy: bool  # handling a request: never closed to make room

    def evict(self) -> None: ...


class FdBudget:
    """Inbound connections allowed across every listener of the process."""

    def __init__(self) -> None:
        self.used = 0
        self.gates: list[ConnectionGate] = []  # where to find an idle connection to close
        self.refresh()

    def refresh(self) -> None:
        self.soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)

    @property
    def limit(self) -> int:
        if self.soft == resource.RLIM_INFINITY:
            return 1_000_000
        reserve = max(FD_RESERVE_MIN, self.soft // 8) + ACCEPT_BACKLOG * max(1, len(self.gates))
        return max(16, self.soft - reserve)


# one per process because descriptors are: every gate must see the others' connections
FD_BUDGET = FdBudget()


def raise_open_files_limit() -> tuple[int, int]:
    """Soft open-files limit up to the hard one (1024 is a common soft default, far
    below what an idle-connection flood needs); returns (soft, hard) afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard_target = 1 << 20
    else:
        hard_target = hard
    if soft != resource.RLIM_INFINITY and soft < hard_target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard_target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard_target, exc)
    FD_BUDGET.refresh()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    log.info("open-files limit %s (hard %s)", soft, hard)
    return soft, hard


class BurstLog:
    """Logs the first event of a burst at once, then one summary per interval with a count."""

    def __init__(self, logger: logging.Logger, what: str, interval: float = BURST_INTERVAL) -> None:
        self.logger, self.what, self.interval = logger, what, interval
        self.total = 0
        self._suppressed = 0
        self._last_reason = ""
        self._quiet_until = 0.0
        self._flush: asyncio.TimerHandle | None = None

    def note(self, reason: str) -> None:
        self.total += 1
        now = time.monotonic()
        if now >= self._quiet_until:
            self.logger.warning("%s: %s (further ones are summarised every %.0f s)", self.what, reason, self.interval)
            self._quiet_until = now + self.interval
            return
        self._suppressed += 1
        self._last_reason = reason
        if self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush = loop.call_at(loop.time() + (self._quiet_until - now), self.summarise)

    def summarise(self) -> None:
        self._flush = None
        if self._suppressed:
            self.logger.warning("%s: %d more in the last %.0f s (latest: %s)", self.what, self._suppressed,
                                self.interval, self._last_reason)
            self._suppressed = 0
            self._quiet_until = time.monotonic() + self.interval

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self.summarise()


class InputActivity:
    """Bytes arriving on an alarm input (DC-09, webhook): an alarm may be on its way.

    The console holds strangers back while an alarm is dispatched, but the dispatch only
    begins once the alarm is parsed and checked; under a login flood, the input's first
    bytes used to wait behind the flood's requests on the event loop. Subscribers (the
    web server: executors.AlarmPriority.pulse) hear of every input's bytes at once."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)
        return unsubscribe

    def note(self) -> None:
        for callback in self._subscribers:
            try:
                callback()
            except Exception:  # noqa: BLE001 - an input never fails for the console's sake
                log.exception("input activity: a subscriber failed")


# one per process, like FD_BUDGET: the inputs and the console are built apart
INPUT_ACTIVITY = InputActivity()


class ConnectionGate:
    """Admission of a listener's connections (see the module docstring).

    `alarm_input`: its connections' bytes are noted in INPUT_ACTIVITY (every listener but
    the console's)."""

    def __init__(self, name: str, limits: ListenerLimits, logger: logging.Logger | None = None,
                 alarm_input: bool = True) -> None:
        self.name = name
        self.limits = limits
        self.alarm_input = alarm_input
        self._open: dict[Guarded, str] = {}  # admission order, moved to the end on activity
        self._per_peer: Counter[str] = Counter()
        self.stats = {"refused": 0, "evicted": 0}
        self._refusals = BurstLog(logger or log, f"{name}: connection refused")
        self._evictions = BurstLog(logger or log, f"{name}: idle connection closed to make room")
        FD_BUDGET.gates.append(self)

    @property
    def open(self) -> int:
        return len(self._open)

    def admit(self, conn: Guarded, peer: str) -> bool:
        limits = self.limits
        if self._per_peer[peer] >= limits.max_per_peer:
            return self._refuse(f"{peer} already has {limits.max_per_peer} connections (max_per_peer)")
        if len(self._open) >= limits.max_connections:
            if not self._evict_one():
                return self._refuse(f"{limits.max_connections} connections open (max_connections), none idle")
        elif FD_BUDGET.used >= FD_BUDGET.limit:  # room taken by any listener's idle connection
            if not any(gate._evict_one() for gate in (self, *FD_BUDGET.gates)):
                return self._refuse(f"the process's {FD_BUDGET.limit} inbound descriptors are in use, none idle")
        self._open[conn] = peer
        self._per_peer[peer] += 1
        FD_BUDGET.used += 1
        return True

    def touch(self, conn: Guarded) -> None:
        """Activity: the connection becomes the last to be closed to make room."""
        if self.alarm_input:
            INPUT_ACTIVITY.note()
        peer = self._open.pop(conn, None)
        if peer is not None:
            self._open[conn] = peer

    def release(self, conn: Guarded) -> None:
        peer = self._open.pop(conn, None)
        if peer is None:
            return
        FD_BUDGET.used -= 1
        self._per_peer[peer] -= 1
        if not self._per_peer[peer]:
            del self._per_peer[peer]

    def close(self) -> None:
        self._refusals.close()
        self._evictions.close()
        if self in FD_BUDGET.gates:
            FD_BUDGET.gates.remove(self)

    def _evict_one(self) -> bool:
        for conn in self._open:
            if not conn.busy:
                peer = self._open[conn]
                self.release(conn)
                conn.evict()
                self.stats["evicted"] += 1
                self._evictions.note(f"from {peer}")
                return True
        return False

    def _refuse(self, reason: str) -> bool:
        self.stats["refused"] += 1
        self._refusals.note(reason)
        return False


class Deadline:
    """One timer per connection: idle, header/frame, or none while a request is handled.

    The connection owns its deadline, so the deadline holds a *weak* reference back to a
    bound `on_expiry`: a strong one made every closed connection cyclic garbage, left for
    the garbage collector's slow full passes (a login flood left ~40,000 such objects
    between two of them, and the alarm in flight waited for the collection)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expiry: Callable[[], object]) -> None:
        self._loop = loop
        self._on_expiry: Callable[[], Callable[[], object] | None] = (
            weakref.WeakMethod(on_expiry) if inspect.ismethod(on_expiry) else lambda: on_expiry)
        self._handle: asyncio.TimerHandle | None = None
        self.reason = ""

    def arm(self, seconds: float, reason: str) -> None:
        self.cancel()
        self.reason = reason
        self._handle = self._loop.call_at(self._loop.time() + seconds, self._expire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expire(self) -> None:
        self._handle = None
        callback = self._on_expiry()
        if callback is not None:
            callback()


class AcceptErrorThrottle:
    """Event-loop exception handler that summarises accept() failures (EMFILE/ENFILE):
    asyncio reports each one with a traceback, which filled 200 MB of log in 30 s."""

    def __init__(self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None) -> None:
        self.previous = previous
        self.burst = BurstLog(log, "accepting a connection failed")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            self.burst.note(repr(context.get("exception")))
            return
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


def throttle_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    if not isinstance(loop.get_exception_handler(), AcceptErrorThrottle):
        loop.set_exception_handler(AcceptErrorThrottle(loop.get_exception_handler()))
