"""Deliver personal messages through an ordered chain of mailers.

Each mailer gets a few attempts with exponential backoff; what it still could not
deliver moves on to the next one (a second relay, Graph, the local outbox). A
recipient the server *rejected* is final: another relay would reject it too.
Everything happens before one shared deadline, so a dead relay cannot hold the
playbook hostage.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Sequence

from connectors.base import Mailer
from crisisbot.models import DeliveryResult, DeliveryStatus, OutgoingEmail

log = logging.getLogger(__name__)

FINAL = (DeliveryStatus.sent, DeliveryStatus.rejected)

ResultSink = Callable[[DeliveryResult], Awaitable[None]]


async def deliver(
    messages: Sequence[OutgoingEmail],
    mailers: Sequence[Mailer],
    *,
    sender: str,
    deadline: float,
    retries: int,
    backoff: float,
    on_result: ResultSink,
) -> dict[str, DeliveryResult]:
    """Return the last result per message key; `on_result` sees every verdict as it comes."""
    loop = asyncio.get_running_loop()
    last: dict[str, DeliveryResult] = {}
    pending = list(messages)
    for mailer in mailers:
        for attempt in range(retries + 1):
            if not pending:
                return last
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            reported: set[str] = set()

            async def report(result: DeliveryResult, via: Mailer = mailer) -> None:
                result.transport = result.transport or via.name
                last[result.key] = result
                reported.add(result.key)
                await on_result(result)

            try:
                async with asyncio.timeout(remaining):
                    await mailer.send_each(pending, sender, report)
            except Exception as exc:  # noqa: BLE001 - a broken transport fails its batch, not the step
                reason = ("no answer before the step deadline" if isinstance(exc, TimeoutError)
                          else f"{type(exc).__name__}: {exc}")
                for m in pending:
                    if m.key not in reported:
                        await report(DeliveryResult(m.key, m.recipient.email, DeliveryStatus.failed, reason))
            pending = [m for m in pending if last.get(m.key) is None or last[m.key].status not in FINAL]
            if any(not last[m.key].retryable for m in pending if m.key in reported):
                log.info("%s cannot deliver on a later attempt either; moving on", mailer.name)
                break
            if pending and attempt < retries:
                pause = min(backoff * (2**attempt), max(0.0, deadline - loop.time()))
                log.info("%d message(s) not delivered by %s; retrying in %.2fs", len(pending), mailer.name, pause)
                await asyncio.sleep(pause)
        if pending:
            log.warning("%d message(s) not delivered by %s; trying the next mailer", len(pending), mailer.name)
    return last
