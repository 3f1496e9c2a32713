"""Console login under attack: atomic lockout, per-address throttling with back-off, no
account enumeration, password hashing on a bounded pool of its own."""

from __future__ import annotations

import asyncio
import threading

import pytest

from console_helpers import PASSWORD, client, console_daemon, enable_console, login
from crisisbot.executors import Pool, PoolFull
from crisisbot.web.throttle import LoginThrottle, Refused, ThrottleRules


async def test_concurrent_wrong_guesses_are_counted_before_hashing_and_lock(workspace):
    enable_console(workspace, isolation="inline")
    async with console_daemon(workspace) as daemon:
        async with client(daemon, limits=None) as http:
            answers = await asyncio.gather(*(login(http, "operator", f"guess-{i}") for i in range(72)))
            right = await login(http, "operator")  # the right password, from the locked address
        hashed = daemon.runtime.executors.hashing.completed
    codes = [a.status_code for a in answers]
    assert codes.count(401) <= 5 and codes.count(429) == 72 - codes.count(401)
    assert hashed <= 5  # refused attempts never reached the hash
    assert right.status_code == 429 and "Too many failed attempts" in right.text


async def test_an_attackers_address_is_locked_while_the_operator_still_logs_in(workspace):
    enable_console(workspace, isolation="inline")
    async with console_daemon(workspace) as daemon:
        async with client(daemon, "127.0.0.2") as attacker:
            guesses = [(await login(attacker, "operator", "wrong")).status_code for _ in range(7)]
            still_locked = await login(attacker, "operator")
        async with client(daemon, "127.0.0.1") as operator:
            answer = await login(operator, "operator")
            listing = await operator.get("/api/incidents")
        await daemon.web.refusals.audit.flush()
        audit = [e for e in await daemon.runtime.store.audit_entries() if e.kind.startswith("console.")]
    assert guesses[:5] == [401] * 5 and guesses[5:] == [429, 429]
    assert still_locked.status_code == 429
    assert answer.status_code == 303 and listing.status_code == 200
    by_kind = {}
    for entry in audit:
        by_kind.setdefault(entry.kind, []).append(entry.data)
    assert {e["client"] for e in by_kind["console.login_failed"]} == {"127.0.0.2"}
    assert sum(e["count"] for e in by_kind["console.login_refused"]) == 3
    assert by_kind["console.login"] == [{"user": "operator", "client": "127.0.0.1"}]


async def test_spraying_many_account_names_from_one_address_locks_that_address(workspace):
    enable_console(workspace)
    async with console_daemon(workspace) as daemon:
        async with client(daemon, "127.0.0.3") as sprayer:
            codes = [(await login(sprayer, f"user{i}", "Winter2026!")).status_code for i in range(21)]
            real = await login(sprayer, "admin")
        async with client(daemon, "127.0.0.1") as operator:
            elsewhere = await login(operator, "admin")
    assert codes[:20] == [401] * 20 and codes[20] == 429 and real.status_code == 429
    assert elsewhere.status_code == 303


async def test_unknown_and_real_names_get_the_same_answer_and_the_same_hash(workspace):
    enable_console(workspace, isolation="inline")
    async with console_daemon(workspace) as daemon:
        pool = daemon.runtime.executors.hashing
        async with client(daemon) as http:
            before = pool.completed
            real = await login(http, "operator", "wrong password")
            after_real = pool.completed
            unknown = await login(http, "nobody", "wrong password")
            after_unknown = pool.completed
    assert (real.status_code, real.text) == (unknown.status_code, unknown.text)
    assert real.status_code == 401 and "Wrong user name or password." in real.text
    assert after_real - before == 1 and after_unknown - after_real == 1  # one scrypt each, same cost


def test_lockout_backs_off_exponentially_and_forgives_after_a_quiet_day():
    now = [1000.0]
    throttle = LoginThrottle(ThrottleRules(per_account_address=3, per_address=100, lockout=60, lockout_max=600),
                             clock=lambda: now[0])
    for _ in range(3):
        throttle.reserve("alice", "10.0.0.9").failed()
    waits = []
    for _ in range(4):
        with pytest.raises(Refused) as refused:
            throttle.reserve("alice", "10.0.0.9")
        waits.append(refused.value.retry_after)
        now[0] += refused.value.retry_after  # wait the lock out, then guess wrong again
        throttle.reserve("alice", "10.0.0.9").failed()
    assert waits == [60, 120, 240, 480]
    with pytest.raises(Refused) as capped:
        throttle.reserve("alice", "10.0.0.9")
    assert capped.value.retry_after == 600  # the cap
    throttle.reserve("alice", "10.0.0.1").succeeded()  # another address is not concerned
    now[0] += 86400 + 601
    throttle.reserve("alice", "10.0.0.9").succeeded()  # a quiet day later, a fresh start


async def test_the_hashing_pool_refuses_at_once_when_its_queue_is_full():
    pool = Pool("hashing", workers=1, queue=1)
    release = threading.Event()
    first = asyncio.ensure_future(pool.run(release.wait))
    second = asyncio.ensure_future(pool.run(release.wait))
    await asyncio.sleep(0)
    with pytest.raises(PoolFull):
        await pool.run(release.wait)
    release.set()
    assert await first and await second
    assert pool.stats()["refused"] == 1 and await pool.run(lambda: PASSWORD) == PASSWORD
    pool.shutdown()


async def test_new_console_connections_wait_while_an_alarm_is_dispatched(workspace):
    enable_console(workspace, isolation="inline")
    async with console_daemon(workspace) as daemon:
        priority = daemon.runtime.executors.priority
        async with client(daemon) as http:
            with priority.urgent():  # as while the meeting, snapshots and emails go out
                held = asyncio.ensure_future(http.get("/console/login"))
                await asyncio.sleep(0.3)
                waited = not held.done()
            page = await held
    assert waited and page.status_code == 200


async def test_requests_without_a_session_wait_for_the_dispatch_but_operators_do_not(workspace):
    enable_console(workspace, isolation="inline")
    async with console_daemon(workspace) as daemon:
        priority = daemon.runtime.executors.priority
        async with client(daemon) as operator, client(daemon, "127.0.0.7") as stranger:
            assert (await login(operator, "operator")).status_code == 303
            await stranger.get("/console/login")  # both connections are open before the alarm
            with priority.urgent():
                held = asyncio.ensure_future(stranger.get("/console/login"))
                served = await operator.get("/api/incidents")  # answered during the dispatch
                waited = not held.done()
            page = await held
    assert served.status_code == 200 and waited and page.status_code == 200
