"""Lifecycle commands: who-is-on-call, stand-down, cancel, report, stats, silence, drills.

Commands that change an incident go through the running daemon's control socket
(one writer for the audit chain); without a daemon they act in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator
from zoneinfo import ZoneInfo

from crisisbot.config.bundle import Bundle, load_bundle
from crisisbot.config.types import _seconds
from crisisbot.control import ask_daemon
from crisisbot.errors import CrisisbotError

EXIT_OK, EXIT_PROBLEMS = 0, 1


def _bundle(args: argparse.Namespace) -> Bundle:
    return load_bundle(Path(args.config))


async def _control(bundle: Bundle, request: dict[str, Any]) -> dict[str, Any] | None:
    """Ask the running daemon; None when no daemon listens."""
    reply = await ask_daemon(bundle.control_socket, request)
    if reply is None:
        return None
    if not reply.get("ok"):
        raise CrisisbotError(f"the daemon refused: {reply.get('error', 'no reason given')}")
    return reply


@asynccontextmanager
async def _runtime(bundle: Bundle, exclusive: bool = True) -> AsyncIterator[Any]:
    """`exclusive=False` for reads, which may run beside the daemon."""
    from crisisbot.runtime import Runtime

    runtime = await Runtime.build(bundle, exclusive=exclusive)
    try:
        yield runtime
    finally:
        await runtime.close()


def _local_time(bundle: Bundle, text: str | None, site: str | None = None) -> datetime:
    if not text:
        return datetime.now(timezone.utc)
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        conf = bundle.config.sites.get(site) if site else next(iter(bundle.config.sites.values()), None)
        at = at.replace(tzinfo=ZoneInfo(conf.timezone if conf else "UTC"))
    return at


# -- who-is-on-call --------------------------------------------------------------
def cmd_on_call(args: argparse.Namespace) -> int:
    from crisisbot.lifecycle.schedules import expand, on_duty

    bundle = _bundle(args)
    if args.group not in bundle.groups:
        raise CrisisbotError(f"unknown group '{args.group}'; known: {', '.join(sorted(bundle.groups))}")
    group = bundle.groups[args.group]
    at = _local_time(bundle, args.at, group.site)
    _, slot = on_duty(bundle, args.group, at)
    people = [p for p in expand(bundle, [args.group], at) if bundle.people[p].enabled]
    print(f"{group.name} ({args.group}) at {at.isoformat(timespec='minutes')}: {slot}")
    for pid in people:
        person = bundle.people[pid]
        print(f"  {pid:<12} {person.name:<24} {person.email:<32} {person.phone or ''}")
    if not people:
        print("  nobody is on duty", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


# -- stand-down / cancel ---------------------------------------------------------
def cmd_stand_down(args: argparse.Namespace) -> int:
    return asyncio.run(_stand_down(_bundle(args), args))


async def _stand_down(bundle: Bundle, args: argparse.Namespace) -> int:
    from crisisbot.lifecycle.standdown import stand_down
    from crisisbot.models import IncidentStatus

    outcome = IncidentStatus.false_alarm if args.false_alarm else IncidentStatus.resolved
    request = {"op": "stand-down", "incident_id": args.incident_id, "outcome": outcome.value,
               "reason": args.reason, "by": args.by}
    reply = await _control(bundle, request)
    if reply is None:
        async with _runtime(bundle) as runtime:
            result = await stand_down(runtime, args.incident_id, outcome, args.reason, args.by, "cli")
        reply = {"result": {"incident_id": result.incident_id, "notified": result.notified,
                            "meeting": result.meeting}}
    r = reply["result"]
    print(f"incident {r['incident_id']} stood down as {outcome.value}; {r['notified']} person(s) notified; "
          f"meeting {r['meeting']}")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    bundle = _bundle(args)
    reply = asyncio.run(_control(bundle, {"op": "cancel", "incident_id": args.incident_id, "by": args.by}))
    if reply is None:
        raise CrisisbotError("cancelling needs the running daemon (the cancel window only lasts seconds)")
    print(f"incident {reply['incident_id']} cancelled")
    return EXIT_OK


# -- report / stats ----------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    return asyncio.run(_report(_bundle(args), args))


async def _report(bundle: Bundle, args: argparse.Namespace) -> int:
    from crisisbot.lifecycle.report import build, render

    async with _runtime(bundle, exclusive=False) as runtime:
        report = await build(runtime, args.incident_id, datetime.now(timezone.utc))
    data = render(report, args.format)
    if args.out:
        Path(args.out).write_bytes(data)
        print(f"wrote {args.out}")
    else:
        sys.stdout.buffer.write(data)
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    return asyncio.run(_stats(_bundle(args), args))


async def _stats(bundle: Bundle, args: argparse.Namespace) -> int:
    from crisisbot.lifecycle.stats import false_alarms
    from crisisbot.store import opened_store

    async with opened_store(bundle.config.store.url, bundle.data_dir) as store:
        rows = await false_alarms(store, datetime.now(timezone.utc) - timedelta(days=args.days))
    print(f"{'site':<12} {'source':<16} {'input/zone':<16} {'false':>5} {'cancel':>6} {'total':>5}   (last {args.days} days)")
    for r in rows:
        print(f"{r.site:<12} {r.source:<16} {r.point:<16} {r.false_alarms:>5} {r.cancelled:>6} {r.incidents:>5}")
    return EXIT_OK


# -- silences ------------------------------------------------------------------------
def cmd_silence(args: argparse.Namespace) -> int:
    return asyncio.run(_silence(_bundle(args), args))


async def _silence(bundle: Bundle, args: argparse.Namespace) -> int:
    from crisisbot.lifecycle.clock import SystemClock
    from crisisbot.lifecycle.maintenance import Maintenance
    from crisisbot.lifecycle.timers import TimerService

    if args.action == "list":
        async with _runtime(bundle, exclusive=False) as runtime:
            silences = await runtime.store.list_silences()
        for s in silences:
            state = f"ended {s.ended_at.isoformat(timespec='minutes')}" if s.ended_at else "active/planned"
            print(f"{s.id}  {s.site:<12} {s.input or '*':<12} {s.starts_at.isoformat(timespec='minutes')} -> "
                  f"{s.ends_at.isoformat(timespec='minutes')}  {s.playbook or '(record only)':<16} {state}  {s.reason}")
        return EXIT_OK
    if args.action == "add":
        if not args.site or not args.duration or not args.reason:
            raise CrisisbotError("silence add needs --site, --for and --reason")
        request = {"op": "silence-add", "site": args.site, "input": args.input, "duration": _seconds(args.duration),
                   "reason": args.reason, "playbook": args.playbook, "by": args.by,
                   "starts_at": _local_time(bundle, args.start, args.site).isoformat() if args.start else None}
    else:
        if not args.silence_id:
            raise CrisisbotError("silence end needs the silence id")
        request = {"op": "silence-end", "silence_id": args.silence_id, "by": args.by}
    reply = await _control(bundle, request)
    if reply is None:
        async with _runtime(bundle) as runtime:
            clock = SystemClock()
            maintenance = Maintenance(runtime, clock, TimerService(runtime.store, clock))
            if args.action == "add":
                s = await maintenance.add(args.site, request["duration"], args.reason, args.by, input=args.input,
                                          playbook=args.playbook, starts_at=_local_time(bundle, args.start) if args.start else None)
                reply = {"silence_id": s.id, "ends_at": s.ends_at.isoformat()}
            else:
                reply = {"ok": await maintenance.end(args.silence_id, args.by)}
    print(f"silence {reply['silence_id']} until {reply['ends_at']}" if args.action == "add"
          else ("silence ended" if reply.get("ok") else "no such active silence"))
    return EXIT_OK


# -- drills --------------------------------------------------------------------------
def cmd_drills(args: argparse.Namespace) -> int:
    from crisisbot.lifecycle.drills import next_run

    bundle = _bundle(args)
    drills = bundle.config.lifecycle.drills
    if args.action == "list":
        now = datetime.now(timezone.utc)
        for drill_id, spec in drills.items():
            site = bundle.config.sites.get(spec.site)
            when = next_run(spec, site.timezone if site else "UTC", now) if spec.enabled else None
            print(f"{drill_id:<16} {spec.cron:<16} {spec.site:<12} next: {when.isoformat() if when else 'disabled'}")
        return EXIT_OK
    if args.drill_id not in drills:
        raise CrisisbotError(f"unknown drill '{args.drill_id}'; known: {', '.join(drills) or 'none'}")
    reply = asyncio.run(_control(bundle, {"op": "drill-run", "drill": args.drill_id}))
    if reply is None:
        raise CrisisbotError("running a drill needs the running daemon (crisisbot run)")
    print(f"drill {args.drill_id} started: alarm {reply['alarm_id']}")
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------
def register(sub: Any) -> None:
    p = sub.add_parser("who-is-on-call", help="who a contact group means now (or --at a local time)")
    p.add_argument("group")
    p.add_argument("--at", help="local time of the group's site, ISO format, e.g. 2025-12-25T03:00")
    p.set_defaults(func=cmd_on_call)

    p = sub.add_parser("stand-down", help="end an incident as resolved or as a false alarm")
    p.add_argument("incident_id")
    outcome = p.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--resolved", action="store_true")
    outcome.add_argument("--false-alarm", action="store_true")
    p.add_argument("--reason", required=True, help="sent to everyone alerted and kept for the review")
    p.add_argument("--by", default="operator", help="who stands it down (for the audit log)")
    p.set_defaults(func=cmd_stand_down)

    p = sub.add_parser("cancel", help="cancel an accidental press during its cancel window")
    p.add_argument("incident_id")
    p.add_argument("--by", default="operator")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("report", help="post-incident report: timeline, deliveries, acknowledgements, audit hash")
    p.add_argument("incident_id")
    p.add_argument("--format", choices=["md", "html", "pdf"], default="md")
    p.add_argument("--out", help="file to write (default: standard output)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("stats", help="statistics, e.g. false alarms per input")
    p.add_argument("what", choices=["false-alarms"])
    p.add_argument("--days", type=int, default=90)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("silence", help="maintenance windows: alarms recorded, routed to a reduced playbook")
    p.add_argument("action", choices=["add", "list", "end"])
    p.add_argument("silence_id", nargs="?")
    p.add_argument("--site")
    p.add_argument("--input", help="only this input (or zone); default: the whole site")
    p.add_argument("--for", dest="duration", help="duration, e.g. 2h")
    p.add_argument("--start", help="local start time (default: now)")
    p.add_argument("--playbook", help="reduced playbook (default: lifecycle.maintenance_playbook, else record only)")
    p.add_argument("--reason")
    p.add_argument("--by", default="operator")
    p.set_defaults(func=cmd_silence)

    p = sub.add_parser("drills", help="scheduled exercises: list them, or run one now")
    p.add_argument("action", choices=["list", "run"])
    p.add_argument("drill_id", nargs="?")
    p.set_defaults(func=cmd_drills)
