"""Console sessions and revoked links from a process of their own, as the web child and
the daemon each hold them: `python web_state_peer.py DATA_DIR`; prints {"ready": true},
then answers one JSON line per request on stdin (see `handle`)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from crisisbot.links import Claims
from crisisbot.web.access import Revocations
from crisisbot.web.sessions import SessionFile, Sessions

SESSIONS = "console-sessions.json"
LINKS = "revoked-links.json"


class Clock:
    """The wall clock, moved forward on request (to make last-use touches due)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset


def claims(request: dict[str, Any]) -> Claims:
    return Claims(request["incident"], request["recipient"], "ack",
                  datetime.now(timezone.utc) + timedelta(hours=1))


async def handle(request: dict[str, Any], sessions: Sessions, links: Revocations, clock: Clock) -> dict[str, Any]:
    op = request["op"]
    if op == "create":
        return {"token": await sessions.create(request["user"], "127.0.0.1")}
    if op == "known":
        return {"known": sessions.known(request["token"])}
    if op == "user":
        found = await sessions.user(request["token"])
        return {"user": found.user if found else None}
    if op == "revoke":
        return {"revoked": len(await sessions.revoke(request.get("id"), request.get("user")))}
    if op == "list":
        return {"sessions": [{"id": s.id, "user": s.user} for s in sessions.list()]}
    if op == "advance":
        clock.offset += timedelta(seconds=request["seconds"])
        return {"ok": True}
    if op == "flood":  # `n` creates and, on the tokens given, `n` last-use touches, all at once
        tokens = request.get("touch", [])
        jobs = [sessions.create(f"{request['user']}{i}", "127.0.0.1") for i in range(request["n"])]
        jobs += [sessions.user(tokens[i % len(tokens)]) for i in range(request["n"])] if tokens else []
        results = await asyncio.gather(*jobs)
        return {"tokens": results[:request["n"]]}
    if op == "revoke_link":
        await links.revoke_token(request["token"], claims(request), "revoked by the test")
        return {"ok": True}
    if op == "link_reason":
        return {"reason": links.reason(request["token"], claims(request))}
    raise ValueError(f"unknown op {op}")


async def main(data_dir: Path) -> int:
    clock = Clock()
    sessions = Sessions(SessionFile(data_dir / SESSIONS), lifetime=3600, idle=600, offload=asyncio.to_thread,
                        clock=clock)
    await sessions.load()
    links = await Revocations.from_file(data_dir / LINKS, clock=clock)
    print(json.dumps({"ready": True}), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        print(json.dumps(await handle(json.loads(line), sessions, links, clock)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]))))
