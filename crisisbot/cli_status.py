"""`crisisbot status`: ask the running daemon what its inputs received and refused."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from crisisbot.commands import DaemonStatus, Status
from crisisbot.config.bundle import load_bundle
from crisisbot.control import send
from crisisbot.errors import CommandRefused, CrisisbotError
from crisisbot.inputs_status import format_counters


def cmd_status(args: argparse.Namespace) -> int:
    from pathlib import Path

    bundle = load_bundle(Path(args.config))
    path = bundle.control_socket
    try:
        status = asyncio.run(send(path, Status(), timeout=10))
    except CommandRefused as exc:
        raise CrisisbotError(f"the daemon could not tell its status: {exc}") from None
    if status is None:
        raise CrisisbotError(f"no crisisbot daemon answers on {path}; start it with `crisisbot run`")
    assert isinstance(status, DaemonStatus)
    if args.json:
        print(json.dumps(status.inputs, indent=2, sort_keys=True))
        return 0
    print(f"crisisbot daemon: configuration {status.digest[:12]}")
    for line in format_counters(status.inputs):
        print(line)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="show what each input of the running daemon received and refused")
    p.add_argument("--json", action="store_true", help="print the counters as JSON")
    p.set_defaults(func=cmd_status)
