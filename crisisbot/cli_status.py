"""`crisisbot status` and `crisisbot reload`: the running daemon's inputs, and its files read again."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from crisisbot.commands import DaemonStatus, Health, HealthReport, Reload, Reloaded, Status
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
    web = _web_check(path)
    if web is not None:
        print(f"web console process: {_web_line(web)}")
    return 0


def _web_check(path: Any) -> dict[str, Any] | None:
    """The daemon's health check "web" (its web process), None without one."""
    try:
        report = asyncio.run(send(path, Health(), timeout=10))
    except CommandRefused:
        return None
    return report.checks.get("web") if isinstance(report, HealthReport) else None


def _web_line(check: dict[str, Any]) -> str:
    if check.get("status") == "up":
        return f"serving (process {check.get('pid')}, port {check.get('port')}, restarts {check.get('restarts', 0)})"
    return f"{check.get('status')}: {check.get('web', '')} (for {check.get('down_for_s')} s, " \
           f"restarts {check.get('restarts', 0)})"


def cmd_reload(args: argparse.Namespace) -> int:
    """What SIGHUP does, with an answer: the files are valid here (else their problems are
    printed and nothing is asked), and the daemon says whether it took them."""
    from pathlib import Path

    bundle = load_bundle(Path(args.config))
    try:
        done = asyncio.run(send(bundle.control_socket, Reload(), timeout=60))
    except CommandRefused as exc:
        raise CrisisbotError(f"the daemon could not reload: {exc}") from None
    if done is None:
        raise CrisisbotError(f"no crisisbot daemon answers on {bundle.control_socket}; start it with `crisisbot run`")
    assert isinstance(done, Reloaded)
    if not done.ok:
        raise CrisisbotError("the running daemon refused the new configuration and keeps the last good one; "
                             "its log says why")
    print(f"the running daemon runs configuration {bundle.digest[:12]}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="show what each input of the running daemon received and refused")
    p.add_argument("--json", action="store_true", help="print the counters as JSON")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("reload", help="make the running daemon read its files again (like SIGHUP), with an answer")
    p.set_defaults(func=cmd_reload)
