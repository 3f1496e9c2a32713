"""The console takes a burst of connections a few per event-loop turn (web/background.py,
pace_accepts), so an alarm input's bytes ready in the same turn do not wait behind a
hundred new console connections; every connection is still served."""

from __future__ import annotations

import asyncio
from collections import Counter

from crisisbot.executors import AlarmPriority
from crisisbot.web.background import ACCEPT_BATCH, BackgroundServer


async def app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def burst(hold: AlarmPriority | None) -> tuple[Counter[int], int]:
    """Connections admitted per loop turn for a burst of 60, and how many were answered."""
    server = BackgroundServer(app, "127.0.0.1", 0, "console", hold=hold)
    port = await server.start()
    turns = 0
    running = True

    def tick() -> None:
        nonlocal turns
        turns += 1
        if running:
            asyncio.get_running_loop().call_soon(tick)

    admitted: Counter[int] = Counter()
    admit = server.gate.admit

    def counting(conn, peer) -> bool:
        admitted[turns] += 1
        return admit(conn, peer)

    server.gate.admit = counting  # type: ignore[method-assign]

    async def one() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answered = (await reader.readline()).startswith(b"HTTP/1.1 200")
        writer.close()
        return answered

    try:
        tick()
        answered = sum(await asyncio.gather(*(one() for _ in range(60))))
    finally:
        running = False
        await server.stop()
    return admitted, answered


async def test_a_burst_of_console_connections_is_accepted_a_few_per_loop_turn() -> None:
    admitted, answered = await burst(AlarmPriority())
    assert answered == 60
    assert max(admitted.values()) <= ACCEPT_BATCH, admitted


async def test_other_listeners_keep_asyncios_own_accept_batch() -> None:
    admitted, answered = await burst(None)  # an alarm input (webhook): never paced
    assert answered == 60
    assert max(admitted.values()) > ACCEPT_BATCH, admitted


async def test_a_request_on_a_console_connection_opened_before_a_dispatch_waits_for_its_end() -> None:
    """Reads the Pacer has queued are not handled while an alarm is dispatched: a flood's
    keep-alive connections, admitted before the alarm, used to be served in its middle."""
    priority = AlarmPriority()
    server = BackgroundServer(app, "127.0.0.1", 0, "console", hold=priority)
    port = await server.start()
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        first = await reader.readuntil(b"ok")  # keep-alive: the connection stays open and read
        with priority.urgent():
            writer.write(request)
            try:
                await asyncio.wait_for(reader.readline(), 0.3)
                answered_during = True
            except asyncio.TimeoutError:
                answered_during = False
        second = await asyncio.wait_for(reader.readuntil(b"ok"), 10)
    finally:
        writer.close()
        await server.stop()
    assert first.startswith(b"HTTP/1.1 200")
    assert not answered_during and second.startswith(b"HTTP/1.1 200")
