"""The alarm path under hostile load: panic alarm -> last of 50 emails, with the daemon
as a real process and the load from this one.

  (a) no load;
  (b) 1,500 concurrent bad console logins, sustained: each answer starts another
      attempt, from a new client address every few attempts (fresh attackers keep
      reaching the password pool instead of being refused once and for all);
  (c) 1,100 idle TCP connections held on the DC-09 and webhook ports.

Reports (b)/(a) and (c)/(a) on p99 and p50 (target <= 1.2), each scenario measured in
this run. Time is measured from the webhook request to the last message accepted by a
local aiosmtpd in this process; the flood comes from a third process, so that the
attacker's CPU does not slow the measuring SMTP server. After start-up, this process's
garbage collector is settled as the daemon's is (crisisbot/gc_policy.py), so that its
full collections are not pauses of the instrument.

Statistics: a p99 needs many samples, and the shared machine drifts. With 10 runs the
p99 was the single slowest one; with 60 per scenario it still leaned on it (over 5 quiet
runs, (b)/(a) went from 0.83 to 1.39 while p50 stayed 0.94-1.00); with 120 or 240 in 6
rounds (blocks of 20 or 40), a scenario that costs the daemon nothing at all, (c), still
came out at 1.34 and 1.24 x (a) in two quiet runs, its p50 at 1.04: (a)'s blocks had
fallen in quieter minutes of the host. So now 240 alarms per scenario (the p99 lies between the third and fourth
slowest), in short blocks finely interleaved: BENCH_ROUNDS rounds (default 12) of
BENCH_ALARMS alarms (default 20) per scenario, the order rotating each round (abc, bca,
cab, ...), so that slow moments of the machine, and the aftermath of one scenario, touch
every scenario alike. One attacker process serves every (b) block, paused in between
(benchmarks/load.py, FloodProcess.pause): a new one per block cost a second of start-up
each. Within a block the alarms are fired one after the other, a short random pause
apart (the same pauses for every scenario), so that they land at different moments of
the load. Two warm-up alarms are fired before and not counted. Percentiles are linearly
interpolated between the sorted samples (statistics.quantiles, "inclusive"); the
printout gives the number of samples, p90, the slowest run, and for each p99 ratio a 90 %
bootstrap interval (the samples resampled 2,000 times, fixed seed): how far the ratio
could move by the luck of the draw alone (not the machine's drift, which the
interleaving is for).

Fairness: the attacker's process runs in a session of its own (benchmarks/load.py,
FloodProcess): a real attacker's CPU is another machine's, and in the daemon's own
scheduling group on a 2-core box the generator took the CPU the daemon needed even
while the daemon had stopped serving it. BENCH_FLOOD_NICE (default 0) lowers its
priority further. Everything the daemon does for the flood is still charged to it, and
shown apart: the daemon's own CPU time (all threads, from /proc) per alarm in each
scenario, that of its web console process (web.isolation: process, the default: the
console runs as a child of the daemon at nice 19 and SCHED_IDLE, where the login flood
is served), and
the attacker's CPU per second of flood. The load average at start and end
is printed, since the machine may be shared. BENCH_SAMPLES_OUT names a JSON file to
write every sample to (scenario, start and end on the monotonic clock, daemon CPU), to
line them up with a trace of the daemon.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from aiosmtpd.controller import Controller

from benchmarks.bench_alarm_to_email import PEOPLE, committee_files
from benchmarks.load import FloodProcess, FloodResult, IdleConnections, raise_open_files
from crisisbot.gc_policy import settle
from crisisbot.web.passwords import hash_password
from triggers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "12"))
ALARMS = int(os.environ.get("BENCH_ALARMS", "20"))  # per scenario and round
SETTLE = 0.5  # seconds after a load starts or ends before the next block
RAMP = 0.3  # seconds after a paused flood resumes before its block
PAUSE = (0.03, 0.15)  # seconds between two alarms of a block, drawn at random (fixed seed)
RESAMPLES = 2000  # bootstrap draws for the p99 ratios' intervals
SCENARIOS = {"a": "(a) no load", "b": "(b) 1,500 concurrent bad logins (sustained)",
             "c": "(c) 1,100 idle connections (DC-09 + webhook)"}
FLOOD_NICE = int(os.environ.get("BENCH_FLOOD_NICE", "0"))
SECRET = "bench-isolation-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Accepted:
    """aiosmtpd handler noting when each message was accepted."""

    def __init__(self) -> None:
        self.times: list[float] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.times.append(time.perf_counter())
        return "250 OK"


def workspace(directory: Path, smtp: int, hook: int, dc09: int, web: int) -> Path:
    committee_files(directory)
    (directory / "secrets").mkdir()
    (directory / "secrets" / "op.hash").write_text(hash_password("correct horse battery staple"))
    (directory / "config.yaml").write_text(yaml.safe_dump({
        "organization": {"name": "Bench", "domains": ["exemple.fr"]},
        "sites": {"hq": {"name": "HQ"}},
        "triggers": {
            "hook": {"type": "webhook", "host": "127.0.0.1", "port": hook, "secret": "${CRISISBOT_BENCH_SECRET}"},
            "panels": {"type": "sia-dc09", "host": "127.0.0.1", "port": dc09, "udp": False,
                       "accounts": [{"account": "1234", "site": "hq"}]},
        },
        "connectors": {"smtp": {"type": "smtp", "host": "127.0.0.1", "port": smtp, "security": "none"},
                       "jitsi": {"type": "jitsi"}},
        "mail": {"from": "crisisbot@exemple.fr", "via": ["smtp"]},
        "web": {"enabled": True, "host": "127.0.0.1", "port": web,
                "users": {"operator": {"password_hash": "${file:secrets/op.hash}"}}},
        "logging": {"level": "WARNING"},
    }))
    return directory / "config.yaml"


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process so far; 0.0 off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The process's children (the web console's process, web.isolation: process)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def children_cpu(pid: int) -> float:
    """CPU seconds of the process's children so far (a child that exited is not counted)."""
    return sum(process_cpu(child) for child in children(pid))


def niceness(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])
    except (OSError, IndexError, ValueError):
        return None


def ratio_interval(load: list[float], base: list[float], q: float = 0.99,
                   level: float = 0.90) -> tuple[float, float]:
    """A percentile bootstrap interval of pct(load, q) / pct(base, q)."""
    draw = random.Random(15)

    def quantile(values: list[float]) -> float:  # as pct's "inclusive" interpolation, without 999 cut points
        ordered = sorted(values)
        at = q * (len(ordered) - 1)
        low = int(at)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (at - low)

    ratios = sorted(quantile(draw.choices(load, k=len(load))) / quantile(draw.choices(base, k=len(base)))
                    for _ in range(RESAMPLES))
    tail = (1 - level) / 2
    return ratios[int(tail * RESAMPLES)], ratios[int((1 - tail) * RESAMPLES) - 1]


def pct(values: list[float], q: float) -> float:
    """The q-quantile, linearly interpolated between the sorted samples (0 < q < 1)."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


async def wait_listening(port: int, proc: subprocess.Popen) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError("the daemon exited at start")
            try:
                if (await http.get(f"http://127.0.0.1:{port}/health", timeout=0.5)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the daemon did not listen")


async def one_alarm(http: httpx.AsyncClient, hook: int, accepted: Accepted, label: str) -> float:
    """Seconds from the webhook request to the last of the 50 emails accepted."""
    accepted.times.clear()
    body = json.dumps({"site": "hq", "kind": "panic", "severity": "critical", "label": label}).encode()
    stamp = str(int(time.time()))
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(SECRET.encode(), stamp, body),
               "Content-Type": "application/json"}
    started = time.perf_counter()
    response = await http.post(f"http://127.0.0.1:{hook}/alarms", content=body, headers=headers)
    if response.status_code != 202:
        raise RuntimeError(f"alarm refused: {response.status_code} {response.text}")
    for _ in range(12000):
        if len(accepted.times) >= PEOPLE:
            return max(accepted.times) - started
        await asyncio.sleep(0.005)
    raise RuntimeError(f"only {len(accepted.times)} of {PEOPLE} emails arrived")


async def run() -> None:
    raise_open_files()
    accepted = Accepted()
    smtp = free_port()
    controller = Controller(accepted, hostname="127.0.0.1", port=smtp)
    controller.start()
    hook, dc09, web = free_port(), free_port(), free_port()
    samples: list[dict[str, float | str]] = []
    load_before = os.getloadavg()
    floods: list[FloodResult] = []
    flood_seconds = 0.0
    pauses = random.Random(14)
    started_at = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        config = workspace(Path(tmp), smtp, hook, dc09, web)
        proc = subprocess.Popen([sys.executable, "-m", "crisisbot", "-c", str(config), "run"],
                                env={**os.environ, "CRISISBOT_BENCH_SECRET": SECRET},
                                stdout=subprocess.DEVNULL, stderr=(Path(tmp) / "daemon.log").open("wb"))
        idle = IdleConnections()
        try:
            await wait_listening(web, proc)
            async with httpx.AsyncClient(timeout=120) as http:
                async def block(key: str, round_: int) -> None:
                    for index in range(ALARMS):
                        await asyncio.sleep(pauses.uniform(*PAUSE))
                        before, web_before = process_cpu(proc.pid), children_cpu(proc.pid)
                        start = time.perf_counter()
                        elapsed = await one_alarm(http, hook, accepted, f"{key} {round_}.{index}")
                        samples.append({"scenario": key, "round": round_, "start": start, "end": start + elapsed,
                                        "seconds": elapsed, "cpu": process_cpu(proc.pid) - before,
                                        "web_cpu": children_cpu(proc.pid) - web_before})

                for warm in range(2):
                    await one_alarm(http, hook, accepted, f"warm-up {warm}")
                web_processes = [(child, niceness(child)) for child in children(proc.pid)]
                # this process is the measuring instrument: aiosmtpd builds a class per MAIL and
                # RCPT command (cyclic garbage), and full collections of this process's start-up
                # heap were pauses of the instrument itself, in any scenario (as the daemon does:
                # crisisbot/gc_policy.py)
                settle()
                # one attacker process for the whole run, paused between its blocks (a new one
                # per block cost a second each, and blocks must be short: see the docstring)
                flood = FloodProcess(web, 1500, sources=250, first_block=1, nice=FLOOD_NICE, sustained=True)
                try:
                    await flood.started()  # the daemon answers the flood: it is up to speed
                    flood.pause()
                    await asyncio.sleep(SETTLE)
                    for round_ in range(ROUNDS):
                        order = "abc"[round_ % 3:] + "abc"[:round_ % 3]
                        for key in order:
                            if key == "a":
                                await block("a", round_)
                            elif key == "b":
                                flood.resume()
                                await asyncio.sleep(RAMP)  # 1,500 attempts in flight again
                                flooding = time.perf_counter()
                                try:
                                    await block("b", round_)
                                finally:
                                    flood.pause()
                                flood_seconds += time.perf_counter() - flooding
                                await asyncio.sleep(SETTLE)  # the last attempts' connections close
                            else:
                                await idle.open(dc09, 550, first_block=200)
                                await idle.open(hook, 550, first_block=201)
                                await asyncio.sleep(SETTLE)  # (c) is about connections held, not being accepted
                                await block("c", round_)
                                idle.close()
                                await asyncio.sleep(SETTLE)  # let the daemon see the idle sockets close
                finally:
                    flood.stop()
                    floods.append(await flood.result())
        finally:
            idle.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            controller.stop()
    load_after = os.getloadavg()
    if os.environ.get("BENCH_SAMPLES_OUT"):
        Path(os.environ["BENCH_SAMPLES_OUT"]).write_text(json.dumps(samples))
    times = {key: [float(s["seconds"]) for s in samples if s["scenario"] == key] for key in SCENARIOS}
    cpu = {key: [float(s["cpu"]) for s in samples if s["scenario"] == key] for key in SCENARIOS}
    web_cpu = {key: [float(s["web_cpu"]) for s in samples if s["scenario"] == key] for key in SCENARIOS}
    count = len(times["a"])
    print(f"panic alarm -> last of {PEOPLE} emails, daemon as a process; {count} alarms per scenario "
          f"({ROUNDS} rounds x {ALARMS}, blocks interleaved abc/bca/cab, 2 warm-up alarms not counted), "
          f"percentiles interpolated between sorted samples; {time.perf_counter() - started_at:.0f} s; "
          f"load average {load_before[0]:.1f} at start, {load_after[0]:.1f} at end; "
          f"attacker in its own session at nice {FLOOD_NICE}")
    a50, a99 = pct(times["a"], 0.5), pct(times["a"], 0.99)
    for key, name in SCENARIOS.items():
        p50, p90, p99 = (pct(times[key], q) * 1000 for q in (0.5, 0.9, 0.99))
        if key == "a":
            ratio = ""
        else:
            low, high = ratio_interval(times[key], times["a"])
            ratio = (f"   ratio to (a): p50 {p50 / a50 / 1000:5.2f}  p99 {p99 / a99 / 1000:5.2f}"
                     f" (90 % interval {low:.2f}-{high:.2f})")
        print(f"  {name:<46} p50 {p50:6.1f}  p90 {p90:6.1f}  p99 {p99:6.1f}  max {max(times[key]) * 1000:6.1f} ms"
              f"{ratio}")
    attacker = sum(r.cpu for r in floods) / flood_seconds if flood_seconds else 0.0
    print("  daemon CPU per alarm (all threads, mean): " + ", ".join(
        f"({key}) {statistics.mean(cpu[key]) * 1000:.0f} ms" for key in SCENARIOS)
        + f"; attacker CPU {attacker:.2f} s per second of flood")
    if web_processes:
        print("  web console process (pid, nice): " + ", ".join(f"({p}, {n})" for p, n in web_processes)
              + "; its CPU per alarm (mean): " + ", ".join(
                  f"({key}) {statistics.mean(web_cpu[key]) * 1000:.0f} ms" for key in SCENARIOS))
    else:
        print("  web console served inside the daemon (no child process)")
    codes: dict[int, int] = {}
    for result in floods:
        for code, number in result.codes.items():
            codes[code] = codes.get(code, 0) + number
    print(f"  login flood answers over all rounds: {dict(sorted(codes.items()))}; "
          f"connection errors: {sum(sum(r.errors.values()) for r in floods)}; idle not opened: {idle.failed}")
    worst = max(pct(times["b"], 0.99) / a99, pct(times["c"], 0.99) / a99)
    print(f"  target p99 ratios <= 1.2 -> {'met' if worst <= 1.2 else 'MISSED'} (worst {worst:.2f})")


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
