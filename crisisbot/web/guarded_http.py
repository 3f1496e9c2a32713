"""uvicorn's HTTP/1.1 protocol behind a `ConnectionGate`: caps and a header timeout.

uvicorn has `timeout_keep_alive` (idle after a response) and `limit_concurrency`,
but nothing bounds a connection that never sends a complete request, and
`limit_concurrency` counts idle connections too, so a flood of them would turn every
real request into a 503. Here the gate refuses or makes room *before* uvicorn sees
the connection, and a request (headers and body) must arrive within `header_timeout`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from crisisbot.executors import AlarmPriority
from crisisbot.listeners import ConnectionGate, Deadline, ListenerLimits


HOLD = 3.0  # seconds a new console connection may wait while an alarm is dispatched
PER_TURN = 16  # console reads handled per event-loop turn (Pacer)


class Pacer:
    """Handles the console's reads a few per event-loop turn, in arrival order.

    asyncio runs every callback that is ready in one turn before it polls the sockets
    again: 500 flood connections whose requests arrived together made one turn of
    150-265 ms (measured with a loop-lag probe), and an alarm's webhook or DC-09 bytes
    arriving meanwhile waited for the whole of it, before the alarm could even be
    parsed. Paced, a turn holds at most PER_TURN console reads, so an input's bytes are
    seen within a few milliseconds (and then hold the console back:
    executors.AlarmPriority.pulse).

    With `hold`, no read is handled while an alarm is taken in or dispatched (HOLD s at
    most): reads queued just before it began were handled in the middle of the dispatch,
    a few milliseconds a turn, and were the largest console work in the slowest alarms'
    event-loop traces under a login flood (issue 15)."""

    def __init__(self, per_turn: int = PER_TURN, hold: AlarmPriority | None = None) -> None:
        self.per_turn = per_turn
        self.hold = hold
        self._queue: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._scheduled = False

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._queue.append((fn, args))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        if self.hold is not None and self.hold.busy:
            self.hold.when_quiet(self._handle, HOLD)  # then a batch, whatever comes next
            return
        self._handle()

    def _handle(self) -> None:
        for _ in range(min(self.per_turn, len(self._queue))):
            fn, args = self._queue.popleft()
            fn(*args)
        if self._queue:
            asyncio.get_running_loop().call_soon(self._turn)  # after the next poll of the sockets
        else:
            self._scheduled = False


class GuardedH11Protocol(H11Protocol):
    gate: ConnectionGate  # set on the subclass `guarded_protocol` builds
    limits: ListenerLimits
    hold: AlarmPriority | None = None
    pacer: Pacer | None = None  # the console's listener: reads handled a few per loop turn

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.busy = False
        self._lost = False
        self._deadline = Deadline(self.loop, self._expired)
        peer = transport.get_extra_info("peername")
        self._admitted = self.gate.admit(self, str(peer[0]) if peer else "?")
        if not self._admitted:
            transport.abort()
            return
        super().connection_made(transport)
        self._deadline.arm(self.limits.header_timeout, "header")  # a client sends its request at once
        if self.hold is not None and self.hold.busy:
            # an alarm is being taken in or dispatched: this request waits in the kernel, at
            # no cost to the event loop, until it is over (executors.AlarmPriority)
            transport.pause_reading()
            self.hold.when_quiet(transport.resume_reading, HOLD)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._lost = True
        self._deadline.cancel()
        self.gate.release(self)
        super().connection_lost(exc)
        if self.cycle is not None and self.cycle.response_complete:
            # the request's cycle calls back into this protocol (`on_response`): dropped once
            # answered, the closed connection is freed at once instead of left to the garbage
            # collector's slow full passes (crisisbot/listeners.py, Deadline)
            self.cycle = None  # type: ignore[assignment]  # as uvicorn starts it (h11_impl.py)

    def data_received(self, data: bytes) -> None:
        if self.pacer is not None:
            self.pacer.submit(self._paced, self._handle_data, data)
        else:
            self._handle_data(data)

    def eof_received(self) -> None:
        if self.pacer is not None:
            self.pacer.submit(self._paced, super().eof_received)  # after the data before it
        else:
            super().eof_received()

    def _paced(self, fn: Callable[..., None], *args: Any) -> None:
        if not self._lost:
            fn(*args)

    def _handle_data(self, data: bytes) -> None:
        self.gate.touch(self)
        if not self.busy and self._deadline.reason != "header":  # first bytes of the next request
            self._deadline.arm(self.limits.header_timeout, "header")
        super().data_received(data)
        self._follow_cycle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_cycle()

    def evict(self) -> None:
        self._deadline.cancel()
        self.transport.close()

    def _follow_cycle(self) -> None:
        """Receiving (headers, then body): the header deadline runs, so a trickled body is
        cut off like trickled headers; busy from the whole request to the end of the
        response; then idle again."""
        in_request = self.cycle is not None and not self.cycle.response_complete
        receiving = in_request and self.conn.their_state is h11.SEND_BODY
        if in_request and not receiving:
            if not self.busy:
                self.busy = True
                self._deadline.cancel()
        elif not in_request and self.busy:
            self.busy = False
            if not self.transport.is_closing():
                self._deadline.arm(self.limits.idle_timeout, "idle")

    def _expired(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(gate: ConnectionGate, hold: AlarmPriority | None = None) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, bound to this listener's gate."""
    attrs: dict[str, Any] = {"gate": gate, "limits": gate.limits, "hold": hold,
                             "pacer": Pacer(hold=hold) if hold is not None else None}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), attrs)
