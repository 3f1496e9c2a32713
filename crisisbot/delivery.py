"""Deliver personal messages through an ordered chain of mailers, and journal every verdict.

Each mailer gets a few attempts with exponential backoff; what it still could not
deliver moves on to the next one (a second relay, Graph, the local outbox). A
recipient the server *rejected* is final: another relay would reject it too.
Everything happens before one shared deadline, so a dead relay cannot hold the
playbook hostage; what is still undelivered then is retried in the background
(crisisbot.notify).

SMTP is at-least-once: a crash between the server's 250 and our commit of it
resends that message (with the same Message-ID). `VerdictJournal` keeps that
window to one commit: a session waits for its verdict to be on disk before it
sends its next message, so a crash resends at most the message in flight on
each open session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Sequence

from connectors.base import Mailer
from crisisbot.models import DeliveryResult, DeliveryStatus, OutgoingEmail
from crisisbot.retry import RetryPolicy
from crisisbot.store.base import DeliveryRecord, Store

log = logging.getLogger(__name__)

FINAL = (DeliveryStatus.sent, DeliveryStatus.rejected)

ResultSink = Callable[[DeliveryResult], Awaitable[None]]
AttemptSink = Callable[[list[OutgoingEmail], Mailer], Awaitable[None]]

COMMIT_RETRY = RetryPolicy(first=0.05, cap=2.0)  # pauses between attempts at a failing verdict commit
COMMIT_STALL = 2.0  # seconds a commit may take before the sessions stop waiting for it


class VerdictJournal:
    """Commits delivery records as soon as they arrive; callers wait for their commit.

    Records arriving while a commit is in flight share the next one (group commit
    across messages that completed together). A commit that fails is retried with
    backoff until it succeeds, never dropped; meanwhile its callers are released
    (sending the alert matters more than recording it) and `error` says the daemon
    is unhealthy.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: list[tuple[list[DeliveryRecord], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._committing: asyncio.Future[None] | None = None
        self.error: str | None = None  # the last commit failure, while records wait unwritten
        self.unwritten = 0

    async def write(self, records: list[DeliveryRecord]) -> None:
        """Return once `records` are committed, or once a first commit attempt failed."""
        if not records:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((records, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="crisisbot-verdicts")
        if self.error is None:  # while the store fails, sending goes on at full speed
            await asyncio.shield(future)

    async def flush(self) -> None:
        """Wait until every queued record is on disk, or until the store is found failing
        (the writer keeps retrying; a step must not hang on its bookkeeping)."""
        while self._writer is not None and not self._writer.done() and self.error is None:
            await asyncio.wait({self._writer}, timeout=COMMIT_RETRY.first)

    async def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            if self._committing is not None:  # a commit stalled by the store: not left to run after it closes
                self._committing.cancel()
            await asyncio.gather(self._writer, *([self._committing] if self._committing else []),
                                 return_exceptions=True)
            if self.unwritten:
                log.error("%d delivery verdict(s) could not be written before shutdown", self.unwritten)

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            unwritten = 0

            def failed(exc: BaseException, pause: float) -> None:
                self.error = f"cannot record delivery verdicts: {type(exc).__name__}: {exc}"
                self.unwritten = unwritten
                log.error("%s; retrying in %.2fs", self.error, pause)
                _release(batch)

            tries = 0

            async def commit() -> None:
                nonlocal batch, tries, unwritten
                tries += 1
                if tries > 1:
                    batch += self._queue  # later verdicts join, in order: the last one wins
                    self._queue = []
                records = [r for group, _ in batch for r in group]
                unwritten = len(records)
                await self._commit(records, batch)

            # retried until written (no deadline: a verdict is never dropped), reported meanwhile;
            # `call`: the usual first-try success builds no retry machinery (one per verdict)
            await COMMIT_RETRY.call(commit, retry_on=Exception, before_sleep=failed)
            if self.error is not None:
                log.warning("delivery verdicts written again after a store failure")
            self.error, self.unwritten = None, 0
            _release(batch)

    async def _commit(self, records: list[DeliveryRecord],
                      batch: list[tuple[list[DeliveryRecord], asyncio.Future[None]]]) -> None:
        """Commit; a store that waits out a lock or a full disk by itself does not hold the
        SMTP sessions: past COMMIT_STALL they go on and the stall is reported."""
        commit = self._committing = asyncio.ensure_future(self.store.save_deliveries(records))
        done, _ = await asyncio.wait({commit}, timeout=COMMIT_STALL)
        if not done:
            problem = self.store.problem or f"no commit after {COMMIT_STALL:.0f}s"
            self.error = f"delivery verdicts wait for the store: {problem}"
            self.unwritten = len(records)
            log.error("%s", self.error)
            _release(batch)
        await commit


def _release(batch: list[tuple[list[DeliveryRecord], asyncio.Future[None]]]) -> None:
    for _, future in batch:
        if not future.done():
            future.set_result(None)


async def deliver(
    messages: Sequence[OutgoingEmail],
    mailers: Sequence[Mailer],
    *,
    sender: str,
    deadline: float,
    retries: int,
    backoff: float,
    on_result: ResultSink,
    on_attempt: AttemptSink | None = None,
) -> dict[str, DeliveryResult]:
    """Return the last result per message key; `on_result` sees every verdict as it comes
    (the transport waits for it), `on_attempt` each batch before a transport takes it."""
    loop = asyncio.get_running_loop()
    last: dict[str, DeliveryResult] = {}
    pending = list(messages)
    policy = RetryPolicy(first=backoff, attempts=retries + 1)
    for mailer in mailers:
        if not pending:
            return last

        def log_retry(exc: BaseException, pause: float, via: Mailer = mailer) -> None:
            log.info("%d message(s) not delivered by %s; retrying in %.2fs", len(pending), via.name, pause)

        try:
            async for attempt in policy.retrying(retry_on=_Undelivered, deadline=deadline, clock=loop.time,
                                                 before_sleep=log_retry):
                with attempt:
                    if deadline - loop.time() <= 0:
                        break
                    pending, worth_again = await _attempt(pending, mailer, sender, deadline - loop.time(), last,
                                                          on_result, on_attempt)
                    if pending and worth_again:
                        raise _Undelivered(len(pending))
        except _Undelivered:
            pass  # out of attempts or of time with this mailer
        if pending:
            log.warning("%d message(s) not delivered by %s; trying the next mailer", len(pending), mailer.name)
    return last


class _Undelivered(Exception):
    """Some messages are still to deliver, and another attempt with this mailer may do it."""


async def _attempt(pending: list[OutgoingEmail], mailer: Mailer, sender: str, remaining: float,
                   last: dict[str, DeliveryResult], on_result: ResultSink,
                   on_attempt: AttemptSink | None) -> tuple[list[OutgoingEmail], bool]:
    """One attempt of `mailer` at `pending`: what is still undelivered, and whether another
    attempt of the same mailer may deliver it."""
    reported: set[str] = set()

    async def report(result: DeliveryResult) -> None:
        result.transport = result.transport or mailer.name
        last[result.key] = result
        reported.add(result.key)
        await on_result(result)

    try:
        async with asyncio.timeout(remaining):
            if on_attempt is not None:
                await on_attempt(pending, mailer)
            await mailer.send_each(pending, sender, report)
    except Exception as exc:  # noqa: BLE001 - a broken transport fails its batch, not the step
        reason = ("no answer before the deadline" if isinstance(exc, TimeoutError)
                  else f"{type(exc).__name__}: {exc}")
        for m in pending:
            if m.key not in reported:
                await report(DeliveryResult(m.key, m.recipient.email, DeliveryStatus.failed, reason))
    pending = [m for m in pending if last.get(m.key) is None or last[m.key].status not in FINAL]
    if any(not last[m.key].retryable for m in pending if m.key in reported):
        log.info("%s cannot deliver on a later attempt either; moving on", mailer.name)
        return pending, False
    return pending, True
