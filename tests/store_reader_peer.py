"""A reader of the store in a process of its own, as the web child is: `python
store_reader_peer.py DB`; it opens `SqliteStore(DB, reader=True)`, prints one JSON line
({"ready": true} or {"error": "..."}), then answers one JSON line per request on stdin:

  {"op": "get", "id": ID}  -> {"found": bool, "title": str | None}
  {"op": "list"}           -> {"ids": [...], "audit": number of audit entries}
  {"op": "write"}          -> {"errors": {method: message}} for each write method tried
  {"op": "close"}          -> {"closed": true, "threads": names of the threads left}, then exits
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

from crisisbot.errors import StoreError
from crisisbot.models import Alarm, DeliveryStatus, Incident, IncidentStatus, utcnow
from crisisbot.store.base import DeliveryRecord, StepRecord
from crisisbot.store.records import TimerRecord
from crisisbot.store.sqlite import SqliteStore


def say(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def writes(store: SqliteStore) -> dict[str, str]:
    alarm = Alarm(source="peer", site="paris-hq")
    incident = Incident("peer", "paris-hq", "p", IncidentStatus.open, utcnow(), utcnow(), "from the reader")
    attempts = {
        "audit": lambda: store.audit("peer.write", None, {"x": 1}),
        "add_alarm": lambda: store.add_alarm(alarm),
        "create_incident": lambda: store.create_incident(incident, alarm),
        "set_incident_status": lambda: store.set_incident_status("x", IncidentStatus.resolved),
        "save_step": lambda: store.save_step(StepRecord("x", "s", "done")),
        "save_deliveries": lambda: store.save_deliveries([DeliveryRecord("k", "x", "s", "p", "a@b", DeliveryStatus.sent)]),
        "add_timers": lambda: store.add_timers([TimerRecord("t", "k", utcnow(), None, {})]),
        "save_trigger_state": lambda: store.save_trigger_state("hook", {"k": 1}),
    }
    errors: dict[str, str] = {}
    for name, attempt in attempts.items():
        try:
            await attempt()
            errors[name] = "NOT REFUSED"
        except StoreError as exc:
            errors[name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            errors[name] = f"{type(exc).__name__}: {exc}"
    return errors


async def main(path: Path) -> int:
    store = SqliteStore(path, reader=True)
    try:
        await store.open()
    except Exception as exc:  # noqa: BLE001 - the test reads the message
        say({"error": f"{type(exc).__name__}: {exc}", "threads": [t.name for t in threading.enumerate()]})
        return 1
    say({"ready": True})
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        request = json.loads(line)
        if request["op"] == "get":
            found = await store.get_incident(request["id"])
            say({"found": found is not None, "title": found.title if found else None})
        elif request["op"] == "list":
            say({"ids": [i.id for i in await store.list_incidents()], "audit": len(await store.audit_entries())})
        elif request["op"] == "write":
            say({"errors": await writes(store)})
        elif request["op"] == "close":
            break
    await store.close()
    # the stdin executor's thread is ours, not the store's
    say({"closed": True, "threads": [t.name for t in threading.enumerate()
                                     if t is not threading.main_thread() and not t.name.startswith("asyncio_")]})
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]))))
