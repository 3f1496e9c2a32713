"""Messages still undelivered at their deadline, retried in the background until they get through.

A message waits for its delivery only until its deadline; what is still undelivered
then is handed over here. Each message is kept in the store's outgoing spool (the
frozen bytes: a resend carries the same Message-ID and body) and retried in the
background over every channel of its chain, with exponential backoff capped at
`mail.retry_cap`, until it is delivered, refused for good (5xx), or its incident
ends (stood down or cancelled). The spool survives restarts: `start` resumes it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connectors.base import Mailer
from crisisbot import outgoing
from crisisbot.delivery import FINAL, VerdictJournal, deliver
from crisisbot.retry import RetryPolicy
from crisisbot.models import DeliveryResult, DeliveryStatus, OutgoingEmail
from crisisbot.notify.channels import channels_of
from crisisbot.notify.shortfall import ENDED, Shortfalls
from crisisbot.store.base import DeliveryRecord, SpooledMessage

if TYPE_CHECKING:
    from crisisbot.runtime import Runtime

log = logging.getLogger(__name__)

LOOK_EVERY = 2.0  # seconds: how soon a stood-down incident's messages stop waiting, at most


@dataclass
class Waiting:
    """One spooled message and when to try it next."""

    spooled: SpooledMessage
    message: OutgoingEmail
    attempts: int = 0
    tries: int = 0  # background rounds so far: drives the backoff
    next_at: float = 0.0


class Spool:
    def __init__(self, runtime: "Runtime", journal: VerdictJournal, shortfalls: Shortfalls) -> None:
        self.runtime = runtime
        self.journal = journal
        self.shortfalls = shortfalls
        self.waiting: dict[str, Waiting] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.error: str | None = None

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Resume what the spool holds from before a restart, then retry in the background."""
        try:
            spooled = await self.runtime.store.spooled()
        except NotImplementedError as exc:
            log.warning("%s: undelivered messages will not be retried after the step deadline", exc)
            return
        attempts: dict[str, int] = {}
        for incident_id in {s.incident_id for s in spooled}:
            for key, record in (await self.runtime.store.get_deliveries(incident_id)).items():
                attempts[key] = record.attempts
        for item in spooled:
            self.waiting[item.key] = Waiting(item, outgoing.decode(item.message), attempts.get(item.key, 0))
        if spooled:
            log.info("resuming %d undelivered message(s) from the outgoing spool", len(spooled))
        await self.shortfalls.load()
        self._task = asyncio.create_task(self._run(), name="crisisbot-notify")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # -- hand-over ---------------------------------------------------------------
    async def hand_over(self, incident_id: str, step_id: str, sender: str, channels: list[str],
                        messages: list[OutgoingEmail], records: list[DeliveryRecord]) -> None:
        """Keep `messages` (their records say `retrying`) until delivered or the incident ends."""
        spooled = [SpooledMessage(m.key, incident_id, step_id, sender, list(channels), outgoing.encode(m))
                   for m in messages]
        await self.journal.flush()  # the spool row must not be overtaken by an older verdict
        await self.runtime.store.spool(spooled, records)
        attempts = {r.key: r.attempts for r in records}
        loop = asyncio.get_running_loop()
        for item, message in zip(spooled, messages):
            waiting = Waiting(item, message, attempts.get(item.key, 0))
            waiting.next_at = loop.time() + self._pause(0)
            self.waiting[item.key] = waiting
        self._wake.set()

    # -- background retries -----------------------------------------------------------
    def _pause(self, tries: int) -> float:
        mail = self.runtime.bundle.config.mail
        return RetryPolicy(first=mail.backoff, cap=mail.retry_cap).pause(tries + 1)  # the one backoff

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._forget_ended()
                now = loop.time()
                due = [w for w in self.waiting.values() if w.next_at <= now]
                if due:
                    await self._retry(due)
                    continue
                wait = min([w.next_at - now for w in self.waiting.values()] + [LOOK_EVERY])
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), max(wait, 0.0))
                except TimeoutError:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the retry loop must outlive a failing store
                self.error = f"background delivery: {type(exc).__name__}: {exc}"
                log.exception("background delivery round failed; trying again")
                await asyncio.sleep(LOOK_EVERY)
            else:
                self.error = None

    async def _forget_ended(self) -> None:
        """Messages of an incident that was stood down or cancelled are not sent any more."""
        store = self.runtime.store
        incidents = {w.spooled.incident_id for w in self.waiting.values()} | self.shortfalls.incidents()
        for incident_id in incidents:
            incident = await store.get_incident(incident_id)
            if incident is not None and incident.status not in ENDED:
                continue
            why = f"incident {incident.status.value} before delivery" if incident else "incident no longer exists"
            dropped = [w for w in self.waiting.values() if w.spooled.incident_id == incident_id]
            await self.journal.write([self._record(w, DeliveryStatus.failed, why, "") for w in dropped])
            for w in dropped:
                self.waiting.pop(w.spooled.key, None)
            self.shortfalls.forget(incident_id)
            if dropped:
                log.info("%d undelivered message(s) of incident %s dropped: %s", len(dropped), incident_id, why)

    async def _retry(self, due: list[Waiting]) -> None:
        loop = asyncio.get_running_loop()
        chains: dict[tuple[str, tuple[str, ...]], list[Waiting]] = {}
        for w in due:
            chains.setdefault((w.spooled.sender, tuple(w.spooled.channels)), []).append(w)
        timeout = self.runtime.bundle.config.incidents.step_timeout
        for (sender, channels), items in chains.items():
            mailers = channels_of(self.runtime.connectors, list(channels))
            by_key = {w.spooled.key: w for w in items}
            if not mailers:
                log.error("no mail connector left of %s for %d waiting message(s)", ", ".join(channels), len(items))
                for w in items:
                    self._later(w, loop.time())
                continue

            async def on_attempt(batch: list[OutgoingEmail], mailer: Mailer) -> None:
                await self.journal.write([self._record(by_key[m.key], DeliveryStatus.sending,
                                                       f"handed to {mailer.name}", mailer.name) for m in batch])

            async def on_result(result: DeliveryResult) -> None:
                w = by_key[result.key]
                w.attempts += 1
                status = result.status if result.status in FINAL else DeliveryStatus.retrying
                await self.journal.write([self._record(w, status, result.detail, result.transport)])
                if result.status is DeliveryStatus.sent:
                    await self.shortfalls.reached(w.spooled.incident_id, w.spooled.step_id)

            results = await deliver([w.message for w in items], mailers, sender=sender,
                                    deadline=loop.time() + timeout, retries=0, backoff=0.0,
                                    on_result=on_result, on_attempt=on_attempt)
            for w in items:
                result = results.get(w.spooled.key)
                if result is not None and result.status in FINAL:
                    self.waiting.pop(w.spooled.key, None)
                else:
                    self._later(w, loop.time())

    def _later(self, w: Waiting, now: float) -> None:
        w.next_at = now + self._pause(w.tries)
        w.tries += 1

    @staticmethod
    def _record(w: Waiting, status: DeliveryStatus, detail: str, transport: str) -> DeliveryRecord:
        s, person = w.spooled, w.message.recipient
        return DeliveryRecord(s.key, s.incident_id, s.step_id, person.person_id, person.email, status,
                              detail, transport, w.attempts)
