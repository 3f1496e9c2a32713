"""Lifecycle commands: who-is-on-call, stand-down, cancel, report, stats, silence, drills.

Commands that change something are typed commands (crisisbot/commands.py) carried out
by `carry_out`: through the running daemon's control socket (one writer for the audit
chain), or — without a daemon — by the same handler in this process.
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

from crisisbot.commands import (
    Cancel, Cancelled, Command, DrillStarted, Result, RunDrill, SilenceAdd, SilenceAdded, SilenceEnd, SilenceEnded,
    StandDown, StoodDown,
)
from crisisbot.config.bundle import Bundle, load_bundle
from crisisbot.config.types import _seconds
from crisisbot.control import send
from crisisbot.errors import CommandRefused, CrisisbotError, DaemonRequired

EXIT_OK, EXIT_PROBLEMS = 0, 1


def _bundle(args: argparse.Namespace) -> Bundle:
    return load_bundle(Path(args.config))


async def carry_out(bundle: Bundle, command: Command) -> Result:
    """The command's result: from the running daemon if one listens, else from the same
    handler in this process — unless the command says it needs the daemon."""
    from crisisbot.command_bus import in_process

    try:
        result = await send(bundle.control_socket, command)
    except CommandRefused as exc:
        raise CrisisbotError(f"the daemon refused: {exc}") from None
    if result is not None:
        return result
    if command.needs_daemon:
        raise DaemonRequired(command.needs_daemon)
    async with in_process(bundle) as bus:
        return await bus.dispatch(command)


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
    from crisisbot.models import IncidentStatus

    outcome = IncidentStatus.false_alarm if args.false_alarm else IncidentStatus.resolved
    done = await carry_out(bundle, StandDown(incident_id=args.incident_id, outcome=outcome, reason=args.reason,
                                             actor=args.by))
    assert isinstance(done, StoodDown)
    print(f"incident {done.incident_id} stood down as {outcome.value}; {done.notified} person(s) notified; "
          f"meeting {done.meeting}")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    done = asyncio.run(carry_out(_bundle(args), Cancel(incident_id=args.incident_id, actor=args.by)))
    assert isinstance(done, Cancelled)
    print(f"incident {done.incident_id} cancelled")
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
        added = await carry_out(bundle, SilenceAdd(
            site=args.site, input=args.input, duration=_seconds(args.duration), reason=args.reason,
            playbook=args.playbook, actor=args.by,
            starts_at=_local_time(bundle, args.start, args.site) if args.start else None))
        assert isinstance(added, SilenceAdded)
        print(f"silence {added.silence_id} until {added.ends_at.isoformat()}")
        return EXIT_OK
    if not args.silence_id:
        raise CrisisbotError("silence end needs the silence id")
    ended = await carry_out(bundle, SilenceEnd(silence_id=args.silence_id, actor=args.by))
    assert isinstance(ended, SilenceEnded)
    print("silence ended" if ended.ended else "no such active silence")
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
    started = asyncio.run(carry_out(bundle, RunDrill(drill=args.drill_id)))
    assert isinstance(started, DrillStarted)
    print(f"drill {args.drill_id} started: alarm {started.alarm_id}")
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
