"""One alarm to a 50-person committee, through the real engine and a local aiosmtpd.

Measures, over N runs, the time from the alarm being submitted to the last email
accepted by the SMTP server, and compares it with a bare aiosmtplib loop that sends
the same 50 messages (the bytes crisisbot just delivered) over one connection,
right after each run. crisisbot's SMTP sessions stay open between incidents
(`keep_alive`), as in production; the bare loop connects each time, as a one-off
script would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

import aiosmtplib
import yaml
from aiosmtpd.controller import Controller

from crisisbot.config.bundle import load_bundle
from crisisbot.engine import Engine
from crisisbot.models import Alarm
from crisisbot.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = 50
RUNS = int(os.environ.get("BENCH_RUNS", "100"))
TARGET = 1.25  # issue 14: crisisbot / bare loop, same run


class Clock:
    """aiosmtpd handler noting when each message was accepted."""

    def __init__(self) -> None:
        self.accepted: list[float] = []
        self.messages: list[tuple[str, list[str], bytes]] = []  # what arrived, to send again bare

    async def handle_DATA(self, server, session, envelope) -> str:
        self.accepted.append(time.perf_counter())
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


def committee_files(directory: Path) -> None:
    """Templates, a committee of PEOPLE and a meeting + email playbook: the alarm benchmarks' shared setup."""
    shutil.copytree(ROOT / "templates", directory / "templates")
    people = {f"p{i:02d}": {"name": f"Membre {i}", "email": f"p{i:02d}@exemple.fr"} for i in range(PEOPLE)}
    (directory / "contacts").mkdir()
    (directory / "contacts" / "c.yaml").write_text(yaml.safe_dump(
        {"people": people, "groups": {"comite": {"name": "Comité", "members": list(people)}}}))
    (directory / "playbooks").mkdir()
    (directory / "playbooks" / "p.yaml").write_text(yaml.safe_dump({
        "id": "panic", "name": "Panic", "join_window": 0,
        "steps": [{"id": "meeting", "action": "meeting", "connector": "jitsi"},
                  {"id": "mail", "action": "email", "to": ["comite"], "template": "committee_alert"}]}))


def workspace(directory: Path, smtp_port: int) -> Path:
    committee_files(directory)
    (directory / "config.yaml").write_text(yaml.safe_dump({
        "organization": {"name": "Bench", "domains": ["exemple.fr"]},
        "sites": {"hq": {"name": "HQ"}},
        "connectors": {"smtp": {"type": "smtp", "host": "127.0.0.1", "port": smtp_port, "security": "none",
                                "connections": int(os.environ.get("BENCH_SMTP_CONNECTIONS", "4"))},
                       "jitsi": {"type": "jitsi"}},
        "mail": {"from": "crisisbot@exemple.fr", "via": ["smtp"]},
    }))
    return directory / "config.yaml"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run() -> None:
    clock = Clock()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(clock, hostname="127.0.0.1", port=port)
    controller.start()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_bundle(workspace(Path(tmp), port))
        runtime = await Runtime.build(bundle)
        engine = Engine(runtime)
        await engine.start()
        crisis, bare = [], []
        try:
            for index in range(RUNS + 3):  # 3 warm-up runs
                clock.accepted.clear()
                clock.messages.clear()
                started = time.perf_counter()
                alarm = Alarm(source="bench", site="hq", label=f"run {index}")
                await engine.submit(alarm)
                incident = await engine.wait_processed(alarm.id)
                await engine.wait_incident(incident.id)
                assert len(clock.accepted) == PEOPLE, f"only {len(clock.accepted)} emails accepted"
                elapsed = max(clock.accepted) - started

                # baseline: the very messages crisisbot just delivered, already serialized,
                # sent one after the other on one connection
                sent = list(clock.messages)
                clock.accepted.clear()
                started = time.perf_counter()
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
                    for sender, rcpt, content in sent:
                        await smtp.sendmail(sender, rcpt, content)
                baseline = max(clock.accepted) - started
                if index >= 3:
                    crisis.append(elapsed * 1000)
                    bare.append(baseline * 1000)
        finally:
            await engine.stop()
            await runtime.close()
            controller.stop()
    c50, c99 = pct(crisis, 0.5), pct(crisis, 0.99)
    b50, b99 = pct(bare, 0.5), pct(bare, 0.99)
    print(f"alarm -> last of {PEOPLE} emails accepted, {RUNS} runs")
    print(f"  crisisbot (engine, store, templates, SMTP):  p50 {c50:7.1f} ms   p99 {c99:7.1f} ms   mean {statistics.mean(crisis):7.1f} ms")
    print(f"  bare aiosmtplib loop (the same 50 messages): p50 {b50:7.1f} ms   p99 {b99:7.1f} ms")
    print(f"  ratio crisisbot / bare:                      p50 {c50 / b50:7.2f}      p99 {c99 / b99:7.2f}")
    met = c50 / b50 <= TARGET and c99 / b99 <= TARGET
    print(f"  target: ratio <= {TARGET} at p50 and p99 -> {'met' if met else 'MISSED'}")


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
