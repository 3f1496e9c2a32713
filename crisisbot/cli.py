"""`crisisbot` command line: run, demo, validate, simulate, trigger, status, incidents, audit, schema.

Every user error ends with a clear message and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Coroutine, Sequence, cast

from crisisbot import __version__, cli_lifecycle, cli_status, cli_web, logs
from crisisbot.config.bundle import Bundle, load_bundle
from crisisbot.commands import AlarmTaken, TriggerAlarm
from crisisbot.control import send
from crisisbot.errors import CommandRefused, ConfigError, CrisisbotError, Problem
from crisisbot.models import Alarm, EventKind, Severity
from crisisbot.store.base import BacksUp
from crisisbot.store.files import restrict_umask

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
DEFAULT_CONFIG = os.environ.get("CRISISBOT_CONFIG", "config.yaml")
LINGER = 2.0  # seconds a thread still running at exit gets before the process ends anyway


def _bundle(args: argparse.Namespace) -> Bundle:
    return load_bundle(Path(args.config))


def _store_location(args: argparse.Namespace) -> tuple[str, Path]:
    """Store URL and data directory from config.yaml alone, for read-only commands:
    an operator reading incidents or checking the audit log needs none of the secrets."""
    from crisisbot.config.settings import Paths, StoreConfig
    from crisisbot.config.errors import validate_model
    from crisisbot.config.yamlpos import load_yaml

    path = Path(args.config).resolve()
    if not path.is_file():
        raise ConfigError([Problem(str(args.config), 1, 1, "", "configuration file not found")])
    doc, problems = load_yaml(path, args.config)
    data = doc.data if isinstance(doc.data, dict) else {}
    store, found_store = validate_model(StoreConfig, doc, ("store",)) if "store" in data else (StoreConfig(), [])
    paths, found_paths = validate_model(Paths, doc, ("paths",)) if "paths" in data else (Paths(), [])
    problems += found_store + found_paths
    if problems or store is None or paths is None:
        raise ConfigError(problems)
    data_dir = Path(paths.data)
    return store.url, data_dir if data_dir.is_absolute() else path.parent / data_dir


def _setup_logging(bundle: Bundle, args: argparse.Namespace) -> None:
    level = "DEBUG" if getattr(args, "verbose", False) else bundle.config.logging.level
    logs.setup(level, args.log_format or bundle.config.logging.format)


# -- validate ------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    bundle = _bundle(args)
    print(f"OK: {Path(args.config)} — {len(bundle.playbooks)} playbook(s), {len(bundle.people)} people, "
          f"{len(bundle.groups)} group(s), {len(bundle.templates.names())} template(s), "
          f"{len(bundle.triggers)} trigger(s), {len(bundle.connectors)} connector(s), "
          f"{len(bundle.cameras)} camera(s)")
    return EXIT_OK


# -- run / demo ----------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from crisisbot.daemon import serve

    bundle = _bundle(args)
    _setup_logging(bundle, args)
    return asyncio.run(serve(Path(args.config), bundle, options=_global_options(args)))


def _global_options(args: argparse.Namespace) -> list[str]:
    """The options a helper process of the daemon (the web process) gets again."""
    options = ["--log-format", args.log_format] if args.log_format else []
    return options + (["--verbose"] if args.verbose else [])


def cmd_web_worker(args: argparse.Namespace) -> int:
    """Not for people: the daemon starts it (crisisbot/web/worker.py)."""
    from crisisbot.web.worker import main as worker

    return worker(Path(args.config), fd=args.fd, control=Path(args.control), ready_fd=args.ready_fd,
                  parent=args.parent, log_format=args.log_format, verbose=args.verbose)


def cmd_demo(args: argparse.Namespace) -> int:
    from crisisbot.demo import run_demo

    bundle = _bundle(args)
    _setup_logging(bundle, args)
    print(f"crisisbot demo: starting the daemon with {args.config}; the demo panic button fires in a moment…",
          flush=True)
    incident = asyncio.run(run_demo(Path(args.config), bundle))
    return asyncio.run(_demo_summary(bundle, incident.id))


async def _demo_summary(bundle: Bundle, incident_id: str) -> int:
    from crisisbot.timeline import timeline_lines
    from crisisbot.store import opened_store

    async with opened_store(bundle.config.store.url, bundle.data_dir) as store:
        incident = await store.get_incident(incident_id)
        assert incident is not None
        print()
        for line in await timeline_lines(store, incident):
            print(line)
    outbox = bundle.data_dir / "outbox"
    if outbox.is_dir():
        files = sorted(p for p in outbox.glob(f"{incident.id}_*.eml"))
        print(f"\n{len(files)} email(s) written to {outbox}/ — open one with any mail client, e.g.:")
        for path in files[:3]:
            print(f"  {path}")
    return EXIT_OK


# -- simulate / trigger ------------------------------------------------------------
def _check_place(bundle: Bundle, args: argparse.Namespace) -> None:
    """An unknown site or zone would silently match nothing (or the catch-all): say so."""
    import difflib

    def unknown(kind: str, name: str, known: list[str], where: str = "") -> CrisisbotError:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(known)) or 'none'}"
        return CrisisbotError(f"unknown {kind} '{name}'{where}{hint}")

    site = bundle.config.sites.get(args.site)
    if site is None:
        raise unknown("site", args.site, list(bundle.config.sites))
    if args.zone is not None and not site.dynamic_zones and args.zone not in site.zones:
        raise unknown("zone", args.zone, list(site.zones), f" at site '{args.site}'")


AT_FORMATS = "2026-03-03T14:30, 2026-03-03 14:30, 2026-03-03T14:30+01:00 or 14:30 (today)"


def _parse_at(text: str) -> datetime:
    """`--at`: ISO 8601 date and time, or a time of today (site time)."""
    from datetime import time

    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        pass
    try:
        return datetime.combine(datetime.now().date(), time.fromisoformat(text.strip()))
    except ValueError:
        raise CrisisbotError(f"--at '{text}' is not a date and time; use e.g. {AT_FORMATS}") from None


def _alarm_from(args: argparse.Namespace, default_source: str) -> Alarm:
    from crisisbot.rendering import clean_alarm

    return clean_alarm(Alarm(source=args.source or default_source, site=args.site, zone=args.zone, input=args.input,
                 kind=EventKind(args.kind), severity=Severity(args.severity), label=args.label or "",
                 drill=args.drill))


def cmd_simulate(args: argparse.Namespace) -> int:
    from crisisbot.simulate import simulate

    bundle = _bundle(args)
    _check_place(bundle, args)
    at = _parse_at(args.at) if args.at else datetime.now(timezone.utc)
    if at.tzinfo is None:
        site = bundle.config.sites.get(args.site)
        from zoneinfo import ZoneInfo

        at = at.replace(tzinfo=ZoneInfo(site.timezone if site else "UTC"))
    alarm = _alarm_from(args, "manual").model_copy(update={"occurred_at": at, "received_at": at})
    try:
        for line in simulate(bundle, alarm, at, show_bodies=not args.brief):
            print(line)
    except CrisisbotError:
        raise
    except Exception as exc:  # noqa: BLE001 - a dry run explains, it never dumps a traceback
        raise CrisisbotError(f"the simulation stopped: {type(exc).__name__}: {exc}") from exc
    return EXIT_OK


def cmd_trigger(args: argparse.Namespace) -> int:
    bundle = _bundle(args)
    _check_place(bundle, args)
    command = TriggerAlarm(alarm=_alarm_from(args, "manual"))
    try:
        taken = None if args.local else asyncio.run(
            send(bundle.control_socket, command, timeout=60, connect_wait=args.wait))
    except CommandRefused as exc:
        raise CrisisbotError(f"the daemon refused the alarm: {exc}") from None
    if taken is not None:
        assert isinstance(taken, AlarmTaken)
        print(f"alarm {taken.alarm_id} accepted by the running daemon; "
              f"incident: {taken.incident_id or 'none (no playbook matched)'}")
        return EXIT_OK
    _setup_logging(bundle, args)
    return asyncio.run(_trigger_locally(bundle, command))


async def _trigger_locally(bundle: Bundle, command: TriggerAlarm) -> int:
    """The same command, handled by a bus of this process (refused while a daemon holds
    the data directory); waits for the playbook and prints the incident's timeline."""
    from crisisbot.command_bus import in_process
    from crisisbot.timeline import timeline_lines

    async with in_process(bundle) as bus:
        print("no running daemon found: handling the alarm in this process", file=sys.stderr)
        taken = await bus.dispatch(command)
        assert isinstance(taken, AlarmTaken)
        if taken.incident_id is None:
            print(f"alarm {taken.alarm_id} stored; no playbook matched it")
            return EXIT_OK
        incident = await bus.runtime.store.get_incident(taken.incident_id)
        for line in await timeline_lines(bus.runtime.store, incident):  # type: ignore[arg-type]
            print(line)
    return EXIT_OK


# -- incidents / audit ---------------------------------------------------------
def cmd_incidents(args: argparse.Namespace) -> int:
    return asyncio.run(_incidents(*_store_location(args), args))


async def _incidents(url: str, data_dir: Path, args: argparse.Namespace) -> int:
    from crisisbot.timeline import ROW_HEADER, incident_row, timeline_lines
    from crisisbot.store import opened_store

    async with opened_store(url, data_dir) as store:
        if args.incident_id:
            incident = await store.get_incident(args.incident_id)
            if incident is None:
                raise CrisisbotError(f"no incident '{args.incident_id}' (give the id or a unique prefix)")
            for line in await timeline_lines(store, incident):
                print(line)
            return EXIT_OK
        incidents = await store.list_incidents(limit=args.limit)
        if not incidents:
            print("no incidents")
        else:
            print(ROW_HEADER)
        for incident in incidents:
            print(incident_row(incident))
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    return asyncio.run(_audit(*_store_location(args)))


async def _audit(url: str, data_dir: Path) -> int:
    from crisisbot.store import opened_store
    from crisisbot.store.base import AuditReport
    from crisisbot.store.errors import StoreDamaged

    try:
        async with opened_store(url, data_dir) as store:
            report = await store.verify_audit()
    except StoreDamaged as exc:  # damage is what an audit is for: a finding, not a crash
        report = AuditReport(False, 0, "", [str(exc)])
    if report.ok:
        print(f"audit log intact: {report.entries} entries, head {report.head}")
        return EXIT_OK
    for problem in report.problems:
        print(f"audit: {problem}", file=sys.stderr)
    print(f"audit log TAMPERED: {len(report.problems)} problem(s) in {report.entries} entries", file=sys.stderr)
    return EXIT_PROBLEMS


def cmd_backup(args: argparse.Namespace) -> int:
    return asyncio.run(_backup(*_store_location(args), Path(args.target)))


async def _backup(url: str, data_dir: Path, target: Path) -> int:
    from crisisbot.store import opened_store

    if target.is_dir():
        target = target / f"crisisbot-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.db"
    if target.exists():
        raise CrisisbotError(f"{target} already exists; give a new file name (a backup never overwrites)")
    async with opened_store(url, data_dir) as store:
        if not isinstance(store, BacksUp):
            raise CrisisbotError("this store has no built-in backup; use the database's own tools")
        await store.backup(target)
    print(f"backup written to {target} ({target.stat().st_size} bytes, integrity checked); "
          "restore: see \"Backup and restore\" in docs/operations.md")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from crisisbot.config.jsonschema import write_schemas

    for path in write_schemas(Path(args.out)):
        print(f"wrote {path}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from crisisbot.plugins import CHECKS, load
    from crisisbot.preflight import CheckResult

    # connectors/teams_check.py, shipped with the Teams connectors: a function, not a plugin class
    check_teams = cast(Callable[..., Coroutine[Any, Any, list[CheckResult]]], load(CHECKS, "teams"))
    bundle = _bundle(args)
    results = asyncio.run(check_teams(bundle.config, create_test_meeting=args.create_test_meeting, root=bundle.root))
    if not results:
        raise CrisisbotError("no Microsoft connector (teams, graph-mail, teams-channel) in the configuration")
    for result in results:
        print(f"{'OK  ' if result.ok else 'FAIL'} {result.name}: {result.detail}")
        if not result.ok and result.fix:
            print(f"     fix: {result.fix}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_PROBLEMS


def cmd_hash_password(args: argparse.Namespace) -> int:
    import getpass

    from crisisbot.web.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CrisisbotError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 12:
        raise CrisisbotError("use at least 12 characters for a console password")
    print(hash_password(password))
    return EXIT_OK


# -- parser --------------------------------------------------------------------
def _alarm_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", required=True, help="site id from config.yaml")
    parser.add_argument("--source", help="alarm source name (default: manual)")
    parser.add_argument("--zone")
    parser.add_argument("--input")
    parser.add_argument("--label", help="what happened, e.g. 'Bouton panique accueil'")
    parser.add_argument("--kind", default="panic", choices=[k.value for k in EventKind])
    parser.add_argument("--severity", default="critical", choices=[s.value for s in Severity])
    parser.add_argument("--drill", action="store_true", help="mark as an exercise")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="crisisbot", description="Turn an alarm into a running crisis room.")
    top.add_argument("--version", action="version", version=f"crisisbot {__version__}")
    top.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="path to config.yaml (env CRISISBOT_CONFIG)")
    top.add_argument("--log-format", choices=["text", "json"], help="override logging.format")
    top.add_argument("-v", "--verbose", action="store_true")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", help="run the daemon").set_defaults(func=cmd_run)
    sub.add_parser("demo", help="run the daemon until the demo alarm's crisis room is up, then summarize").set_defaults(func=cmd_demo)
    sub.add_parser("validate", help="check config, contacts, playbooks and templates").set_defaults(func=cmd_validate)
    p = sub.add_parser("simulate", help="show what an alarm would do, sending nothing")
    _alarm_args(p)
    p.add_argument("--at", help="local time of the site, ISO format (default: now)")
    p.add_argument("--brief", action="store_true", help="do not print message bodies")
    p.set_defaults(func=cmd_simulate)
    p = sub.add_parser("trigger", help="fire a manual alarm (the panic button from a terminal)")
    _alarm_args(p)
    p.add_argument("--local", action="store_true", help="handle it in this process even if a daemon runs")
    p.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for a busy daemon before giving up (default 10)")
    p.set_defaults(func=cmd_trigger)
    p = sub.add_parser("incidents", help="list incidents, or show one's timeline")
    p.add_argument("action", nargs="?", choices=["show"], help="show one incident")
    p.add_argument("incident_id", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_incidents)
    p = sub.add_parser("audit", help="verify the hash-chained audit log")
    p.add_argument("action", choices=["verify"])
    p.set_defaults(func=cmd_audit)
    p = sub.add_parser("backup", help="copy the store to a file while the daemon runs (SQLite online backup)")
    p.add_argument("target", help="new file, or a directory to put a time-stamped copy in")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("check", help="check a connector against the real service (read-only)")
    p.add_argument("target", choices=["teams"], help="teams: credentials, permissions, mailbox, access policy")
    p.add_argument("--create-test-meeting", action="store_true",
                   help="also create (or reuse) one test meeting to prove the access policy")
    p.set_defaults(func=cmd_check)
    sub.add_parser("hash-password", help="hash a console password (read from the terminal or stdin)").set_defaults(
        func=cmd_hash_password)
    p = sub.add_parser("schema", help="write JSON Schemas for editors (YAML language server)")
    p.add_argument("--out", default="schema")
    p.set_defaults(func=cmd_schema)
    cli_lifecycle.register(sub)
    cli_status.register(sub)
    cli_web.register(sub)
    # started by the daemon (web.isolation: process); no help, so it is not listed
    p = sub.add_parser("web-worker")
    p.add_argument("--fd", type=int, required=True, help="the listening socket the daemon lends")
    p.add_argument("--control", required=True, help="the daemon's control socket")
    p.add_argument("--ready-fd", type=int, required=True, help="where to say 'ready'")
    p.add_argument("--parent", type=int, required=True, help="the daemon's process id")
    p.set_defaults(func=cmd_web_worker)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    restrict_umask()  # incidents, outbox emails and keys: readable by this user only
    args = parser().parse_args(argv)
    if args.command == "incidents" and args.action == "show" and not args.incident_id:
        print("crisisbot incidents show: give an incident id", file=sys.stderr)
        return EXIT_USAGE
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found; nothing was started.", file=sys.stderr)
        return EXIT_PROBLEMS
    except CrisisbotError as exc:
        print(f"crisisbot: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        return 130


def _reader_gone() -> int:
    """`crisisbot incidents | head`: the reader stopped reading, which is not an error.
    Point stdout at /dev/null so the interpreter's final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout replaced by something without a descriptor
        pass
    return EXIT_OK


def run_to_exit(argv: Sequence[str] | None = None) -> None:
    """Entry point: exit with `main`'s code even if a library left a non-daemon thread
    running (the interpreter would wait for it forever and a supervisor's restart
    would never fire)."""
    code = main(argv)
    lingering = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in lingering:
        thread.join(LINGER)
    names = [t.name for t in lingering if t.is_alive()]
    if names:
        print(f"crisisbot: exiting although thread(s) {', '.join(names)} still run", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run_to_exit()
