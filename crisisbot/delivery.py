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

ResultSink = Callable[[list[DeliveryResult], int], Awaitable[None]]


async def deliver(
    messages: Sequence[OutgoingEmail],
    mailers: Sequence[Mailer],
    *,
    sender: str,
    deadline: float,
    retries: int,
    backoff: float,
    on_results: ResultSink,
) -> dict[str, DeliveryResult]:
    """Return the last result per message key; `on_results` is called after every attempt."""
    loop = asyncio.get_running_loop()
    last: dict[str, DeliveryResult] = {}
    pending = list(messages)
    attempts = 0
    for mailer in mailers:
        for attempt in range(retries + 1):
            if not pending:
                return last
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            attempts += 1
            try:
                async with asyncio.timeout(remaining):
                    results = await mailer.send(pending, sender)
            except Exception as exc:  # noqa: BLE001 - a broken transport fails its batch, not the step
                reason = "no answer before the step deadline" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                results = [
                    DeliveryResult(m.key, m.recipient.email, DeliveryStatus.failed, reason, mailer.name)
                    for m in pending
                ]
            for result in results:
                result.transport = result.transport or mailer.name
                last[result.key] = result
            await on_results(results, attempts)
            done = {r.key for r in results if r.status in FINAL}
            pending = [m for m in pending if m.key not in done]
            if pending and attempt < retries:
                pause = min(backoff * (2**attempt), max(0.0, deadline - loop.time()))
                log.info("%d message(s) not delivered by %s; retrying in %.2fs", len(pending), mailer.name, pause)
                await asyncio.sleep(pause)
        if pending:
            log.warning("%d message(s) not delivered by %s; trying the next mailer", len(pending), mailer.name)
    return last
