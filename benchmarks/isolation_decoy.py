"""Where the login flood's tail comes from (issue 15): a diagnosis harness, not part of
`./dev bench` (run: `python -m benchmarks.isolation_decoy [KEYS]`, KEYS default "abde").

  (a) no load;
  (b) the sustained 1,500-login flood (benchmarks/load.py) at the daemon's console;
  (d) the same flood at a decoy: a second crisisbot daemon (same code, same web work per
      request) in its own process at nice 0, while alarms go to the first daemon;
  (e) the same at the decoy reniced to 19 (what a console process of its own at the
      lowest CPU priority would give).

The attacker is the same in (b), (d) and (e) (its own session, nice 0), and so is the
kernel's TCP work; only where the flood is *served* changes. If (d) were as good as
(a), the tail of (b) would be the daemon's event loop doing flood work; if (d) is as bad
as (b), it is CPU contention with whoever serves the flood at the daemon's priority.

Per alarm it records, besides the time to the last of 50 emails, the daemon's CPU and
its main thread's (event loop's) run time and run-queue wait from
/proc/PID/task/TID/schedstat: the wait is time the loop was ready to run but another
task had the CPU. With TRACE_OUT=FILE the daemon runs under benchmarks/loop_trace.py,
which records every event-loop callback of 1 ms or more (to line up with the samples,
written to SAMPLES_OUT).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiosmtpd.controller import Controller

from benchmarks.bench_alarm_isolation import (PAUSE, SECRET, Accepted, free_port, one_alarm, pct, process_cpu,
                                              wait_listening, workspace)
from benchmarks.load import FloodProcess, raise_open_files
from crisisbot.gc_policy import settle

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "6"))
ALARMS = int(os.environ.get("BENCH_ALARMS", "10"))
DECOY_NICE = {"d": 0, "e": 19}


def schedstat(pid: int, tid: int | None = None) -> tuple[float, float]:
    """(run, run-queue wait) seconds of one thread, or of all the process's threads."""
    run = wait = 0
    for t in [str(tid)] if tid else os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()
        except OSError:
            continue
        run, wait = run + int(fields[0]), wait + int(fields[1])
    return run / 1e9, wait / 1e9


def renice(pid: int, nice: int) -> None:
    """Every thread of the process (on Linux a nice value is per thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except OSError:  # a thread that just ended, or no right to raise priority
            pass


def start_daemon(directory: Path, smtp: int, trace: str | None) -> tuple[subprocess.Popen[bytes], int, int]:
    hook, dc09, web = free_port(), free_port(), free_port()
    config = workspace(directory, smtp, hook, dc09, web)
    # the question this harness answered was about the console inside the daemon's own
    # process (web.isolation: inline); the default now serves it from a child at the
    # lowest priority, which is what (e) stood for
    data = yaml.safe_load(config.read_text())
    data["web"]["isolation"] = "inline"
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "CRISISBOT_BENCH_SECRET": SECRET}
    command = [sys.executable, "-m", "crisisbot", "-c", str(config), "run"]
    if trace:
        env["TRACE_OUT"] = trace
        command[1:3] = ["-m", "benchmarks.loop_trace"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=(directory / "daemon.log").open("wb"))
    return proc, hook, web


async def run(keys: str) -> None:
    raise_open_files()
    accepted, decoy_accepted = Accepted(), Accepted()
    smtp, decoy_smtp = free_port(), free_port()
    controllers = [Controller(accepted, hostname="127.0.0.1", port=smtp),
                   Controller(decoy_accepted, hostname="127.0.0.1", port=decoy_smtp)]
    for controller in controllers:
        controller.start()
    pauses = random.Random(14)
    samples: list[dict[str, float | str]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        proc, hook, web = start_daemon(Path(one), smtp, os.environ.get("TRACE_OUT"))
        decoy, _, decoy_web = start_daemon(Path(two), decoy_smtp, None)
        try:
            await wait_listening(web, proc)
            await wait_listening(decoy_web, decoy)
            async with httpx.AsyncClient(timeout=120) as http:
                async def block(key: str, round_: int) -> None:
                    for index in range(ALARMS):
                        await asyncio.sleep(pauses.uniform(*PAUSE))
                        cpu, main, every = process_cpu(proc.pid), schedstat(proc.pid, proc.pid), schedstat(proc.pid)
                        start = time.perf_counter()
                        elapsed = await one_alarm(http, hook, accepted, f"{key} {round_}.{index}")
                        main_after, every_after = schedstat(proc.pid, proc.pid), schedstat(proc.pid)
                        samples.append({"scenario": key, "start": start, "end": start + elapsed, "seconds": elapsed,
                                        "cpu": process_cpu(proc.pid) - cpu,
                                        "main_run": main_after[0] - main[0], "main_wait": main_after[1] - main[1],
                                        "all_wait": every_after[1] - every[1], "load": os.getloadavg()[0]})

                for warm in range(2):
                    await one_alarm(http, hook, accepted, f"warm-up {warm}")
                settle()
                for round_ in range(ROUNDS):
                    for key in keys[round_ % len(keys):] + keys[:round_ % len(keys)]:
                        if key == "a":
                            await block(key, round_)
                            continue
                        if key in DECOY_NICE:
                            renice(decoy.pid, DECOY_NICE[key])
                        flood = FloodProcess(web if key == "b" else decoy_web, 1500, sources=250,
                                             first_block=1 + 8 * round_ + "bde".index(key) * 2, sustained=True)
                        await flood.started()
                        try:
                            await block(key, round_)
                        finally:
                            flood.stop()
                        await flood.result()
                        await asyncio.sleep(0.5)
        finally:
            for p in (proc, decoy):
                p.send_signal(signal.SIGTERM)
            for p in (proc, decoy):
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
            for controller in controllers:
                controller.stop()
    if os.environ.get("SAMPLES_OUT"):
        Path(os.environ["SAMPLES_OUT"]).write_text(json.dumps(samples))
    print(f"{ROUNDS} rounds x {ALARMS} alarms per scenario, blocks rotated; load average "
          f"{load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    a99 = pct([float(s["seconds"]) for s in samples if s["scenario"] == "a"], 0.99)
    for key in keys:
        mine = [s for s in samples if s["scenario"] == key]
        times = [float(s["seconds"]) for s in mine]

        def mean_ms(name: str) -> float:
            return statistics.mean(float(s[name]) for s in mine) * 1000

        print(f"  ({key}) p50 {pct(times, 0.5) * 1000:6.1f}  p90 {pct(times, 0.9) * 1000:6.1f}  "
              f"p99 {pct(times, 0.99) * 1000:6.1f} ms  p99/(a) {pct(times, 0.99) / a99:4.2f} | per alarm: daemon CPU "
              f"{mean_ms('cpu'):4.1f}, event loop run {mean_ms('main_run'):4.1f} and run-queue wait "
              f"{mean_ms('main_wait'):4.1f}, all threads' wait {mean_ms('all_wait'):5.1f} ms")
    if os.environ.get("TRACE_OUT"):
        print_trace(samples, json.loads(Path(os.environ["TRACE_OUT"]).read_text())["callbacks"], keys)


def print_trace(samples: list[dict[str, float | str]], callbacks: list[list[Any]], keys: str) -> None:
    """Per scenario: the event-loop callbacks of 1 ms or more that ran during its alarms,
    by name, total milliseconds (wall time: a callback preempted by another process counts
    its wait too; the schedstat columns above tell the two apart)."""
    for key in keys:
        windows = [(float(s["start"]), float(s["end"])) for s in samples if s["scenario"] == key]
        totals: Counter[str] = Counter()
        for started, took, name in callbacks:
            if any(start <= started <= end for start, end in windows):
                totals[name] += took * 1000
        print(f"  ({key}) event-loop callbacks >= 1 ms during its {len(windows)} alarms, total ms: "
              + ", ".join(f"{name} {ms:.0f}" for name, ms in totals.most_common(8)))


def main() -> None:
    asyncio.run(run(sys.argv[1] if len(sys.argv) > 1 else "abde"))


if __name__ == "__main__":
    main()
