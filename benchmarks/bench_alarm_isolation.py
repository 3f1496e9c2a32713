"""The alarm path under hostile load: panic alarm -> last of 50 emails, p99, with the
daemon as a real process and the load from this one.

  (a) no load;
  (b) 1,500 concurrent bad console logins (fresh client addresses every run, so the
      per-address throttle does not simply refuse them: the password pool is loaded);
  (c) 1,100 idle TCP connections held on the DC-09 and webhook ports.

Reports (b)/(a) and (c)/(a) on p99 and p50 (target <= 1.2), each scenario measured in
this run. Time is measured from the webhook request to the last message accepted by a
local aiosmtpd in this process; the flood comes from a third process, so that the
attacker's CPU does not slow the measuring SMTP server. Runs alternate a, b, c so that
slow moments of a shared machine touch every scenario alike. BENCH_RUNS sets the runs
per scenario (default 10).

Fairness: the attacker's process runs in a session of its own (benchmarks/load.py,
FloodProcess): a real attacker's CPU is another machine's, and in the daemon's own
scheduling group on a 2-core box the generator took the CPU the daemon needed even
while the daemon had stopped serving it. BENCH_FLOOD_NICE (default 0) lowers its
priority further. Everything the daemon does for the flood is still charged to it, and
shown apart: the daemon's own CPU time (all threads, from /proc) per alarm in each
scenario, and the attacker's CPU per flood. The load average at start and end is
printed, since the machine may be shared.
"""

from __future__ import annotations

import asyncio
import json
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
from crisisbot.web.passwords import hash_password
from triggers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

RUNS = int(os.environ.get("BENCH_RUNS", "10"))
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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


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
    times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    cpu: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    load_before = os.getloadavg()
    floods: list[FloodResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = workspace(Path(tmp), smtp, hook, dc09, web)
        proc = subprocess.Popen([sys.executable, "-m", "crisisbot", "-c", str(config), "run"],
                                env={**os.environ, "CRISISBOT_BENCH_SECRET": SECRET},
                                stdout=subprocess.DEVNULL, stderr=(Path(tmp) / "daemon.log").open("wb"))
        idle = IdleConnections()
        try:
            await wait_listening(web, proc)
            async with httpx.AsyncClient(timeout=120) as http:
                async def measured(key: str, label: str) -> None:
                    before = process_cpu(proc.pid)
                    times[key].append(await one_alarm(http, hook, accepted, label))
                    cpu[key].append(process_cpu(proc.pid) - before)

                for warm in range(2):
                    await one_alarm(http, hook, accepted, f"warm-up {warm}")
                for index in range(RUNS):
                    await measured("a", f"a {index}")

                    flood = FloodProcess(web, 1500, sources=250, first_block=1 + index, nice=FLOOD_NICE)
                    await flood.started()  # fire once the daemon is answering the flood
                    await measured("b", f"b {index}")
                    floods.append(await flood.result())

                    await idle.open(dc09, 550, first_block=200)
                    await idle.open(hook, 550, first_block=201)
                    await asyncio.sleep(0.5)  # (c) is about connections held, not being accepted
                    await measured("c", f"c {index}")
                    idle.close()
                    await asyncio.sleep(0.5)  # let the daemon see the idle sockets close
        finally:
            idle.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            controller.stop()
    a50, a99 = pct(times["a"], 0.5), pct(times["a"], 0.99)
    load_after = os.getloadavg()
    print(f"panic alarm -> last of {PEOPLE} emails, daemon as a process, {RUNS} runs per scenario; "
          f"load average {load_before[0]:.1f} at start, {load_after[0]:.1f} at end; attacker in its own session at nice {FLOOD_NICE}")
    for key, name in (("a", "(a) no load"), ("b", "(b) 1,500 concurrent bad logins"),
                      ("c", "(c) 1,100 idle connections (DC-09 + webhook)")):
        p50, p99 = pct(times[key], 0.5) * 1000, pct(times[key], 0.99) * 1000
        ratio = "" if key == "a" else f"   ratio to (a): p50 {p50 / a50 / 1000:5.2f}  p99 {p99 / a99 / 1000:5.2f}"
        print(f"  {name:<46} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms{ratio}")
    print("  daemon CPU per alarm (all threads, p50): " + ", ".join(
        f"({key}) {pct(cpu[key], 0.5) * 1000:.0f} ms" for key in ("a", "b", "c"))
        + f"; attacker CPU per flood (p50): {pct([r.cpu for r in floods], 0.5) * 1000:.0f} ms")
    codes: dict[int, int] = {}
    for result in floods:
        for code, count in result.codes.items():
            codes[code] = codes.get(code, 0) + count
    print(f"  login flood answers over all runs: {dict(sorted(codes.items()))}; "
          f"connection errors: {sum(sum(r.errors.values()) for r in floods)}; idle not opened: {idle.failed}")
    worst = max(pct(times['b'], 0.99) / a99, pct(times['c'], 0.99) / a99)
    print(f"  target p99 ratios <= 1.2 -> {'met' if worst <= 1.2 else 'MISSED'} (worst {worst:.2f})")


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
