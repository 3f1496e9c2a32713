"""One alarm to a 50-person committee, through the real engine and a local aiosmtpd.

Measures, over N runs, the time from the alarm being submitted to the last email
accepted by the SMTP server, and compares it with a bare aiosmtplib loop that sends
the same 50 messages (the bytes crisisbot just delivered) over one connection,
right after each run. crisisbot's SMTP sessions stay open between incidents
(`keep_alive`), as in production; the bare loop connects each time, as a one-off
script would.

The relay (aiosmtpd) runs in a process of its own, as a real relay would: in this
process it would share one interpreter lock with the side being measured, and the
measure would mostly count the two fighting over it. Both sides talk to the same
relay, and the acceptance times it notes are `time.perf_counter()` (CLOCK_MONOTONIC,
one clock for every process of the machine). `BENCH_RELAY=inprocess` puts it back in
this process, to compare.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import socket
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import aiosmtplib
import yaml
from aiosmtpd.controller import Controller

from crisisbot.config.bundle import load_bundle
from crisisbot.engine import Engine
from crisisbot.gc_policy import settle
from crisisbot.models import Alarm
from crisisbot.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = 50
RUNS = int(os.environ.get("BENCH_RUNS", "100"))
TARGET = 1.25  # issue 14: crisisbot / bare loop, same run


Arrival = tuple[float, str, list[str], bytes]  # accepted at (perf_counter), envelope, content


class Clock:
    """aiosmtpd handler noting when each message was accepted, and what it was (to send again bare)."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.arrivals.append((time.perf_counter(), envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        return "250 OK"

    def take(self) -> list[Arrival]:
        arrivals, self.arrivals = self.arrivals, []
        return arrivals


def _relay_main(port: int, commands: Connection) -> None:
    """The relay process: aiosmtpd, and a pipe on which the benchmark asks for what arrived."""
    clock = Clock()
    controller = Controller(clock, hostname="127.0.0.1", port=port)
    controller.start()
    settle()  # aiosmtpd builds a class per MAIL and RCPT: keep full collections short (gc_policy)
    commands.send("ready")
    try:
        while commands.recv() == "take":
            commands.send(clock.take())
    finally:
        controller.stop()


class Relay:
    """A local aiosmtpd, in its own process (default) or in this one (BENCH_RELAY=inprocess)."""

    def __init__(self, in_process: bool = os.environ.get("BENCH_RELAY") == "inprocess") -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.in_process = in_process
        if in_process:
            self._clock = Clock()
            self._controller = Controller(self._clock, hostname="127.0.0.1", port=self.port)
            self._controller.start()
            return
        self._pipe, theirs = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_relay_main, args=(self.port, theirs), daemon=True)
        self._process.start()
        if not self._pipe.poll(30) or self._pipe.recv() != "ready":
            raise RuntimeError("the SMTP relay process did not start")

    def take(self) -> list[Arrival]:
        """What arrived since the last call (the caller knows it is all there: it waited for the 250s)."""
        if self.in_process:
            return self._clock.take()
        self._pipe.send("take")
        return self._pipe.recv()

    def stop(self) -> None:
        if self.in_process:
            self._controller.stop()
            return
        self._pipe.send("stop")
        self._process.join(10)


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
    relay = Relay()
    port = relay.port
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_bundle(workspace(Path(tmp), port))
        runtime = await Runtime.build(bundle)
        engine = Engine(runtime)
        await engine.start()
        settle()  # as the daemon does once started (crisisbot/gc_policy.py, daemon.serve)
        crisis, bare = [], []
        crisis_cpu, bare_cpu = [], []  # this process's CPU (all threads: engine, store, rendering pools)
        try:
            for index in range(RUNS + 3):  # 3 warm-up runs
                started, cpu = time.perf_counter(), time.process_time()
                alarm = Alarm(source="bench", site="hq", label=f"run {index}")
                await engine.submit(alarm)
                incident = await engine.wait_processed(alarm.id)
                assert incident is not None, "the alarm opened no incident"
                await engine.wait_incident(incident.id)
                sent = relay.take()
                assert len(sent) == PEOPLE, f"only {len(sent)} emails accepted"
                elapsed = max(at for at, *_ in sent) - started
                used = time.process_time() - cpu

                # baseline: the very messages crisisbot just delivered, already serialized,
                # sent one after the other on one connection
                started, cpu = time.perf_counter(), time.process_time()
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
                    for _, sender, rcpt, content in sent:
                        await smtp.sendmail(sender, rcpt, content)
                again = relay.take()
                assert len(again) == PEOPLE, f"only {len(again)} emails accepted from the bare loop"
                baseline = max(at for at, *_ in again) - started
                if index >= 3:
                    crisis.append(elapsed * 1000)
                    bare.append(baseline * 1000)
                    crisis_cpu.append(used * 1000)
                    bare_cpu.append((time.process_time() - cpu) * 1000)
        finally:
            await engine.stop()
            await runtime.close()
            relay.stop()
    c50, c99 = pct(crisis, 0.5), pct(crisis, 0.99)
    b50, b99 = pct(bare, 0.5), pct(bare, 0.99)
    where = "in this process" if relay.in_process else "in its own process"
    print(f"alarm -> last of {PEOPLE} emails accepted, {RUNS} runs, aiosmtpd relay {where}")
    print(f"  crisisbot (engine, store, templates, SMTP):  p50 {c50:7.1f} ms   p99 {c99:7.1f} ms   mean {statistics.mean(crisis):7.1f} ms")
    print(f"  bare aiosmtplib loop (the same 50 messages): p50 {b50:7.1f} ms   p99 {b99:7.1f} ms")
    print(f"  ratio crisisbot / bare:                      p50 {c50 / b50:7.2f}      p99 {c99 / b99:7.2f}")
    print(f"  CPU per alarm, this process (all threads), mean: crisisbot {statistics.mean(crisis_cpu):5.1f} ms, "
          f"bare loop {statistics.mean(bare_cpu):5.1f} ms; load average {os.getloadavg()[0]:.1f}")
    met = c50 / b50 <= TARGET and c99 / b99 <= TARGET
    print(f"  target: ratio <= {TARGET} at p50 and p99 -> {'met' if met else 'MISSED'}")


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
