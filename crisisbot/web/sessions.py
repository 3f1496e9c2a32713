"""Console sessions kept server-side: revocable, with an idle timeout and a lifetime.

The cookie holds a random token; the daemon keeps only its SHA-256, so the sessions
file (mode 0600) cannot be replayed as cookies. Logout, an admin (console or
`crisisbot sessions revoke`) or a removed account ends a session at once — a signed
cookie, as before, stayed valid for its whole 12 h whatever happened.
Django's database sessions and Home Assistant's refresh tokens work the same way.

Last-use times are written at most once a minute per session, so an operator's page
refreshing every few seconds does not rewrite the file each time.
"""

from __future__ import annotations

import builtins  # `Sessions.list` shadows the builtin inside the class
import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Awaitable, Callable, cast

from crisisbot.models import utcnow

TOUCH_EVERY = 60.0  # seconds between persisted last-use updates of one session


@dataclass(frozen=True, slots=True)
class Session:
    id: str  # public id (shown to admins, used to revoke); not the cookie
    key: str  # sha256 of the cookie token
    user: str
    created_at: str
    last_seen: str
    expires_at: str
    client: str | None = None
    user_agent: str = ""

    def public(self) -> dict[str, str | None]:
        return {"id": self.id, "user": self.user, "created_at": self.created_at, "last_seen": self.last_seen,
                "expires_at": self.expires_at, "client": self.client, "user_agent": self.user_agent}


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionFile:
    """The sessions' persistence: one JSON list, written whole (a few entries)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[Session]:
        if not self.path.is_file():
            return []
        try:
            return [Session(**item) for item in json.loads(self.path.read_text())]
        except (ValueError, TypeError):
            return []  # a damaged file logs everyone out; it never lets anyone in

    def write(self, sessions: list[Session]) -> None:
        temp = self.path.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump([asdict(s) for s in sessions], handle, indent=1)
        temp.replace(self.path)


Offload = Callable[..., Awaitable[object]]  # runs a blocking call off the event loop


class Sessions:
    def __init__(self, file: SessionFile, *, lifetime: float, idle: float,
                 offload: Offload, clock: Callable[[], datetime] = utcnow) -> None:
        self._file = file
        self._lifetime = timedelta(seconds=lifetime)
        self._idle = timedelta(seconds=idle)
        self._offload = offload
        self._clock = clock
        self._by_key: dict[str, Session] = {}
        self._touched: dict[str, datetime] = {}

    async def load(self) -> None:
        sessions = cast("list[Session]", await self._offload(self._file.read))
        self._by_key = {s.key: s for s in sessions}
        self._prune()

    async def _save(self) -> None:
        await self._offload(self._file.write, list(self._by_key.values()))

    def _prune(self) -> bool:
        now = self._clock()
        dead = [k for k, s in self._by_key.items() if not self._alive(s, now)]
        for key in dead:
            del self._by_key[key]
        return bool(dead)

    def _alive(self, session: Session, now: datetime) -> bool:
        return (now < datetime.fromisoformat(session.expires_at)
                and now - datetime.fromisoformat(session.last_seen) < self._idle)

    async def create(self, user: str, client: str | None, user_agent: str = "") -> str:
        """A new session; returns the cookie token (shown once, never stored)."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(id=secrets.token_hex(6), key=_key(token), user=user, created_at=now.isoformat(),
                          last_seen=now.isoformat(), expires_at=(now + self._lifetime).isoformat(),
                          client=client, user_agent=user_agent[:200])
        self._prune()
        self._by_key[session.key] = session
        await self._save()
        return token

    async def user(self, token: str | None) -> Session | None:
        """The live session of this cookie (its last use moved to now), or None."""
        if not token:
            return None
        session = self._by_key.get(_key(token))
        now = self._clock()
        if session is None:
            return None
        if not self._alive(session, now):
            del self._by_key[session.key]
            await self._save()
            return None
        touched = self._touched.get(session.key, datetime.fromisoformat(session.last_seen))
        session = replace(session, last_seen=now.isoformat())
        self._by_key[session.key] = session
        if (now - touched).total_seconds() >= TOUCH_EVERY:
            self._touched[session.key] = now
            await self._save()
        return session

    def known(self, token: str | None) -> bool:
        """A cookie of a session we hold (no expiry check, no side effect): cheap enough to
        look at before any other work on a request."""
        return token is not None and token != "" and _key(token) in self._by_key

    async def end(self, token: str | None) -> Session | None:
        """Logout: the session is gone server-side, whatever the browser keeps."""
        session = self._by_key.pop(_key(token), None) if token else None
        if session is not None:
            await self._save()
        return session

    def list(self) -> list[Session]:
        self._prune()
        return sorted(self._by_key.values(), key=lambda s: s.created_at)

    async def revoke(self, session_id: str | None = None, user: str | None = None) -> builtins.list[Session]:
        """End one session by its public id, or every session of a user."""
        gone = [s for s in self._by_key.values()
                if (session_id is not None and s.id == session_id) or (user is not None and s.user == user)]
        for session in gone:
            del self._by_key[session.key]
        if gone:
            await self._save()
        return gone

    async def keep_only(self, users: set[str]) -> builtins.list[Session]:
        """Drop the sessions of accounts no longer configured (after a reload)."""
        gone = [s for s in self._by_key.values() if s.user not in users]
        for session in gone:
            del self._by_key[session.key]
        if gone:
            await self._save()
        return gone
