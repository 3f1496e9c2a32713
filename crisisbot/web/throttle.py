"""Console login throttling per (account, client address) and per client address.

What django-axes (lockout by username + IP) and Home Assistant's IP ban do, so that
guesses from an attacker's address never lock the operator out from theirs, with an
exponential back-off: each failure past the limit doubles the lock, up to a cap.

Attempts are *reserved* before the password is hashed and settled after: the check
and the count are one synchronous step on the event loop, so N concurrent guesses
cannot all read "4 failures" and all get hashed (the old read-hash-write race).
Unknown account names are counted exactly like real ones: the throttle tells
nothing about which names exist.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable
from crisisbot.errors import LoginThrottled as Refused  # noqa: F401 - re-exported for existing importers

MAX_KEYS = 100_000  # memory bound: the oldest idle records are forgotten first


@dataclass(slots=True)
class _Record:
    failures: int = 0
    in_flight: int = 0
    locked_until: float = 0.0
    last: float = 0.0


@dataclass(frozen=True, slots=True)
class ThrottleRules:
    per_account_address: int = 5  # failures of one account from one address before a lock
    per_address: int = 20  # failures from one address (any account names) before a lock
    lockout: float = 60.0  # first lock; doubles with each further failure
    lockout_max: float = 3600.0
    forget_after: float = 86400.0  # a quiet record starts again from zero


class Attempt:
    """One reserved attempt; exactly one of `succeeded()` / `failed()` / `abandon()` settles it."""

    def __init__(self, throttle: "LoginThrottle", keys: tuple[tuple[str, ...], ...]) -> None:
        self._throttle = throttle
        self._keys = keys
        self._settled = False

    def succeeded(self) -> None:
        if not self._settled:
            self._settled = True
            self._throttle._settle(self._keys, failed=False)

    def failed(self) -> None:
        if not self._settled:
            self._settled = True
            self._throttle._settle(self._keys, failed=True)

    def abandon(self) -> None:
        """The attempt never reached a verdict (server busy): it counts for nothing."""
        if not self._settled:
            self._settled = True
            self._throttle._release(self._keys)


class LoginThrottle:
    def __init__(self, rules: ThrottleRules = ThrottleRules(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self._clock = clock
        self._records: OrderedDict[tuple[str, ...], _Record] = OrderedDict()

    def _limits(self, account: str, address: str) -> list[tuple[tuple[str, ...], int]]:
        return [(("pair", account, address), self.rules.per_account_address),
                (("address", address), self.rules.per_address)]

    def _record(self, key: tuple[str, ...], now: float) -> _Record:
        record = self._records.get(key)
        if record is None or (record.in_flight == 0 and now - record.last > self.rules.forget_after
                              and record.locked_until <= now):
            record = _Record(last=now)
            self._records[key] = record
            while len(self._records) > MAX_KEYS:
                self._records.popitem(last=False)
        self._records.move_to_end(key)
        return record

    def reserve(self, account: str, address: str) -> Attempt:
        """Count this attempt now, or raise Refused(retry_after) without counting it."""
        now = self._clock()
        limits = self._limits(account, address)
        records = [(self._record(key, now), limit) for key, limit in limits]
        wait = 0.0
        for record, limit in records:
            if record.locked_until > now:
                wait = max(wait, record.locked_until - now)
            elif record.in_flight and record.failures + record.in_flight >= limit:
                # at the limit with verdicts still pending (after a lock: one try at a time)
                wait = max(wait, 1.0)
        if wait > 0:
            raise Refused(wait)
        for record, _ in records:
            record.in_flight += 1
            record.last = now
        return Attempt(self, tuple(key for key, _ in limits))

    def _release(self, keys: tuple[tuple[str, ...], ...]) -> None:
        for key in keys:
            record = self._records.get(key)
            if record is not None and record.in_flight > 0:
                record.in_flight -= 1

    def _settle(self, keys: tuple[tuple[str, ...], ...], failed: bool) -> None:
        self._release(keys)
        now = self._clock()
        pair, address = keys
        if not failed:
            self._records.pop(pair, None)  # the address keeps its history: other names it tried
            return
        for key, limit in ((pair, self.rules.per_account_address), (address, self.rules.per_address)):
            record = self._records.get(key)
            if record is None:
                record = self._records[key] = _Record()
            record.failures += 1
            record.last = now
            beyond = record.failures - limit
            if beyond >= 0:
                lock = min(self.rules.lockout_max, self.rules.lockout * 2 ** min(beyond, 32))
                record.locked_until = max(record.locked_until, now + lock)

    def locked(self, account: str, address: str) -> bool:
        now = self._clock()
        return any((r := self._records.get(key)) is not None and r.locked_until > now
                   for key, _ in self._limits(account, address))


class HashBudget:
    """A token bucket on login hashes across every client: `rate` per second, `burst` at once.

    The per-address rules cannot stop a flood spread over many addresses (1,500 guesses
    from 250 addresses are 6 each): without a global bound, each failing login costs a
    scrypt hash, 16 MB of memory traffic and ~30 ms of CPU, so a flood could take a core
    of a small machine. Past the budget a login is refused before hashing (429), whatever
    the account name, so the answer still tells nothing about which names exist. Hand-written:
    one bucket is a dozen lines, a rate-limiting dependency would bring far more."""

    def __init__(self, rate: float = 4.0, burst: int = 8, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> float:
        """0.0 when a hash may start now (and counts it), else the seconds until one may."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def give_back(self) -> None:
        """The hash did not run after all (its pool was full)."""
        self._tokens = min(float(self.burst), self._tokens + 1.0)
