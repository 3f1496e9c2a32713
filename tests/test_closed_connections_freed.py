"""Closed connections are freed at once by reference counting, not left as cyclic garbage
for the collector's full passes (those paused the event loop, and the alarm in flight,
60-150 ms each under a login flood: crisisbot/gc_policy.py, listeners.Deadline)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import httpx

from crisisbot.listeners import Deadline
from crisisbot.web.guarded_http import GuardedH11Protocol
from sinks import RecordingSink
from triggers.webhook import WebhookConfig, WebhookTrigger


class Owner:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.fired = 0
        self.deadline = Deadline(loop, self.expired)

    def expired(self) -> None:
        self.fired += 1


def living(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


async def test_a_deadline_fires_for_its_owner_and_does_not_keep_it_alive() -> None:
    loop = asyncio.get_running_loop()
    owner = Owner(loop)
    owner.deadline.arm(0.01, "idle")
    await asyncio.sleep(0.05)
    assert owner.fired == 1
    gc.disable()
    try:
        gone = weakref.ref(owner)
        del owner
        assert gone() is None  # no cycle owner -> deadline -> owner's method
    finally:
        gc.enable()


async def test_closed_http_connections_leave_no_cyclic_garbage() -> None:
    trigger = WebhookTrigger("hook", WebhookConfig.model_validate(
        {"type": "webhook", "host": "127.0.0.1", "port": 0}), RecordingSink())
    await trigger.start()
    gc.collect()
    gc.disable()
    try:
        before = living(GuardedH11Protocol)
        for _ in range(5):  # answered, then closed
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{trigger.port}/health")).status_code == 200
        idle = [await asyncio.open_connection("127.0.0.1", trigger.port) for _ in range(5)]
        for _, writer in idle:  # opened and closed without a request
            writer.close()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if living(GuardedH11Protocol) == before:
                break
        assert living(GuardedH11Protocol) == before
    finally:
        gc.enable()
        await trigger.stop()
