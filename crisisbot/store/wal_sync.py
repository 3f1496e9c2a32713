"""WAL syncs on threads of their own, each answered on the event loop in one hop.

Why not `loop.run_in_executor`: under a DC-09 burst every group commit (~18 frames)
starts a sync, and each went through a concurrent future, an asyncio future chained to
it and two turns of the event loop before its batches were answered. Here a request is
one put on a `queue.SimpleQueue`, and a finished sync one `call_soon_threadsafe` of the
store's callback with the sync's error, if any (hand-written: no library offers a thread
that answers an asyncio loop without wrapping each call in futures).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Callable

log = logging.getLogger(__name__)

Done = Callable[[int, "BaseException | None"], None]


class WalSyncThreads:
    """Runs `sync` for each `request(upto)`, up to `threads` at once; `done(upto, error)`
    follows on the requesting event loop once that sync has returned or raised."""

    def __init__(self, sync: Callable[[], None], done: Done, threads: int) -> None:
        self._sync, self._done, self._size = sync, done, threads
        self._requests: queue.SimpleQueue[tuple[int, asyncio.AbstractEventLoop] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle: asyncio.Future[None] | None = None  # `stop` waits on it for the syncs in flight
        self.in_flight = 0  # requested and not yet answered (read and written on the event loop only)

    def request(self, upto: int) -> None:
        """Start a sync now (on the event loop); it covers every commit made before it."""
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        if not self._threads:  # all at once: an idle one waits on the queue, costing nothing
            self._threads = [threading.Thread(target=self._run, name=f"sqlite-wal-sync_{i}", daemon=True)
                             for i in range(self._size)]
            for thread in self._threads:
                thread.start()
        self._requests.put((upto, loop))

    async def stop(self) -> None:
        """Wait for the syncs in flight (their batches are committed: they get answered),
        then end the threads."""
        while self.in_flight:
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle
        threads, self._threads = self._threads, []
        for _ in threads:
            self._requests.put(None)  # one each: a thread ends when it takes one
        for thread in threads:
            thread.join()  # idle: each ends at once

    def _run(self) -> None:
        while (request := self._requests.get()) is not None:
            upto, loop = request
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
