"""WAL syncs on threads of their own, each answered on the event loop in one hop.

Why not `loop.run_in_executor`: under a DC-09 burst every group commit (~18 frames)
starts a sync, and each went through a concurrent future, an asyncio future chained to
it and two turns of the event loop before its batches were answered. Here a request is
one append under a condition, and a finished sync one `call_soon_threadsafe` of the
store's callback with the sync's error, if any (hand-written: no library offers a thread
that answers an asyncio loop without wrapping each call in futures).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Callable

log = logging.getLogger(__name__)

Done = Callable[[int, "BaseException | None"], None]


class WalSyncThreads:
    """Runs `sync` for each `request(upto)`, up to `threads` at once; `done(upto, error)`
    follows on the requesting event loop once that sync has returned or raised."""

    def __init__(self, sync: Callable[[], None], done: Done, threads: int) -> None:
        self._sync, self._done, self._size = sync, done, threads
        self._cond = threading.Condition()
        self._requests: deque[tuple[int, asyncio.AbstractEventLoop]] = deque()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._idle: asyncio.Future[None] | None = None  # `stop` waits on it for the syncs in flight
        self.in_flight = 0  # requested and not yet answered (read and written on the event loop only)

    def request(self, upto: int) -> None:
        """Start a sync now (on the event loop); it covers every commit made before it."""
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        with self._cond:
            if not self._threads:  # all at once: an idle one waits on the condition, costing nothing
                self._threads = [threading.Thread(target=self._run, name=f"sqlite-wal-sync_{i}", daemon=True)
                                 for i in range(self._size)]
                for thread in self._threads:
                    thread.start()
            self._requests.append((upto, loop))
            self._cond.notify()

    async def stop(self) -> None:
        """Wait for the syncs in flight (their batches are committed: they get answered),
        then end the threads."""
        while self.in_flight:
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join()  # idle: each ends at once

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._requests and not self._stopping:
                    self._cond.wait()
                if not self._requests:
                    return
                upto, loop = self._requests.popleft()
            error: BaseException | None = None
            try:
                self._sync()
            except BaseException as exc:  # noqa: BLE001 - it fails the batches this sync covers
                error = exc
            try:
                loop.call_soon_threadsafe(self._finished, upto, error)
            except RuntimeError:  # the loop is closed: nobody is left to answer
                log.warning("WAL sync ended after its event loop closed; its alarms were never answered")

    def _finished(self, upto: int, error: BaseException | None) -> None:
        self.in_flight -= 1
        try:
            self._done(upto, error)
        finally:
            if not self.in_flight and self._idle is not None and not self._idle.done():
                self._idle.set_result(None)
