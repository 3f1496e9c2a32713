"""A login flood spread over many addresses costs a bounded number of password hashes, and
nothing of the console's starts while an alarm is dispatched: no new connection is
accepted, no new hash begins (the alarm path gets the CPU and the caches)."""

from __future__ import annotations

import asyncio
import socket
import threading

from console_helpers import PASSWORD, client, console_daemon, enable_console, login
from crisisbot.executors import AlarmPriority, Pool
from crisisbot.listeners import INPUT_ACTIVITY, ConnectionGate, ListenerLimits
from crisisbot.web.throttle import HashBudget


def test_the_hash_budget_allows_a_burst_then_a_steady_rate():
    now = [0.0]
    budget = HashBudget(rate=4.0, burst=8, clock=lambda: now[0])
    assert [budget.take() for _ in range(8)] == [0.0] * 8
    assert budget.take() == 0.25  # the next hash may start in a quarter of a second
    now[0] += 0.5
    assert budget.take() == 0.0 and budget.take() == 0.0 and budget.take() > 0
    budget.give_back()  # a hash that did not run after all is not charged
    assert budget.take() == 0.0
    now[0] += 3600
    assert [budget.take() for _ in range(9)].count(0.0) == 8  # a long quiet spell refills to the burst only


async def test_a_flood_from_many_addresses_is_refused_before_hashing_past_the_budget(workspace):
    enable_console(workspace, isolation="inline")
    async with console_daemon(workspace) as daemon:
        daemon.web.console.hash_budget = HashBudget(rate=4.0, burst=8, clock=lambda: 0.0)  # time stands still
        hashing = daemon.runtime.executors.hashing
        before = hashing.completed
        clients = [client(daemon, f"127.0.9.{i + 1}") for i in range(30)]
        try:
            answers = await asyncio.gather(*(login(http, f"intrus{i}", "wrong")
                                             for i, http in enumerate(clients)))
        finally:
            await asyncio.gather(*(http.aclose() for http in clients))
        hashed = hashing.completed - before
        async with client(daemon, "127.0.0.1") as operator:  # the budget refills: the operator gets in
            daemon.web.console.hash_budget = HashBudget()
            operator_answer = await login(operator, "operator", PASSWORD)
    codes = [a.status_code for a in answers]
    assert set(codes) <= {401, 429, 503}, codes
    assert hashed <= 8 and codes.count(429) >= 30 - 8
    refused = next(a for a in answers if a.status_code == 429)
    assert "Too many login attempts on this console" in refused.text and int(refused.headers["Retry-After"]) >= 1
    assert operator_answer.status_code == 303


async def test_no_new_console_connection_is_accepted_during_a_dispatch(workspace):
    enable_console(workspace, isolation="inline")
    async with console_daemon(workspace) as daemon:
        priority = daemon.runtime.executors.priority
        gate = daemon.web._server.gate
        with priority.urgent():
            raw = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", daemon.web.port), 5)
            raw.sendall(b"GET /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            await asyncio.sleep(0.3)
            admitted_during = gate.open  # the kernel holds the connection; the daemon has not taken it
        raw.settimeout(10)
        answer = await asyncio.to_thread(raw.recv, 64)
        raw.close()
    assert admitted_during == 0
    assert answer.startswith(b"HTTP/1.1 200")


async def test_no_new_hash_starts_during_a_dispatch():
    priority = AlarmPriority()
    pool = Pool("hashing", workers=2, queue=4, hold=priority)
    started = threading.Event()
    try:
        with priority.urgent():
            job = asyncio.ensure_future(pool.run(started.set))
            await asyncio.sleep(0.3)
            during = started.is_set()
        await job
    finally:
        pool.shutdown()
    assert not during and started.is_set()


async def test_the_hold_spans_the_gaps_between_the_sections_of_one_dispatch():
    priority = AlarmPriority()
    began: list[int] = []
    priority.on_busy(lambda: began.append(1))
    with priority.urgent():  # intake
        pass
    with priority.urgent():  # processing, a moment later: the same dispatch
        pass
    held_between = priority.busy
    await asyncio.sleep(AlarmPriority.GRACE * 4)
    assert held_between and not priority.busy and priority.quiet.is_set()
    assert began == [1]


async def test_what_a_dispatch_held_back_is_released_a_few_per_loop_turn_and_waits_again_for_the_next():
    priority = AlarmPriority()
    loop = asyncio.get_running_loop()
    turns = 0
    ticking = True

    def tick() -> None:
        nonlocal turns
        turns += 1
        if ticking:
            loop.call_soon(tick)

    released: list[int] = []
    with priority.urgent():
        for _ in range(100):  # a flood's requests, held while the alarm is dispatched
            priority.when_quiet(lambda: released.append(turns), at_most=30)
    tick()
    while len(released) < 40:
        await asyncio.sleep(0)
    with priority.urgent():  # the next alarm: what is still held waits for its end
        left = len(released)
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(released) == left < 100
    while len(released) < 100:
        await asyncio.sleep(0.01)
    ticking = False
    per_turn = {turn: released.count(turn) for turn in set(released)}
    assert max(per_turn.values()) <= AlarmPriority.RELEASE_PER_TURN, per_turn


async def test_refusals_from_many_addresses_are_written_at_once_only_up_to_a_cap_and_never_lost():
    from crisisbot.web.refusals import FIRST_AT_ONCE, RefusalAudit

    written: list[tuple[str, dict]] = []

    async def audit(kind, incident_id, data):
        written.append((kind, data))

    refusals = RefusalAudit(audit)
    for i in range(250):  # a flood spread over 250 addresses, two refusals each
        refusals.note("console.login_busy", None, f"127.0.1.{i}")
        refusals.note("console.login_busy", None, f"127.0.1.{i}")
    await asyncio.sleep(0)
    await asyncio.gather(*refusals._tasks)
    at_once = len(written)
    await refusals.flush()  # the window ends
    assert at_once == FIRST_AT_ONCE
    assert sum(data["count"] for _, data in written) == 500  # every refusal is counted
    assert {data["client"] for _, data in written} == {f"127.0.1.{i}" for i in range(250)}


async def test_a_windows_refusal_counts_are_written_as_one_batch():
    """250 addresses: the window's counts go to `audit_many` in one call (one store
    transaction, one command from the web process), not 250 writes."""
    from crisisbot.web.refusals import FIRST_AT_ONCE, RefusalAudit

    single: list[dict] = []
    batches: list[list[tuple]] = []

    async def audit(kind, incident_id, data):
        single.append(data)

    async def audit_many(entries):
        batches.append(entries)
        return len(entries)

    refusals = RefusalAudit(audit, audit_many=audit_many)
    for i in range(250):
        refusals.note("console.login_busy", None, f"127.0.1.{i}")
        refusals.note("console.login_busy", None, f"127.0.1.{i}")
    await asyncio.gather(*refusals._tasks)
    await refusals.flush()
    assert len(single) == FIRST_AT_ONCE and len(batches) == 1
    assert sum(d["count"] for d in single) + sum(d["count"] for _, _, d in batches[0]) == 500
    assert {d["client"] for _, _, d in batches[0]} == {f"127.0.1.{i}" for i in range(250)}
    await refusals.flush()  # nothing new: no empty batch
    assert len(batches) == 1


async def test_an_immediate_refusal_entry_waits_for_the_dispatch():
    from crisisbot.web.refusals import RefusalAudit

    priority = AlarmPriority()
    written: list[str] = []

    async def audit(kind, incident_id, data):
        written.append(kind)

    refusals = RefusalAudit(audit, hold=priority.wait_quiet)
    with priority.urgent():
        refusals.note("console.login_failed", None, "127.0.0.9", "intrus")
        await asyncio.sleep(0.3)
        during = list(written)
    await asyncio.gather(*refusals._tasks)
    assert during == [] and written == ["console.login_failed"]


async def test_bytes_on_an_alarm_input_hold_the_console_before_the_alarm_is_even_parsed(workspace):
    enable_console(workspace, isolation="inline")
    async with console_daemon(workspace) as daemon:
        priority = daemon.runtime.executors.priority
        assert not priority.busy
        INPUT_ACTIVITY.note()  # what the webhook and DC-09 listeners do on every read
        held = priority.busy and not priority.quiet.is_set()
        await asyncio.sleep(AlarmPriority.PULSE + AlarmPriority.GRACE * 4)
        released = not priority.busy
    assert held and released


async def test_only_an_alarm_input_s_bytes_pulse_the_alarm_priority():
    gate = ConnectionGate("webhook test", ListenerLimits())
    console = ConnectionGate("console test", ListenerLimits(), alarm_input=False)
    priority = AlarmPriority()
    unsubscribe = INPUT_ACTIVITY.subscribe(priority.pulse)
    try:
        console.touch(object())  # the console's own bytes hold nothing
        after_console = priority.busy
        gate.touch(object())
        after_input = priority.busy
    finally:
        unsubscribe()
        gate.close()
        console.close()
    assert not after_console and after_input


async def test_the_console_s_refusal_audit_waits_for_the_dispatch(workspace):
    enable_console(workspace, isolation="inline")
    async with console_daemon(workspace) as daemon:
        priority = daemon.runtime.executors.priority
        refusals = daemon.web.refusals.audit

        async def failed_logins() -> list:
            return [e for e in await daemon.runtime.store.audit_entries() if e.kind == "console.login_failed"]

        with priority.urgent():
            refusals.note("console.login_failed", None, "127.0.0.9", "intrus")
            await asyncio.sleep(0.3)
            during = await failed_logins()
        await asyncio.gather(*refusals._tasks)
        after = await failed_logins()
    assert during == [] and len(after) == 1
