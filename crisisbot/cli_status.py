"""`crisisbot status`: ask the running daemon what its inputs received and refused."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from crisisbot.config.bundle import load_bundle
from crisisbot.control import ask_daemon
from crisisbot.errors import CrisisbotError
from crisisbot.inputs_status import format_counters


def cmd_status(args: argparse.Namespace) -> int:
    from pathlib import Path

    bundle = load_bundle(Path(args.config))
    path = bundle.control_socket
    reply = asyncio.run(ask_daemon(path, {"op": "status"}, timeout=10))
    if reply is None:
        raise CrisisbotError(f"no crisisbot daemon answers on {path}; start it with `crisisbot run`")
    if not reply.get("ok"):
        raise CrisisbotError(f"the daemon could not tell its status: {reply.get('error')}")
    if args.json:
        print(json.dumps(reply["inputs"], indent=2, sort_keys=True))
        return 0
    print(f"crisisbot daemon: configuration {str(reply.get('digest', ''))[:12]}")
    for line in format_counters(reply["inputs"]):
        print(line)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="show what each input of the running daemon received and refused")
    p.add_argument("--json", action="store_true", help="print the counters as JSON")
    p.set_defaults(func=cmd_status)
