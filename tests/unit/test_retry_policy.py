"""The one retry policy (crisisbot/retry.py): pauses, attempts, deadline and Retry-After,
driven by a virtual clock (no real sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from crisisbot.errors import PermanentError, TransientError
from crisisbot.retry import RetryPolicy


class VirtualTime:
    def __init__(self) -> None:
        self.now, self.pauses = 0.0, []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(round(seconds, 6))
        self.now += seconds


async def run(policy: RetryPolicy, outcomes: list[BaseException | None], time: VirtualTime, **kwargs) -> int:
    """Attempts until one does not fail; returns how many were made."""
    made = 0
    async for attempt in policy.retrying(retry_on=TransientError, clock=time.clock, sleep=time.sleep, **kwargs):
        with attempt:
            made += 1
            if (error := outcomes.pop(0)) is not None:
                raise error
    return made


def test_pauses_double_up_to_the_cap_and_success_ends_the_loop():
    time = VirtualTime()
    made = asyncio.run(run(RetryPolicy(first=0.5, cap=3.0), [TransientError("x")] * 5 + [None], time))
    assert made == 6 and time.pauses == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_the_last_failure_is_raised_as_itself_once_attempts_are_used():
    time = VirtualTime()
    with pytest.raises(TransientError, match="third"):
        asyncio.run(run(RetryPolicy(first=1.0, attempts=3),
                        [TransientError("first"), TransientError("second"), TransientError("third")], time))
    assert time.pauses == [1.0, 2.0]


def test_a_failure_not_worth_retrying_is_raised_at_once():
    time = VirtualTime()
    with pytest.raises(PermanentError):
        asyncio.run(run(RetryPolicy(first=1.0), [TransientError("busy"), PermanentError("refused")], time))
    assert time.pauses == [1.0]


def test_no_pause_runs_past_the_deadline_and_none_starts_after_it():
    time = VirtualTime()
    with pytest.raises(TransientError):
        asyncio.run(run(RetryPolicy(first=1.0), [TransientError("x")] * 10, time, deadline=2.5))
    assert time.pauses == [1.0, 1.5] and time.now == 2.5  # one last attempt at the deadline, then up


def test_the_pause_the_peer_asked_for_replaces_the_computed_one():
    time = VirtualTime()
    asyncio.run(run(RetryPolicy(first=0.5), [TransientError("429", retry_after=4.0), None], time))
    assert time.pauses == [4.0]


def test_before_sleep_sees_each_failure_and_its_pause():
    time, seen = VirtualTime(), []
    asyncio.run(run(RetryPolicy(first=0.25), [TransientError("a"), TransientError("b"), None], time,
                    before_sleep=lambda error, pause: seen.append((str(error), pause))))
    assert seen == [("a", 0.25), ("b", 0.5)]


def test_jitter_only_shortens_a_pause():
    policy = RetryPolicy(first=1.0, cap=8.0, jitter=0.2)
    assert all(0.8 * 8.0 <= policy.pause(6) <= 8.0 for _ in range(100))


def test_call_tries_once_outside_the_loop_then_under_the_same_policy():
    time, seen, outcomes = VirtualTime(), [], [TransientError("a"), TransientError("b"), None]

    async def once() -> str:
        if (error := outcomes.pop(0)) is not None:
            raise error
        return "done"

    result = asyncio.run(RetryPolicy(first=0.5, attempts=3).call(
        once, retry_on=TransientError, clock=time.clock, sleep=time.sleep,
        before_sleep=lambda error, pause: seen.append((str(error), pause))))
    assert result == "done" and seen == [("a", 0.5), ("b", 1.0)]
    outcomes.append(PermanentError("refused"))
    with pytest.raises(PermanentError):  # not worth retrying: raised from the first try, no pause
        asyncio.run(RetryPolicy(first=0.5).call(once, retry_on=TransientError, sleep=time.sleep))
    assert len(time.pauses) == 2
