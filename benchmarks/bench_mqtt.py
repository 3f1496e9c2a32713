"""MQTT trigger throughput through the local Mosquitto (127.0.0.1:1883).

A publisher in another process (started and warmed up before the clock starts) sends
N QoS 1 JSON messages; three subscribers are timed from the first publish to the last
message consumed, in the same run, over `--rounds` rounds taken in turn (the median
of each is reported, so a burst of load on a shared machine does not decide alone):
  bare aiomqtt   a subscriber that only counts (baseline)
  null sink      the trigger matching rules and building alarms, storing nothing
  SqliteStore    the trigger storing every alarm before its PUBACK

Each ratio is the median over the rounds of (bare run time / this run time), both runs
of one round, with the quartiles of those per-round ratios (their spread shows how much
the machine's load moved them); the CPU the subscriber's process spent per message (the
median over the rounds, every thread: the store's too) is printed beside it.

A burst larger than Mosquitto's `max_queued_messages` (default 1000) is partly dropped
by the broker for a subscriber that acknowledges only after storing, so the default
burst stays below it; raise that broker setting in production.

    python -m benchmarks.bench_mqtt [--messages 900] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import aiomqtt

from crisisbot.models import Alarm
from crisisbot.store.sqlite import SqliteStore
from triggers.mqtt import MqttConfig, MqttTrigger

BROKER = ("127.0.0.1", 1883)


class CountingSink:
    def __init__(self, store: SqliteStore | None, expected: int) -> None:
        self.store, self.expected, self.count = store, expected, 0
        self.done = asyncio.Event()

    async def submit(self, alarm: Alarm) -> str:
        if self.store is not None:
            await self.store.add_alarm(alarm)
        self.count += 1
        if self.count >= self.expected:
            self.done.set()
        return alarm.id

    async def seen_nonce(self, scope: str, nonce: str, ttl: float) -> bool:
        return False

    def known_site(self, site: str) -> bool:
        return True


def publish(topic: str, count: int) -> None:
    async def run() -> None:
        async with aiomqtt.Client(*BROKER, max_queued_outgoing_messages=count + 10) as client:
            for i in range(count):
                body = json.dumps({"action": "single", "battery": 90, "linkquality": 120, "n": i})
                await client.publish(f"{topic}/btn{i % 50}", body, qos=1)
    asyncio.run(run())


def _cpu() -> float:
    """CPU seconds of this process (every thread: the store's too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def warm() -> None:
    """Import the publisher's libraries in the worker before any clock starts."""


async def timed(pool: ProcessPoolExecutor, topic: str, count: int, consume: "asyncio.Future[None]") -> float:
    """Seconds from the first publish to the last message consumed."""
    started = time.perf_counter()
    await asyncio.get_running_loop().run_in_executor(pool, publish, topic, count)
    await asyncio.wait_for(consume, 60)
    return time.perf_counter() - started


async def bare(pool: ProcessPoolExecutor, topic: str, count: int) -> float:
    async with aiomqtt.Client(*BROKER) as client:
        await client.subscribe(f"{topic}/#", qos=1)

        async def consume() -> None:
            seen = 0
            async for _ in client.messages:
                seen += 1
                if seen >= count:
                    return

        return await timed(pool, topic, count, asyncio.ensure_future(consume()))


async def trigger_run(pool: ProcessPoolExecutor, topic: str, count: int, store: SqliteStore | None) -> float:
    client_id = f"crisisbot-bench-{uuid.uuid4().hex[:8]}"
    config = MqttConfig.model_validate({
        "type": "mqtt", "host": BROKER[0], "port": BROKER[1], "client_id": client_id,
        "rules": [{"topic": f"{topic}/+", "match": {"action": ["single", "double"]}, "site": "bench",
                   "zone": "{topic[2]}"}]})
    sink = CountingSink(store, count)
    trigger = MqttTrigger("bench", config, sink)
    await trigger.start()
    try:
        await asyncio.wait_for(trigger.subscribed.wait(), 10)
        return await timed(pool, topic, count, asyncio.ensure_future(sink.done.wait()))
    finally:
        await trigger.stop()
        async with aiomqtt.Client(*BROKER, identifier=client_id, clean_session=True):
            pass  # drop the persistent session


async def bench(count: int, rounds: int) -> None:
    base = f"crisisbot-bench/{uuid.uuid4().hex[:8]}"
    runs: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(1) as pool:
        await asyncio.get_running_loop().run_in_executor(pool, warm)
        store = SqliteStore(Path(tmp) / "bench.db")
        await store.open()
        try:
            for n in range(rounds):
                for index, (name, run) in enumerate((
                    ("bare aiomqtt subscriber", lambda t: bare(pool, t, count)),
                    ("MqttTrigger, null sink", lambda t: trigger_run(pool, t, count, None)),
                    ("MqttTrigger, SqliteStore sink", lambda t: trigger_run(pool, t, count, store)),
                )):
                    used = _cpu()
                    runs.setdefault(name, []).append(await run(f"{base}/{n}/{index}"))
                    cpu.setdefault(name, []).append((_cpu() - used) / count)
        finally:
            await store.close()
    print(f"MQTT QoS 1 through Mosquitto {BROKER[0]}:{BROKER[1]}, {count} messages, publisher in another process, "
          f"median of {rounds} round(s)")
    bare_name = "bare aiomqtt subscriber"
    for name, seconds in runs.items():
        # the ratio of each round to the bare run of the same round: a slow moment of a shared
        # machine touches both sides of a ratio, where the medians of each side may come from
        # different moments; the subscriber's CPU per message does not depend on the load
        ratios = [b / s for b, s in zip(runs[bare_name], seconds)]
        low, ratio, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        print(f"  {name:30s} {count / statistics.median(seconds):8.0f} messages/s  (ratio to bare {ratio:.2f}, "
              f"quartiles {low:.2f}-{high:.2f}; {statistics.median(cpu[name]) * 1e6:4.0f} µs CPU per message "
              "in this process)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=900)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    logging.getLogger("crisisbot").setLevel(logging.ERROR)
    try:
        import socket
        socket.create_connection(BROKER, timeout=1).close()
    except OSError:
        print(f"no MQTT broker on {BROKER[0]}:{BROKER[1]}: start mosquitto to run this benchmark")
        return
    asyncio.run(bench(args.messages, args.rounds))


if __name__ == "__main__":
    main()
