"""The one retry policy: every loop that tries again after a failure goes through here.

Exponential backoff from `first`, doubled each time up to `cap`; bounded by a number of
attempts, by a deadline (a step's, the store's patience), or both; a `retry_after` the peer
asked for (a throttling Graph or Teams webhook) replaces the computed pause; no pause runs
past the deadline. Built on tenacity, so the loops read the same everywhere:

    async for attempt in policy.retrying(retry_on=transient, deadline=deadline):
        with attempt:
            await send()

The last failure is raised as itself once the attempts or the time are used up. Only what
tenacity does not do is written here: the deadline is an instant on a given clock (the
event loop's, or time.monotonic), not a delay since the first attempt; and `call`, for hot
paths (every store write), pays for tenacity (~30 us a loop) only once a first try failed.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

Clock = Callable[[], float]
T = TypeVar("T")
RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


@dataclass(frozen=True)
class RetryPolicy:
    first: float  # the pause after the first failure, in seconds
    cap: float = math.inf  # the longest pause
    attempts: int | None = None  # tries in all, the first included; None: until the deadline
    jitter: float = 0.0  # each pause shortened by up to this fraction (reconnecting clients spread out)

    def pause(self, failures: int) -> float:
        """The pause after `failures` failed attempts (1 for the first)."""
        base = min(self.cap, self.first * 2 ** (failures - 1)) if self.first > 0 else 0.0
        return base * (1 - self.jitter * random.random()) if self.jitter else base

    def retrying(
        self,
        *,
        retry_on: RetryOn,
        deadline: float | None = None,
        clock: Clock = time.monotonic,
        before_sleep: Callable[[BaseException, float], Any] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> AsyncRetrying:
        """An async iterator of attempts. `retry_on`: which failures are worth another try;
        `before_sleep(error, pause)`: to log or record the failure before pausing."""
        predicate = _predicate(retry_on)

        def stop(state: RetryCallState) -> bool:
            if self.attempts is not None and state.attempt_number >= self.attempts:
                return True
            return deadline is not None and clock() >= deadline

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            asked = getattr(error, "retry_after", None)
            pause = asked if isinstance(asked, (int, float)) and asked >= 0 else self.pause(state.attempt_number)
            return pause if deadline is None else min(pause, max(0.0, deadline - clock()))

        def report(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if before_sleep is not None and error is not None and state.next_action is not None:
                before_sleep(error, state.next_action.sleep)

        return AsyncRetrying(stop=stop, wait=wait, retry=retry_if_exception(predicate),
                             before_sleep=report, sleep=sleep, reraise=True)

    async def call(self, fn: Callable[[], Awaitable[T]], *, retry_on: RetryOn, **options: Any) -> T:
        """`await fn()`, tried again under this policy (same options as `retrying`); the first
        try runs outside tenacity, so a call that succeeds at once costs nothing more."""
        try:
            return await fn()
        except Exception as exc:  # noqa: BLE001 - judged by retry_on right below
            if not _predicate(retry_on)(exc):
                raise
            first: list[BaseException] = [exc]
        async for attempt in self.retrying(retry_on=retry_on, **options):
            with attempt:
                if first:
                    raise first.pop()  # the first try's failure, counted and reported as tenacity's own
                result = await fn()
        return result


def _predicate(retry_on: RetryOn) -> Callable[[BaseException], bool]:
    if isinstance(retry_on, (type, tuple)):
        return lambda exc: isinstance(exc, retry_on)
    return retry_on
