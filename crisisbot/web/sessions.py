"""Console sessions kept server-side: revocable, with an idle timeout and a lifetime.

The cookie holds a random token; the daemon keeps only its SHA-256, so the sessions
file (mode 0600) cannot be replayed as cookies. Logout, an admin (console or
`crisisbot sessions revoke`) or a removed account ends a session at once — a signed
cookie, as before, stayed valid for its whole 12 h whatever happened.
Django's database sessions and Home Assistant's refresh tokens work the same way.

Last-use times are written at most once a minute per session, so an operator's page
refreshing every few seconds does not rewrite the file each time.

Two processes share the file: the web child (logins, logouts, last-use touches, console
revocations) and the daemon's command bus (`crisisbot sessions list/revoke`). Every
change is a read-modify-write of the file's current content under its lock
(crisisbot/web/shared_file.py), and every lookup first checks with one `stat` whether the
other process changed the file: a session revoked there is refused here on the very
next request.
"""

from __future__ import annotations

import builtins  # `Sessions.list` shadows the builtin inside the class
import hashlib
import json
import logging
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Awaitable, Callable, TypeVar, cast

from crisisbot.models import utcnow
from crisisbot.web import shared_file
from crisisbot.web.shared_file import Stamp

T = TypeVar("T")
log = logging.getLogger(__name__)

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
    """The sessions' persistence: one JSON list, written whole (a few entries), shared by
    processes through `shared_file` (lock, atomic replace, stamps)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._damaged: Stamp | None = None  # the damaged version already reported

    def stamp(self) -> Stamp | None:
        """One `stat`: the version on disk now (None: no file)."""
        return shared_file.stamp(self.path)

    def snapshot(self) -> tuple[Stamp | None, list[Session]]:
        """The sessions on disk and the stamp of that very version."""
        found, text = shared_file.read(self.path)
        return found, self._parse(found, text)

    def read(self) -> list[Session]:
        return self.snapshot()[1]

    def _parse(self, found: Stamp | None, text: str | None) -> list[Session]:
        if text is None:
            return []
        try:
            return [Session(**item) for item in json.loads(text)]
        except (ValueError, TypeError) as exc:  # a damaged file logs everyone out; it never lets anyone in
            if found != self._damaged:
                self._damaged = found
                log.warning("console sessions file %s is damaged (%s): every console session is ended; "
                            "it is rewritten at the next login", self.path, exc)
            return []

    def update(self, change: Callable[[list[Session]], tuple[list[Session] | None, T]]
               ) -> tuple[T, Stamp | None, list[Session]]:
        """Apply `change` to the file's current sessions under its lock; `change` returns
        the new list (None: nothing to write) and a result. Blocking (the lock may be held
        by the other process): run it off the event loop. Returns the result and the
        version now on disk."""
        with shared_file.locked(self.path):
            found, text = shared_file.read(self.path)
            current = self._parse(found, text)
            changed, result = change(current)
            if changed is None:
                return result, found, current
            written = shared_file.write(self.path, json.dumps([asdict(s) for s in changed], indent=1), found)
            return result, written, changed

    def write(self, sessions: list[Session]) -> None:
        """Replace every session (under the lock)."""
        self.update(lambda _: (list(sessions), None))


Offload = Callable[..., Awaitable[object]]  # runs a blocking call off the event loop


class Sessions:
    """The console's sessions: an in-memory copy of the shared file, re-read whenever its
    stamp changed, and changed only through `SessionFile.update`.

    Last uses are kept here (`_seen`) and written at most every `TOUCH_EVERY`: a session's
    idle time is judged from the later of the file's `last_seen` and this process's own."""

    def __init__(self, file: SessionFile, *, lifetime: float, idle: float,
                 offload: Offload, clock: Callable[[], datetime] = utcnow) -> None:
        self._file = file
        self._lifetime = timedelta(seconds=lifetime)
        self._idle = timedelta(seconds=idle)
        self._offload = offload
        self._clock = clock
        self._by_key: dict[str, Session] = {}
        self._stamp: Stamp | None = None  # version `_by_key` was read from
        self._loaded = False
        self._seen: dict[str, datetime] = {}  # last uses in this process, by key
        self._touching: set[str] = set()  # keys whose last use is being written (one write, not one a request)

    async def load(self) -> None:
        found, sessions = cast("tuple[Stamp | None, builtins.list[Session]]", await self._offload(self._file.snapshot))
        self._adopt(found, sessions, force=True)

    def _adopt(self, found: Stamp | None, sessions: builtins.list[Session], force: bool = False) -> None:
        """Take a version read from the file, unless a later one was taken meanwhile
        (writers make each version's mtime later than the last)."""
        if not force and self._loaded and found is not None and self._stamp is not None \
                and found.mtime_ns < self._stamp.mtime_ns:
            return
        self._by_key = {s.key: s for s in sessions}
        self._stamp, self._loaded = found, True
        for key in [k for k in self._seen if k not in self._by_key]:
            del self._seen[key]

    def _refresh(self) -> None:
        """One `stat`; the file is read again only if another version is on disk."""
        if self._loaded and self._file.stamp() == self._stamp:
            return
        self._adopt(*self._file.snapshot(), force=True)

    async def _update(self, change: Callable[[builtins.list[Session]], tuple[builtins.list[Session] | None, T]]) -> T:
        result, found, sessions = cast("tuple[T, Stamp | None, builtins.list[Session]]",
                                       await self._offload(self._file.update, change))
        self._adopt(found, sessions)
        return result

    def _last_seen(self, session: Session) -> datetime:
        persisted = datetime.fromisoformat(session.last_seen)
        here = self._seen.get(session.key)
        return persisted if here is None or here < persisted else here

    def _alive(self, session: Session, now: datetime) -> bool:
        return now < datetime.fromisoformat(session.expires_at) and now - self._last_seen(session) < self._idle

    def _gone(self, session: Session, now: datetime) -> bool:
        """Dead for certain, and so removed from the file on the next write: the other
        process may have used it up to `TOUCH_EVERY` later than the file says."""
        return now >= datetime.fromisoformat(session.expires_at) \
            or now - self._last_seen(session) >= self._idle + timedelta(seconds=TOUCH_EVERY)

    def _kept(self, sessions: builtins.list[Session], now: datetime) -> builtins.list[Session]:
        return [s for s in sessions if not self._gone(s, now)]

    def _live(self, sessions: builtins.list[Session], now: datetime) -> builtins.list[Session]:
        return [s for s in sessions if self._alive(s, now)]

    async def create(self, user: str, client: str | None, user_agent: str = "") -> str:
        """A new session; returns the cookie token (shown once, never stored)."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(id=secrets.token_hex(6), key=_key(token), user=user, created_at=now.isoformat(),
                          last_seen=now.isoformat(), expires_at=(now + self._lifetime).isoformat(),
                          client=client, user_agent=user_agent[:200])
        await self._update(lambda current: ([*self._kept(current, now), session], None))
        return token

    async def user(self, token: str | None) -> Session | None:
        """The live session of this cookie (its last use moved to now), or None."""
        if not token:
            return None
        self._refresh()
        key = _key(token)
        session = self._by_key.get(key)
        now = self._clock()
        if session is None:
            return None
        if not self._alive(session, now):
            await self._drop(lambda s: s.key == key and not self._alive(s, now))
            return None
        persisted = datetime.fromisoformat(session.last_seen)
        self._seen[key] = now
        if (now - persisted).total_seconds() >= TOUCH_EVERY and key not in self._touching:
            stamp = now.isoformat()

            def touch(current: builtins.list[Session]) -> tuple[builtins.list[Session] | None, None]:
                if not any(s.key == key for s in current):
                    return None, None  # revoked meanwhile: not brought back
                return [replace(s, last_seen=stamp) if s.key == key and datetime.fromisoformat(s.last_seen) < now
                        else s for s in current], None

            self._touching.add(key)
            try:
                await self._update(touch)
            finally:
                self._touching.discard(key)
            if key not in self._by_key:  # revoked by the other process while this request waited
                return None
        return replace(session, last_seen=now.isoformat())

    def known(self, token: str | None) -> bool:
        """A cookie of a session we hold (no expiry check, no side effect): cheap enough to
        look at before any other work on a request (one `stat`; a read if the file changed)."""
        if token is None or token == "":
            return False
        self._refresh()
        return _key(token) in self._by_key

    async def end(self, token: str | None) -> Session | None:
        """Logout: the session is gone server-side, whatever the browser keeps."""
        if not token:
            return None
        key = _key(token)

        def drop(current: builtins.list[Session]) -> tuple[builtins.list[Session] | None, Session | None]:
            gone = next((s for s in current if s.key == key), None)
            return (None, None) if gone is None else ([s for s in current if s.key != key], gone)

        return await self._update(drop)

    def list(self) -> list[Session]:
        self._refresh()
        return sorted(self._live(builtins.list(self._by_key.values()), self._clock()), key=lambda s: s.created_at)

    async def _drop(self, doomed: Callable[[Session], bool]) -> builtins.list[Session]:
        """Remove the sessions `doomed` picks from the file's current content (and those
        certainly dead); returns the live ones removed."""
        now = self._clock()

        def drop(current: builtins.list[Session]) -> tuple[builtins.list[Session] | None, builtins.list[Session]]:
            kept = [s for s in current if not doomed(s) and not self._gone(s, now)]
            gone = [s for s in current if doomed(s)]
            return (kept if len(kept) != len(current) else None), [s for s in gone if self._alive(s, now)]

        return await self._update(drop)

    async def revoke(self, session_id: str | None = None, user: str | None = None) -> builtins.list[Session]:
        """End one session by its public id, or every session of a user."""
        return await self._drop(lambda s: (session_id is not None and s.id == session_id)
                                or (user is not None and s.user == user))

    async def keep_only(self, users: set[str]) -> builtins.list[Session]:
        """Drop the sessions of accounts no longer configured (after a reload)."""
        return await self._drop(lambda s: s.user not in users)
