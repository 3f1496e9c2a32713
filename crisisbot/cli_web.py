"""Console sessions and personal links from the command line.

`crisisbot sessions` lists or revokes console sessions; `crisisbot links revoke` ends a
leaked link (or every link of one person for an incident). Through the running daemon
when there is one (it holds both lists in memory), else by the same handler in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from crisisbot.cli_lifecycle import _bundle, carry_out
from crisisbot.commands import LinksRevoked, ListSessions, RevokeLinks, RevokeSessions, SessionsListed, SessionsRevoked
from crisisbot.config.bundle import Bundle
from crisisbot.errors import CrisisbotError

EXIT_OK, EXIT_PROBLEMS = 0, 1


def cmd_sessions(args: argparse.Namespace) -> int:
    return asyncio.run(_sessions(_bundle(args), args))


async def _sessions(bundle: Bundle, args: argparse.Namespace) -> int:
    if args.action == "revoke":
        if not args.session_id and not args.user:
            raise CrisisbotError("give a session id (from `crisisbot sessions`) or --user NAME")
        revoked = await carry_out(bundle, RevokeSessions(session_id=args.session_id, user=args.user, actor=args.by))
        assert isinstance(revoked, SessionsRevoked)
        print(f"{revoked.revoked} session(s) revoked")
        return EXIT_OK if revoked.revoked else EXIT_PROBLEMS
    listed = await carry_out(bundle, ListSessions())
    assert isinstance(listed, SessionsListed)
    for s in listed.sessions:
        print(f"{s['id']}  {s['user']:<16} since {s['created_at'][:19]}  last used {s['last_seen'][:19]}  "
              f"from {s['client'] or '?'}")
    if not listed.sessions:
        print("no console session", file=sys.stderr)
    return EXIT_OK


def cmd_links(args: argparse.Namespace) -> int:
    return asyncio.run(_links(_bundle(args), args))


async def _links(bundle: Bundle, args: argparse.Namespace) -> int:
    if not args.link and not (args.incident and args.person):
        raise CrisisbotError("give --link URL, or --incident ID and --person ID")
    done = await carry_out(bundle, RevokeLinks(link=args.link, incident_id=args.incident, person=args.person,
                                               reason=args.reason, actor=args.by))
    assert isinstance(done, LinksRevoked)
    what = "that link" if done.scope == "link" else "every link"
    print(f"revoked {what} of {done.person} for incident {done.incident_id}")
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("sessions", help="list console sessions, or revoke one (or all of a user)")
    p.add_argument("action", nargs="?", choices=["list", "revoke"], default="list")
    p.add_argument("session_id", nargs="?")
    p.add_argument("--user", help="revoke every session of this console user")
    p.add_argument("--by", default="cli", help="who revokes (for the audit log)")
    p.set_defaults(func=cmd_sessions)
    p = sub.add_parser("links", help="revoke personal links (live view, acknowledge, stand down)")
    p.add_argument("action", choices=["revoke"])
    p.add_argument("--link", help="the leaked link (URL or token): only that link")
    p.add_argument("--incident", help="with --person: every link of that person for this incident")
    p.add_argument("--person", help="contact id")
    p.add_argument("--reason", default="", help="kept with the revocation")
    p.add_argument("--by", default="cli", help="who revokes (for the audit log)")
    p.set_defaults(func=cmd_links)
