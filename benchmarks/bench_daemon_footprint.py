"""Daemon start and memory with every integration configured, against a bare Python start.

Three process kinds, each started fresh `--rounds` times, in the same run:
- baseline: `python -c` that imports nothing of ours (the interpreter's own start);
- demo: the shipped config.yaml (demo button, outbox, Jitsi);
- full: every integration at once, each against a local peer: Teams (online-meeting)
  and Graph mail against the strict Graph server, a Teams channel webhook, SMTP, Jitsi,
  HTTP cameras, and the webhook, MQTT (local Mosquitto), Modbus (pymodbus PLC) and
  SIA DC-09 inputs. One alarm is then posted to the webhook and the run waits for the
  Teams meeting and the committee's emails.
Reported: time from spawn to the "crisisbot ready" log line, the process's CPU time
(user + system) at that moment, RSS at ready, RSS after the first meeting (VmRSS, and
the peak VmHWM). Targets: ready < 1 s, RSS < 150 MiB after the first meeting; ratios
are to the baseline of the same run; each figure is the median of `--rounds` processes.

Bytecode: an installed crisisbot has its .pyc files (pip compiles them), but this
development checkout is an editable install and PYTHONDONTWRITEBYTECODE may be set, in
which case every start would compile crisisbot's ~150 modules from source (~0.1 s CPU).
So the processes measured use a bytecode cache of their own (PYTHONPYCACHEPREFIX in a
temporary directory), filled by one warm-up round of each kind that is not counted (it
also warms the page cache). `--source` measures without it, as before.

    python -m benchmarks.bench_daemon_footprint [--rounds 3] [--source]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-webhook-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ENV: dict[str, str] = {}  # the measured processes' environment (set in main: bytecode cache)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def workspace(root: Path) -> Path:
    for name in ("contacts", "playbooks", "templates"):
        shutil.copytree(ROOT / name, root / name)
    shutil.copy(ROOT / "config.yaml", root / "config.yaml")
    return root / "config.yaml"


def edit(config: Path, change: Any) -> None:
    data = yaml.safe_load(config.read_text())
    change(data)
    config.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


async def start_daemon(config: Path) -> tuple[asyncio.subprocess.Process, float, list[str]]:
    """Spawn `crisisbot run`; return it once it logged 'crisisbot ready', with the time that took."""
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crisisbot", "-c", str(config), "run", cwd=config.parent,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**ENV, "BENCH_WEBHOOK_SECRET": SECRET},
    )
    lines: list[str] = []
    assert proc.stdout is not None
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not raw:
            raise RuntimeError("the daemon exited before it was ready:\n" + "".join(lines[-30:]))
        lines.append(raw.decode(errors="replace"))
        if "crisisbot ready" in lines[-1]:
            return proc, time.perf_counter() - began, lines


async def drain(proc: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert proc.stdout is not None
    while raw := await proc.stdout.readline():
        lines.append(raw.decode(errors="replace"))


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def baseline() -> dict[str, float]:
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()",
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV)
    assert proc.stdout is not None and proc.stdin is not None
    await proc.stdout.readline()
    took = time.perf_counter() - began
    cpu, (rss, _) = cpu_seconds(proc.pid), rss_mib(proc.pid)
    proc.stdin.close()
    await proc.wait()
    return {"ready": took, "cpu": cpu, "rss": rss}


async def demo_round(tmp: Path) -> dict[str, float]:
    config = workspace(tmp)
    proc, took, lines = await start_daemon(config)
    reader = asyncio.create_task(drain(proc, lines))
    cpu, (rss, _) = cpu_seconds(proc.pid), rss_mib(proc.pid)
    await stop(proc)
    await reader
    return {"ready": took, "cpu": cpu, "rss": rss}


async def full_round(tmp: Path, peers: dict[str, Any]) -> dict[str, float]:
    graph, hook, smtp, cams, plc_port = peers["graph"], peers["hook"], peers["smtp"], peers["cams"], peers["plc"]
    config = workspace(tmp)
    web_port = free_port()
    prefix = f"bench{os.getpid()}{int(time.time() * 1000) % 100000}"

    def change(d: dict[str, Any]) -> None:
        d["sites"]["paris-hq"]["cameras"] = {
            "hall": {"type": "http-camera", "url": f"{cams.base}/open.jpg", "timeout": "2s"},
            "parking": {"type": "http-camera", "url": f"{cams.base}/open.jpg", "timeout": "2s"},
        }
        d["triggers"] = {
            "hook": {"type": "webhook", "host": "127.0.0.1", "port": web_port, "secret": "${BENCH_WEBHOOK_SECRET}"},
            "panel": {"type": "sia-dc09", "host": "127.0.0.1", "port": 0,
                      "accounts": [{"account": "1234", "site": "paris-hq", "zones": {"3": "accueil"}}]},
            "zigbee": {"type": "mqtt", "host": "127.0.0.1", "port": 1883, "client_id": f"crisisbot-{prefix}",
                       "rules": [{"topic": f"{prefix}/zigbee/+", "match": {"action": ["single"]}, "site": "paris-hq",
                                  "zone": "accueil", "label": "Panic button"}]},
            "plc": {"type": "modbus", "devices": {"plc1": {
                "host": "127.0.0.1", "port": plc_port, "site": "paris-hq", "poll": "200ms", "timeout": "1s",
                "inputs": [{"name": "btn", "address": 5, "zone": "accueil", "label": "Panic button"}]}}},
        }
        d["connectors"].update({
            "teams": graph.connector_config("teams", mode="online-meeting"),
            "graph-mail": graph.connector_config("graph-mail"),
            "channel": {"type": "teams-channel", "webhook_url": hook.url},
            "relay1": {"type": "smtp", "host": "127.0.0.1", "port": smtp.port, "security": "none", "timeout": "2s"},
        })
        d["mail"]["via"] = ["relay1", "graph-mail"]
        d["mail"]["backoff"] = "50ms"

    edit(config, change)
    text = (tmp / "playbooks" / "panic.yaml").read_text()
    (tmp / "playbooks" / "panic.yaml").write_text(text.replace("    connector: jitsi", "    connector: teams\n    fallback: [jitsi]"))
    proc, took, lines = await start_daemon(config)
    reader = asyncio.create_task(drain(proc, lines))
    try:
        cpu, (at_ready, _) = cpu_seconds(proc.pid), rss_mib(proc.pid)
        began = time.perf_counter()
        try:  # the first alarm of a daemon comes after its background warm-up (if it has one)
            async with asyncio.timeout(60):
                while sum("Graph client of" in line for line in lines) < 2:
                    await asyncio.sleep(0.05)
            warm = time.perf_counter() - began + took
        except TimeoutError:
            warm = float("nan")
        meetings, mails = len(graph.meetings), len(smtp.handler.messages)
        from triggers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

        body = json.dumps({"site": "paris-hq", "zone": "accueil", "label": "Panique"}).encode()
        stamp = str(int(time.time()))
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"http://127.0.0.1:{web_port}/alarms", content=body, headers={
                "Content-Type": "application/json", TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(SECRET.encode(), stamp, body)})
        if answer.status_code != 202:
            raise RuntimeError(f"webhook answered {answer.status_code}: {answer.text}")
        try:
            async with asyncio.timeout(60):  # emails wait for the meeting step (Teams, or its Jitsi fallback)
                while len(smtp.handler.messages) < mails + 4:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise RuntimeError(f"no meeting and emails within 60 s ({len(graph.meetings) - meetings} meeting(s), "
                               f"{len(smtp.handler.messages) - mails} email(s)); daemon log:\n" + "".join(lines[-40:]))
        await asyncio.sleep(0.5)  # the playbook's last steps (channel card, audit) settle
        after, peak = rss_mib(proc.pid)
        teams = float(len(graph.meetings) > meetings)
    finally:
        await stop(proc)
        await reader
    return {"ready": took, "cpu": cpu, "warm": warm, "rss_ready": at_ready, "rss_after": after, "peak": peak, "teams": teams}


async def peers_and_rounds(rounds: int, warm_up: bool) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    sys.path.insert(0, str(ROOT / "tests"))
    from tests.camera_server import CameraServer, make_jpeg
    from tests.conftest import RecordingHandler, SmtpServer
    from tests.graph_server import GraphServer, WebhookServer

    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    bits = [SimData(0, count=64, values=False, datatype=DataType.BITS)]
    regs = [SimData(0, count=64, values=0, datatype=DataType.REGISTERS)]
    plc = ModbusTcpServer([SimDevice(1, simdata=(bits, list(bits), regs, list(regs)))], address=("127.0.0.1", 0))
    await plc.serve_forever(background=True)
    plc_port = plc.transport.sockets[0].getsockname()[1]
    if warm_up:
        await baseline()
    base = [await baseline() for _ in range(rounds)]
    demo, full = [], []
    with tempfile.TemporaryDirectory() as tmp, SmtpServer(RecordingHandler()) as smtp:
        cams = await CameraServer(jpeg=make_jpeg(1920, 1080, "hall")).start()
        try:
            async with GraphServer() as graph, WebhookServer() as hook:
                peers = {"graph": graph, "hook": hook, "smtp": smtp, "cams": cams, "plc": plc_port}
                if warm_up:  # fills the bytecode cache (and the page cache); not counted
                    await demo_round(Path(tmp) / "demo-warm-up")
                    await full_round(Path(tmp) / "full-warm-up", peers)
                for index in range(rounds):  # interleaved: a load change hits both kinds alike
                    demo.append(await demo_round(Path(tmp) / f"demo{index}"))
                    full.append(await full_round(Path(tmp) / f"full{index}", peers))
        finally:
            await cams.stop()
            await plc.shutdown()
    b, d, f = ({k: statistics.median(r[k] for r in runs) for k in runs[0]} for runs in (base, demo, full))
    print(f"median of {rounds} fresh processes each, " + (
        "after one uncounted warm-up process of each kind (bytecode cache in a temporary PYTHONPYCACHEPREFIX)"
        if warm_up else "no warm-up, no bytecode cache (--source)"))
    print(f"bare python -c (baseline): ready {b['ready'] * 1e3:6.0f} ms   CPU {b['cpu'] * 1e3:5.0f} ms   RSS {b['rss']:6.1f} MiB")
    print(f"demo config:               ready {d['ready'] * 1e3:6.0f} ms   CPU {d['cpu'] * 1e3:5.0f} ms   RSS {d['rss']:6.1f} MiB   "
          f"ready ratio {d['ready'] / b['ready']:.1f}")
    print(f"every integration:         ready {f['ready'] * 1e3:6.0f} ms   CPU {f['cpu'] * 1e3:5.0f} ms   RSS {f['rss_ready']:6.1f} MiB at ready, "
          f"{f['rss_after']:6.1f} MiB after the first meeting (peak {f['peak']:.1f})   ready ratio {f['ready'] / b['ready']:.1f}")
    print("  each full round (ready ms / CPU ms / RSS after MiB): " + ", ".join(
        f"{r['ready'] * 1e3:.0f}/{r['cpu'] * 1e3:.0f}/{r['rss_after']:.1f}" for r in full))
    print(f"                           Graph clients open in the background {f['warm'] * 1e3:6.0f} ms after spawn; "
          f"first meeting on Teams in {sum(r['teams'] for r in full):.0f}/{rounds} rounds (else the Jitsi fallback)")
    print(f"targets: ready < 1000 ms ({'met' if f['ready'] < 1 else 'NOT met'}), "
          f"RSS after first meeting < 150 MiB ({'met' if f['rss_after'] < 150 else 'NOT met'})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--source", action="store_true", help="no bytecode cache and no warm-up round (compile at each start)")
    args = parser.parse_args(argv if argv is not None else [])
    ENV.clear()
    ENV.update(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if not args.source:
            ENV.pop("PYTHONDONTWRITEBYTECODE", None)
            ENV["PYTHONPYCACHEPREFIX"] = cache
        asyncio.run(peers_and_rounds(args.rounds, warm_up=not args.source))


if __name__ == "__main__":
    main(sys.argv[1:])
