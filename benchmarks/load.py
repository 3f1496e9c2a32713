"""Hostile load for the isolation test and benchmark: a console login flood and idle
connections, from many loopback addresses (127.0.0.0/8 is all loopback on Linux, and
each address is a different client to the daemon's per-address throttles).

Raw asyncio streams rather than an HTTP client: 1,500 concurrent requests must cost the
*attacker's* process little, so that the daemon's CPU, not the load generator, is what
the measure shows."""

from __future__ import annotations

import asyncio
import os
import resource
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator


STOP_GRACE = 0.5  # seconds a stopped sustained flood waits for its attempts in flight


def raise_open_files() -> None:
    """Thousands of sockets in this process (and in a daemon started from it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def addresses(first: int, count: int) -> Iterator[str]:
    """`count` loopback addresses from 127.<first>.x.y on, skipping 127.0.0.1."""
    n = first * 65536 + 2
    while count > 0:
        a, b, c = (n >> 16) & 255, (n >> 8) & 255, n & 255
        if 0 < c < 255:
            yield f"127.{a}.{b}.{c}"
            count -= 1
        n += 1


@dataclass
class FloodResult:
    codes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    cpu: float = 0.0  # seconds of CPU the attacker's process used (FloodProcess only)

    @property
    def answered(self) -> int:
        return sum(self.codes.values())


async def _bad_login(port: int, source: str, name: str, result: FloodResult) -> None:
    body = f"username={name}&password=not-the-password".encode()
    request = (b"POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError as exc:
        result.errors[type(exc).__name__] += 1
        return
    try:
        writer.write(request)
        await writer.drain()
        status = await reader.readline()
        if not status:  # the listener's connection cap closed it before any answer
            result.errors["closed"] += 1
            return
        result.codes[int(status.split()[1])] += 1
    except (OSError, IndexError, ValueError) as exc:
        result.errors[type(exc).__name__] += 1
    finally:
        writer.close()


async def login_flood(port: int, count: int = 1500, sources: int = 250, first_block: int = 1,
                      result: FloodResult | None = None) -> FloodResult:
    """`count` concurrent wrong logins, spread over `sources` addresses and as many names."""
    result = result or FloodResult()
    froms = list(addresses(first_block, sources))
    await asyncio.gather(*(_bad_login(port, froms[i % sources], f"intrus{i}", result) for i in range(count)))
    return result


async def sustained_flood(port: int, concurrency: int, first_block: int, result: FloodResult,
                          stop: Callable[[], bool], per_address: int = 6,
                          paused: Callable[[], bool] = lambda: False) -> FloodResult:
    """Wrong logins kept `concurrency` in flight until `stop()` is true: each answer starts
    another. Every `per_address` attempts come from a new address (1,500 concurrent from
    250 addresses, as `login_flood`), so the per-address throttle does not simply refuse
    the flood once and for all: fresh attackers keep reaching the password pool."""
    froms = addresses(first_block, 1 << 22)
    source = next(froms)
    started = 0

    running = asyncio.Event()  # cleared while paused: the workers wait on it, they do not poll
    running.set()

    async def watch_pause() -> None:  # one poll of the other process's flag for all workers
        while not stop():
            if paused():
                running.clear()
            else:
                running.set()
            await asyncio.sleep(0.01)
        running.set()

    async def worker() -> None:
        nonlocal source, started
        while not stop():
            if not running.is_set():  # between the benchmark's blocks: no attempt starts
                await running.wait()
                continue
            started += 1
            if started % per_address == 0:
                source = next(froms)
            await _bad_login(port, source, f"intrus{started}", result)

    watcher = asyncio.ensure_future(watch_pause())
    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    while not stop():
        await asyncio.sleep(0.02)
    # attempts the daemon holds back (or never accepts) would keep the flood alive for up
    # to its timeouts: what is not answered shortly after the stop is abandoned
    await asyncio.wait(workers, timeout=STOP_GRACE)
    for task in [*workers, watcher]:
        task.cancel()
    await asyncio.gather(*workers, watcher, return_exceptions=True)
    return result


class IdleConnections:
    """TCP connections opened and never written to, until `close()`."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.failed = 0

    async def open(self, port: int, count: int, first_block: int = 200, sources: int = 100) -> None:
        froms = list(addresses(first_block, sources))

        async def one(i: int) -> None:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(froms[i % sources], 0))
                self.writers.append(writer)
            except OSError:
                self.failed += 1

        await asyncio.gather(*(one(i) for i in range(count)))

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()


def _flood_main(port: int, count: int, sources: int, first_block: int, nice: int, under_way, results,
                stop=None, pause=None) -> None:
    """Child process body: run the flood, signal once 100 answers came back, report codes.
    With `stop` (an Event), `count` logins are kept in flight until it is set (sustained)."""
    try:
        os.setsid()  # a scheduling group of its own (Linux autogroups are per session)
    except OSError:
        pass
    async def run() -> FloodResult:
        result = FloodResult()
        if stop is None:
            flood = asyncio.ensure_future(login_flood(port, count, sources, first_block, result))
        else:
            parent = os.getppid()  # a benchmark killed midway must not leave its flood running

            def over() -> bool:
                return stop.is_set() or os.getppid() != parent

            flood = asyncio.ensure_future(sustained_flood(
                port, count, first_block, result, over, per_address=max(1, count // sources),
                paused=(lambda: pause.is_set()) if pause is not None else (lambda: False)))
        while not flood.done():
            if result.answered >= min(100, count):
                under_way.set()
            await asyncio.sleep(0.01)
        await flood
        return result

    raise_open_files()
    if nice:
        os.nice(nice)
    result = asyncio.run(run())
    under_way.set()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.send((dict(result.codes), dict(result.errors), usage.ru_utime + usage.ru_stime))


class FloodProcess:
    """The login flood from another process: the attacker's CPU is not the measurer's.

    A real attacker's CPU is another machine's; here the flood's process shares the
    daemon's two cores. It runs in a session of its own: on Linux, with scheduler
    autogroups, CPU is shared fairly between sessions first, so the attacker takes its
    own share rather than the one the daemon and the measuring SMTP server live in (in
    the same session, at the same priority, it took most of theirs in the very moments
    the daemon had stopped serving it). `nice` lowers it further (19: it only gets what
    the others leave, which also slows the flood itself down: too kind to the daemon).

    `sustained`: `count` logins stay in flight (each answer starts another) until `stop()`,
    so that many alarms can be measured under one flood; `pause()` and `resume()` hold
    and restart it (the attempts in flight finish), so that one attacker process serves
    many short blocks of a benchmark."""

    def __init__(self, port: int, count: int = 1500, sources: int = 250, first_block: int = 1,
                 nice: int = 0, sustained: bool = False) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.under_way = context.Event()
        self._stop = context.Event() if sustained else None
        self._pause = context.Event() if sustained else None
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_flood_main, daemon=True,
                                        args=(port, count, sources, first_block, nice, self.under_way, send,
                                              self._stop, self._pause))
        self._process.start()

    async def started(self) -> None:
        while not self.under_way.is_set():
            await asyncio.sleep(0.01)

    def pause(self) -> None:
        """A sustained flood starts no new login until `resume()`."""
        assert self._pause is not None, "only a sustained flood pauses"
        self._pause.set()

    def resume(self) -> None:
        assert self._pause is not None, "only a sustained flood pauses"
        self._pause.clear()

    def stop(self) -> None:
        """A sustained flood starts no new login; those in flight still finish (`result`)."""
        if self._stop is not None:
            self._stop.set()

    async def result(self) -> FloodResult:
        while not self._receive.poll():
            await asyncio.sleep(0.02)
        codes, errors, cpu = self._receive.recv()
        self._process.join()
        return FloodResult(Counter(codes), Counter(errors), cpu)
