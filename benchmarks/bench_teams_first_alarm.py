"""Teams: the first meeting after a start against the tenth, and what the start itself costs.

Each round runs a fresh Python process (as a restarted daemon is) that starts the Teams
connector (online-meeting mode, client secret through the token endpoint) against the
local Graph server, waits until the connector says it is warm (if it has that notion;
a daemon's first alarm usually comes long after its start), then opens 10 meetings
for 10 incidents. Reported per round: start() time, warm-up time, first meeting, median
of meetings 2-10, and their ratio (target: first <= 1.1 x later). The median over the
rounds is the result.

    python -m benchmarks.bench_teams_first_alarm [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEETINGS = 10


async def child(config: dict[str, object]) -> dict[str, float]:
    began = time.perf_counter()
    from connectors.base import MeetingRequest, Services
    from connectors.teams import TeamsConfig, TeamsMeetings

    imported = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        teams = TeamsMeetings("teams", TeamsConfig.model_validate(config), Services(data_dir=Path(tmp), root=Path(tmp)))
        await teams.start()
        started = time.perf_counter()
        warm = getattr(teams, "warmed", None)
        if warm is not None:
            await warm()
        warmed = time.perf_counter()
        samples = []
        now = datetime.now(timezone.utc)
        for index in range(MEETINGS):
            request = MeetingRequest(incident_id=f"bench-{os.getpid()}-{index}", subject="Bench", start=now,
                                     end=now + timedelta(hours=1))
            known = len(sys.modules)
            t0 = time.perf_counter()
            meeting = await teams.open_meeting(request)
            samples.append(time.perf_counter() - t0)
            if index == 0:
                first_imports = len(sys.modules) - known
            assert meeting.join_url and not meeting.warnings, meeting
        await teams.stop()
    return {"import": imported - began, "start": started - imported, "warm": warmed - started,
            "first": samples[0], "later": statistics.median(samples[1:]), "first_imports": first_imports}


async def parent(rounds: int) -> None:
    from tests.graph_server import ORGANIZER_ID, GraphServer

    async with GraphServer() as graph:
        config = graph.connector_config("teams", mode="online-meeting", organizer_id=ORGANIZER_ID, request_timeout=15)
        results = []
        for _ in range(rounds):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.bench_teams_first_alarm", "--child", json.dumps(config),
                cwd=ROOT, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            out, _ = await proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"child failed with exit code {proc.returncode}")
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    print(f"{rounds} fresh processes, {MEETINGS} meetings each (createOrGet + PATCH) on loopback HTTPS")
    for r in results:
        print(f"  import {r['import'] * 1e3:6.0f} ms  start {r['start'] * 1e3:6.0f} ms  warm-up {r['warm'] * 1e3:6.0f} ms"
              f"  first {r['first'] * 1e3:6.0f} ms ({r['first_imports']} imports)  later {r['later'] * 1e3:5.0f} ms  ratio {r['first'] / r['later']:.2f}")
    ratio = statistics.median(r["first"] / r["later"] for r in results)
    print(f"first meeting / later meetings (median of rounds): {ratio:.2f}   (target <= 1.1)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv if argv is not None else [])
    if args.child:
        print(json.dumps(asyncio.run(child(json.loads(args.child)))))
        return
    asyncio.run(parent(args.rounds))


if __name__ == "__main__":
    main(sys.argv[1:])
