"""MQTT trigger throughput through the local Mosquitto (127.0.0.1:1883).

A publisher in another process sends N QoS 1 JSON messages; three subscribers are
timed from first to last message, in the same run:
  bare aiomqtt   a subscriber that only counts (baseline)
  null sink      the trigger matching rules and building alarms, storing nothing
  SqliteStore    the trigger storing every alarm before its PUBACK

A burst larger than Mosquitto's `max_queued_messages` (default 1000) is partly dropped
by the broker for a subscriber that acknowledges only after storing (20 in flight), so
the default burst stays below it; raise that broker setting in production.

    python -m benchmarks.bench_mqtt [--messages 900]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
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


async def timed(topic: str, count: int, consume: "asyncio.Future[None]") -> float:
    """Seconds from the publisher's start to the last message consumed."""
    started = time.perf_counter()
    with ProcessPoolExecutor(1) as pool:
        await asyncio.get_running_loop().run_in_executor(pool, publish, topic, count)
    await asyncio.wait_for(consume, 60)
    return time.perf_counter() - started


async def bare(topic: str, count: int) -> float:
    async with aiomqtt.Client(*BROKER) as client:
        await client.subscribe(f"{topic}/#", qos=1)

        async def consume() -> None:
            seen = 0
            async for _ in client.messages:
                seen += 1
                if seen >= count:
                    return

        return await timed(topic, count, asyncio.ensure_future(consume()))


async def trigger_run(topic: str, count: int, store: SqliteStore | None) -> float:
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
        return await timed(topic, count, asyncio.ensure_future(sink.done.wait()))
    finally:
        await trigger.stop()
        async with aiomqtt.Client(*BROKER, identifier=client_id, clean_session=True):
            pass  # drop the persistent session


async def bench(count: int) -> None:
    base = f"crisisbot-bench/{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "bench.db")
        await store.open()
        try:
            results = {
                "bare aiomqtt subscriber": await bare(f"{base}/a", count),
                "MqttTrigger, null sink": await trigger_run(f"{base}/b", count, None),
                "MqttTrigger, SqliteStore sink": await trigger_run(f"{base}/c", count, store),
            }
        finally:
            await store.close()
    print(f"MQTT QoS 1 through Mosquitto {BROKER[0]}:{BROKER[1]}, {count} messages, publisher in another process")
    baseline = count / results["bare aiomqtt subscriber"]
    for name, seconds in results.items():
        rate = count / seconds
        print(f"  {name:30s} {rate:8.0f} messages/s  (ratio to bare {rate / baseline:.2f})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=900)
    args = parser.parse_args(argv)
    logging.getLogger("crisisbot").setLevel(logging.ERROR)
    try:
        import socket
        socket.create_connection(BROKER, timeout=1).close()
    except OSError:
        print(f"no MQTT broker on {BROKER[0]}:{BROKER[1]}: start mosquitto to run this benchmark")
        return
    asyncio.run(bench(args.messages))


if __name__ == "__main__":
    main()
