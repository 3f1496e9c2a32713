"""Modbus trigger: detection latency against the poll interval, and polling CPU cost.

1. Latency: a pymodbus server in this process; the benchmark sets a discrete input
   ("presses the button") at a random moment and measures until the alarm is stored
   in a real SqliteStore. Expected: about debounce x poll interval, spread over one poll.
2. CPU: 20 devices x 50 inputs polled every 200 ms, servers in a child process so
   only the polling side is measured; ratio to a bare pymodbus loop doing the same
   reads in the same run.

    python -m benchmarks.bench_modbus [--presses 8] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import random
import statistics
import tempfile
import time
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from crisisbot.models import Alarm
from crisisbot.store.sqlite import SqliteStore
from triggers.modbus import ModbusConfig, ModbusTrigger

DEVICES, INPUTS, POLL = 20, 50, 0.2


class StoreSink:
    """Durable storage only; records when each alarm was safely stored."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.stored = asyncio.Event()

    async def submit(self, alarm: Alarm) -> str:
        await self.store.add_alarm(alarm)
        self.stored.set()
        return alarm.id

    async def seen_nonce(self, scope: str, nonce: str, ttl: float) -> bool:
        return False


def device() -> SimDevice:
    bits = [SimData(0, count=INPUTS, values=False, datatype=DataType.BITS)]
    return SimDevice(1, simdata=(bits, [SimData(0, count=INPUTS, values=False, datatype=DataType.BITS)],
                                 [SimData(0, count=8, values=0)], [SimData(0, count=8, values=0)]))


async def latency(store: SqliteStore, poll: float, debounce: int, presses: int) -> list[float]:
    server = ModbusTcpServer(device(), address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    sink = StoreSink(store)
    config = ModbusConfig.model_validate({"type": "modbus", "devices": {"hall": {
        "host": "127.0.0.1", "port": port, "site": "bench", "poll": poll,
        "inputs": [{"name": "btn", "address": 0, "debounce": debounce}]}}})
    trigger = ModbusTrigger("bench", config, sink)
    await trigger.start()
    results = []
    try:
        for _ in range(presses):
            await asyncio.sleep(poll * (debounce + 1) + random.uniform(0, poll))
            sink.stored.clear()
            pressed = time.perf_counter()
            await server.context.async_setValues(1, 2, 0, [True])
            await asyncio.wait_for(sink.stored.wait(), 10)
            results.append(time.perf_counter() - pressed)
            await server.context.async_setValues(1, 2, 0, [False])
    finally:
        await trigger.stop()
        await server.shutdown()
    return results


def serve(ports: "multiprocessing.Queue[list[int]]", seconds: float) -> None:
    async def run() -> None:
        servers = [ModbusTcpServer(device(), address=("127.0.0.1", 0)) for _ in range(DEVICES)]
        for s in servers:
            await s.serve_forever(background=True)
        ports.put([s.transport.sockets[0].getsockname()[1] for s in servers])
        await asyncio.sleep(seconds)
    asyncio.run(run())


async def bare_loop(ports: list[int], seconds: float) -> float:
    """What any poller must do at least: one read of 50 inputs per device per interval."""
    clients = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=1, retries=0, reconnect_delay=0) for p in ports]
    for c in clients:
        await c.connect()
    deadline = time.perf_counter() + seconds

    async def poll(client: AsyncModbusTcpClient) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            reply = await client.read_discrete_inputs(0, count=INPUTS, device_id=1)
            assert not reply.isError()
            await asyncio.sleep(max(0.0, POLL - (time.perf_counter() - started)))

    cpu = time.process_time()
    await asyncio.gather(*(poll(c) for c in clients))
    used = time.process_time() - cpu
    for c in clients:
        c.close()
    return used / seconds


async def trigger_cpu(store: SqliteStore, ports: list[int], seconds: float) -> tuple[float, int]:
    config = ModbusConfig.model_validate({"type": "modbus", "devices": {
        f"dev{i}": {"host": "127.0.0.1", "port": p, "site": "bench", "poll": POLL,
                    "inputs": [{"name": f"in{n}", "address": n} for n in range(INPUTS)]}
        for i, p in enumerate(ports)}})
    trigger = ModbusTrigger("bench", config, StoreSink(store))
    await trigger.start()
    await asyncio.sleep(0.5)  # connections up
    polls, cpu = trigger.stats["polls"], time.process_time()
    await asyncio.sleep(seconds)
    used = time.process_time() - cpu
    polls = trigger.stats["polls"] - polls
    await trigger.stop()
    return used / seconds, polls


async def bench(presses: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "bench.db")
        await store.open()
        try:
            print("Modbus detection latency, button press -> alarm stored in SqliteStore "
                  f"({presses} presses each)")
            for poll in (0.05, 0.1, 0.2):
                for debounce in (1, 2):
                    lat = [x * 1000 for x in await latency(store, poll, debounce, presses)]
                    print(f"  poll {poll * 1000:4.0f} ms, debounce {debounce}: median {statistics.median(lat):6.1f} ms"
                          f"  max {max(lat):6.1f} ms  (expected ~{(debounce - 0.5) * poll * 1000:.0f} ms + storage)")
            queue: multiprocessing.Queue[list[int]] = multiprocessing.Queue()
            child = multiprocessing.Process(target=serve, args=(queue, 2 * seconds + 10), daemon=True)
            child.start()
            try:
                ports = queue.get(timeout=20)
                bare = await bare_loop(ports, seconds)
                ours, polls = await trigger_cpu(store, ports, seconds)
            finally:
                child.terminate()
                child.join()
        finally:
            await store.close()
    expected = DEVICES / POLL * seconds
    print(f"CPU polling {DEVICES * INPUTS} inputs on {DEVICES} devices every {POLL * 1000:.0f} ms "
          f"(servers in another process, {seconds:.0f} s)")
    print(f"  bare pymodbus loop : {bare * 100:5.1f} % of one core")
    print(f"  ModbusTrigger      : {ours * 100:5.1f} % of one core  ({polls} polls, {polls / expected:.0%} of schedule)")
    print(f"  ratio trigger / bare loop: {ours / bare:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presses", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args(argv)
    for noisy in ("crisisbot", "pymodbus"):  # per-alarm log lines would swamp the figures
        logging.getLogger(noisy).setLevel(logging.ERROR)
    asyncio.run(bench(args.presses, args.seconds))


if __name__ == "__main__":
    main()
