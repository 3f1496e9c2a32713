"""What an input remembers across reloads and restarts: held buttons, silence
deadlines, faults already reported, recently seen frames.

Without it a restart forgets that a panic button is held down (it fires again), that
a panel was already reported silent (a second `input_fault`), or that a frame without
timestamp was already stored (stored twice). Each trigger keeps a few small JSON
values under keys of its own; the daemon hands the same `TriggerState` to the
trigger's next incarnation on reload, and loads it from the store on start.

Writes go to the store off the alarm path: `put` only marks the value, and one
background task commits what changed (coalesced, at most every `WRITE_EVERY`
seconds while values keep changing). A crash can lose the last fraction of a second
of changes, never an alarm: triggers store the alarm first and note the state after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from crisisbot.retry import RetryPolicy

log = logging.getLogger(__name__)

WRITE_EVERY = 0.2  # seconds between two commits while values keep changing
RETRY_AFTER = 1.0  # seconds before trying again when the store refused a write
# until the writer is stopped (flush's timeout cancels it): a refused write stays in memory
SAVE_RETRY = RetryPolicy(first=RETRY_AFTER, cap=RETRY_AFTER)

Save = Callable[[str, dict[str, Any]], Awaitable[None]]


class StateStore(Protocol):
    """The two store calls a trigger's state needs (crisisbot.store.base.Store has them)."""

    async def load_trigger_state(self, trigger: str) -> dict[str, Any]: ...

    async def save_trigger_state(self, trigger: str, changes: dict[str, Any]) -> None: ...


class TriggerState:
    """A trigger's small key -> JSON value memory, persisted through `save` when given."""

    def __init__(self, trigger: str, values: dict[str, Any] | None = None, save: Save | None = None) -> None:
        self.trigger = trigger
        self._values: dict[str, Any] = dict(values or {})
        self._dirty: dict[str, Any] = {}  # key -> new value, None = forget the key
        self._save = save
        self._writer: asyncio.Task[None] | None = None
        self.write_errors = 0

    @classmethod
    async def load(cls, store: "StateStore", trigger: str) -> "TriggerState":
        """The state the trigger left in the store (empty for a new trigger)."""
        try:
            values = await store.load_trigger_state(trigger)
        except NotImplementedError:
            log.warning("the store keeps no trigger state: trigger %s forgets held buttons and silence "
                        "timers when the daemon restarts", trigger)
            return cls(trigger)

        async def save(name: str, changes: dict[str, Any]) -> None:
            await store.save_trigger_state(name, changes)

        return cls(trigger, values, save)

    # -- reading -------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def items(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        return ((k, v) for k, v in list(self._values.items()) if k.startswith(prefix))

    # -- writing -------------------------------------------------------------
    def put(self, key: str, value: Any) -> None:
        """Remember `value` (JSON-able; None forgets the key); persisted in the background."""
        if value is None:
            if self._values.pop(key, None) is None and key not in self._dirty:
                return
        elif self._values.get(key) == value:
            return
        else:
            self._values[key] = value
        if self._save is None:
            return
        self._dirty[key] = value
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write(), name=f"state-{self.trigger}")

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until every change so far is committed (a trigger's stop, the daemon's)."""
        writer = self._writer
        if writer is None or writer.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(writer), timeout)
        except TimeoutError:
            log.error("state of trigger %s not saved within %.0f s; a restart may repeat its last changes",
                      self.trigger, timeout)
            writer.cancel()  # the store is closing: do not retry against it
            await asyncio.gather(writer, return_exceptions=True)

    async def _write(self) -> None:
        while self._dirty:
            started = await SAVE_RETRY.call(self._commit, retry_on=Exception, before_sleep=self._refused)
            if self._dirty:
                await asyncio.sleep(max(0.0, WRITE_EVERY - (time.monotonic() - started)))

    async def _commit(self) -> float:
        """Save what changed so far; a refused batch goes back into memory for the next try
        (under any newer value of the same key). Returns when this try started."""
        assert self._save is not None
        started = time.monotonic()
        batch, self._dirty = self._dirty, {}
        try:
            await self._save(self.trigger, batch)
        except Exception:
            self._dirty = {**batch, **self._dirty}
            raise
        return started

    def _refused(self, exc: BaseException, pause: float) -> None:
        self.write_errors += 1  # kept in memory; retried, and visible in the log
        log.warning("could not save the state of trigger %s (%s); retrying", self.trigger, exc)


def wall_from_monotonic(mono: float, clock: Callable[[], float]) -> float:
    """A monotonic instant of `clock` as Unix time, so it means something after a restart."""
    return time.time() - (clock() - mono)


def monotonic_from_wall(wall: float, clock: Callable[[], float]) -> float:
    return clock() - (time.time() - wall)
