"""The notify service: one message to people over an ordered list of channels, at least once.

Every message has an idempotency key (incident, step, person) and a Message-ID
derived from it. Its verdict is committed right after the channel's answer (group
commit: verdicts arriving together share one commit), so a restart resends only
what no server confirmed — plus, after a crash, at most the message in flight on
each open session, with the same Message-ID. What is not delivered by the deadline
goes on in the background (the spool); when fewer people than `require` were
reached, the shortfall is kept and the mail.fallback people are told (meta-alert).

The email step, escalation tiers, stand-down and follow-up rounds all send through
`Notify.send`; none of them builds another's step to do it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from connectors.base import Mailer
from crisisbot.delivery import FINAL, VerdictJournal, deliver
from crisisbot.errors import NotReached, StepFailed
from crisisbot.executors import PoolFull
from crisisbot.health import Check
from crisisbot.imaging import EmailImages
from crisisbot.mime import freeze
from crisisbot.models import DeliveryResult, DeliveryStatus, OutgoingEmail, Recipient
from crisisbot.notify.channels import channels_of
from crisisbot.notify.keys import delivery_key, required
from crisisbot.notify.render import build_messages, images_of, meta_message
from crisisbot.notify.request import MessageContext, Request
from crisisbot.notify.shortfall import Shortfall, Shortfalls
from crisisbot.notify.spool import Spool
from crisisbot.store.base import DeliveryRecord

if TYPE_CHECKING:
    from crisisbot.runtime import Runtime
    from crisisbot.services import StepServices

log = logging.getLogger(__name__)

RENDER_CHUNK = 5
RESEND = (DeliveryStatus.pending, DeliveryStatus.sending)  # in flight at a crash or between attempts


class Notify:
    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self.journal = VerdictJournal(runtime.store)
        self.shortfalls = Shortfalls(runtime.store)
        self.spool = Spool(runtime, self.journal, self.shortfalls)
        runtime.health.add("deliveries", self._check)

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Resume what the spool holds from before a restart, then retry in the background."""
        await self.spool.start()

    async def stop(self) -> None:
        await self.spool.stop()
        try:
            await asyncio.wait_for(self.journal.flush(), 5)
        except TimeoutError:
            pass
        await self.journal.close()

    async def _check(self) -> Check:
        """GET /health: degraded while messages wait or a step is short of its rule,
        down while delivery verdicts cannot be written."""
        body: dict[str, Any] = {"waiting": len(self.spool.waiting), "short_of_rule": self.shortfalls.describe()}
        problem = self.journal.error or self.spool.error
        if problem:
            return Check("down", {**body, "error": problem})
        return Check("degraded" if self.spool.waiting or self.shortfalls else "up", body)

    # -- sending -----------------------------------------------------------------------
    async def send(self, request: Request) -> dict[str, Any]:
        """Deliver the request's message to each of its people once; return who was reached.
        Raises NotReached (after the meta-alert) when fewer than `require` were."""
        runtime = self.runtime
        store = runtime.store
        ctx = request.context
        incident_id, step_id = ctx.incident.id, request.step_id
        loop = asyncio.get_running_loop()
        timeout = request.timeout or runtime.bundle.config.incidents.step_timeout
        deadline = loop.time() + timeout  # rendering counts too
        recipients = runtime.recipients(request.to)
        done = await store.get_deliveries(incident_id, step_id)
        previous = {r.person_id: done.get(delivery_key(incident_id, step_id, r.person_id)) for r in recipients}
        # a message still in flight at a crash (sending) or between attempts (pending) is sent again,
        # with the same Message-ID; one already handed to the background (retrying) stays there
        todo = [r for r in recipients if (rec := previous[r.person_id]) is None or rec.status in RESEND]
        earlier = [rec for rec in previous.values() if rec is not None and rec.status not in RESEND]
        if earlier:
            ctx.log.info("%d recipient(s) already handled before a restart; not sending again", len(earlier))

        mail = runtime.bundle.config.mail
        channels = list(request.via or mail.via)
        journal = self.journal
        results: dict[str, DeliveryResult] = {}
        messages: list[OutgoingEmail] = []
        if todo:
            people = {delivery_key(incident_id, step_id, r.person_id): r for r in todo}
            attempts: dict[str, int] = {k: (done[k].attempts if k in done else 0) for k in people}

            def record(key: str, status: DeliveryStatus, detail: str = "", transport: str = "") -> DeliveryRecord:
                person = people[key]
                return DeliveryRecord(key, incident_id, step_id, person.person_id, person.email,
                                      status, detail, transport, attempts[key])

            first = channels[0] if channels else ""
            # "sending" is on disk before any DATA; its commit overlaps with the rendering
            announced = asyncio.create_task(journal.write(
                [record(k, DeliveryStatus.sending, f"handed to {first}", first) for k in people]))
            try:
                messages = await self._render(request, todo, channels, mail.sender)
            finally:
                await announced

            async def on_attempt(batch: list[OutgoingEmail], mailer: Mailer) -> None:
                if mailer.name == first and all(attempts[m.key] == (done[m.key].attempts if m.key in done else 0)
                                                for m in batch):
                    return  # the first attempt, announced above
                await journal.write([record(m.key, DeliveryStatus.sending, f"handed to {mailer.name}", mailer.name)
                                     for m in batch])

            async def on_result(result: DeliveryResult) -> None:
                attempts[result.key] += 1
                status = result.status if result.status in FINAL else DeliveryStatus.pending
                await journal.write([record(result.key, status, result.detail, result.transport)])

            results = await deliver(
                messages, channels_of(runtime.connectors, channels), sender=mail.sender, deadline=deadline,
                retries=mail.retries, backoff=mail.backoff, on_result=on_result, on_attempt=on_attempt,
            )
            await journal.flush()
            undelivered = [m for m in messages if m.key not in results or results[m.key].status not in FINAL]
            if undelivered:
                why = {m.key: (results[m.key].detail if m.key in results else "no transport took it")
                       for m in undelivered}
                handed = [record(m.key, DeliveryStatus.retrying, f"{why[m.key]}; retrying in the background")
                          for m in undelivered]
                await self.spool.hand_over(incident_id, step_id, mail.sender, channels, undelivered, handed)
        statuses = {rec.key: rec.status for rec in earlier}
        statuses.update({m.key: (results[m.key].status if m.key in results and results[m.key].status in FINAL
                                 else DeliveryStatus.retrying) for m in messages})
        address = {delivery_key(incident_id, step_id, r.person_id): r.email for r in recipients}
        by_status = {status: sorted(address[k] for k, v in statuses.items() if v is status and k in address)
                     for status in DeliveryStatus}
        reached = len(by_status[DeliveryStatus.sent])
        needed = required(request.require, len(recipients))
        summary = {"recipients": len(recipients), "reached": reached, "required": needed,
                   "sent": reached, "rejected": by_status[DeliveryStatus.rejected],
                   "retrying": by_status[DeliveryStatus.retrying], "failed": by_status[DeliveryStatus.failed],
                   "resumed": bool(earlier)}
        if reached >= needed:
            return summary
        await self.shortfalls.note(Shortfall(incident_id, step_id, needed, reached, len(recipients)))
        # the meta-alert's own budget: the committee's attempts may have used the whole deadline
        # (the step's outer guard leaves half a deadline more)
        alerted = await self.meta_alert(ctx, step_id, summary, 0.4 * timeout)
        raise NotReached(
            f"reached {reached} of {len(recipients)} ({needed} required): {len(by_status[DeliveryStatus.rejected])} "
            f"rejected, {len(by_status[DeliveryStatus.retrying])} retrying in the background; {alerted}"
        )

    def _frozen(self, request: Request, recipients: list[Recipient], images: EmailImages,
                fallbacks: list[str], sender: str) -> list[OutgoingEmail]:
        """Render and serialize some messages (on the rendering pool: CPU work, off the loop)."""
        return [freeze(m, sender) for m in build_messages(request, recipients, images, fallbacks)]

    async def _render(self, request: Request, todo: list[Recipient], channels: list[str],
                      sender: str) -> list[OutgoingEmail]:
        """Render and serialize every message before the first DATA (while the sessions connect)."""
        runtime = self.runtime
        mailers = channels_of(runtime.connectors, channels)
        if mailers:
            mailers[0].prepare(len(todo))  # connect while we render
        images = images_of(request)
        for external in sorted({person.external for person in todo}) if images.snapshots else ():
            await asyncio.to_thread(images.for_recipient, external)  # resize/blur off the event loop
        messages: list[OutgoingEmail] = []
        fallbacks: list[str] = []
        rendering = runtime.executors.rendering
        for start in range(0, len(todo), RENDER_CHUNK):
            chunk = todo[start:start + RENDER_CHUNK]
            try:  # off the event loop, on the rendering pool (time budget and cap: render_limits.py)
                messages += await rendering.run(self._frozen, request, chunk, images, fallbacks, sender)
            except PoolFull:  # hundreds of incidents rendering at once: render here rather than wait
                messages += self._frozen(request, chunk, images, fallbacks, sender)
                await asyncio.sleep(0)  # let the connections progress between chunks
        for why in fallbacks:  # the message still goes out (built-in text); the failure is not silent
            await runtime.store.audit("template.fallback", request.context.incident.id,
                                      {"step": request.step_id, "template": request.template, "error": why})
        return messages

    async def meta_alert(self, ctx: MessageContext, step_id: str, summary: dict[str, Any], budget: float) -> str:
        """Tell the configured fallback people, through their own path, that the committee was not reached."""
        runtime = self.runtime
        mail = runtime.bundle.config.mail
        fallback = mail.fallback
        incident = ctx.incident
        detail = {"step": step_id, "reached": summary["reached"], "required": summary["required"],
                  "recipients": summary["recipients"], "rejected": summary["rejected"],
                  "retrying": summary["retrying"]}
        if fallback is None:
            await runtime.store.audit("delivery.meta_alert_unconfigured", incident.id, detail)
            ctx.log.error("incident %s: step %s reached %d of %d people and no mail.fallback is configured",
                          incident.id, step_id, summary["reached"], summary["recipients"])
            return "no mail.fallback configured for a meta-alert"
        fallback_step = f"{step_id}-fallback"
        people = runtime.recipients(fallback.to)
        done = await runtime.store.get_deliveries(incident.id, fallback_step)
        todo = [p for p in people if (rec := done.get(delivery_key(incident.id, fallback_step, p.person_id))) is None
                or rec.status in RESEND]
        messages = [freeze(meta_message(ctx, fallback_step, person, summary), mail.sender) for person in todo]
        await runtime.store.audit("delivery.meta_alert", incident.id, {**detail, "to": [p.email for p in people],
                                                                        "via": list(fallback.via)})
        by_key = {m.key: m for m in messages}
        attempts = {m.key: 0 for m in messages}

        def record(key: str, status: DeliveryStatus, text: str, transport: str) -> DeliveryRecord:
            m = by_key[key]
            return DeliveryRecord(key, incident.id, fallback_step, m.recipient.person_id, m.recipient.email,
                                  status, text, transport, attempts[key])

        async def on_result(result: DeliveryResult) -> None:
            attempts[result.key] += 1
            status = result.status if result.status in FINAL else DeliveryStatus.pending
            await self.journal.write([record(result.key, status, result.detail, result.transport)])

        results = await deliver(messages, channels_of(runtime.connectors, list(fallback.via)), sender=mail.sender,
                                deadline=asyncio.get_running_loop().time() + budget,
                                retries=mail.retries, backoff=mail.backoff, on_result=on_result)
        await self.journal.flush()
        undelivered = [m for m in messages if m.key not in results or results[m.key].status not in FINAL]
        if undelivered:
            handed = [record(m.key, DeliveryStatus.retrying, "meta-alert not delivered yet; retrying in the background",
                             "") for m in undelivered]
            await self.spool.hand_over(incident.id, fallback_step, mail.sender, list(fallback.via), undelivered, handed)
        sent = sum(1 for r in results.values() if r.status is DeliveryStatus.sent)
        return f"meta-alert sent to {sent} of {len(people)} fallback recipient(s)" + (
            f", {len(undelivered)} retrying" if undelivered else "")


def notify_of(services: "StepServices") -> Notify:
    """The notify service lent to a step (the daemon and one-shot commands both build one)."""
    if services.notify is None:
        raise StepFailed("no notify service lent to this step: messages cannot be sent")
    return services.notify
