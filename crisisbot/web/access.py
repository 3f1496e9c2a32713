"""Revoking signed links before they expire: one token, or every link of a person for an incident.

An HMAC token cannot be "unsigned", so revocation is a list checked on every use. The list
is kept in memory and each change is handed to a `save` callback (the store, a JSON file),
so the daemon decides where it lives; entries drop out once the links they cover expire.

The daemon revokes (the RevokeLinks command) and its web child checks the links: both
keep the list in `revoked-links.json` (`RevocationFile`), saved atomically under a lock
(crisisbot/web/shared_file.py), and `Revocations.reason` first checks with one `stat`
whether the file changed, so a link revoked by one process is refused by the other on
its very next use.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Awaitable, Callable, Iterable

from crisisbot.errors import CrisisbotError
from crisisbot.links import Claims
from crisisbot.models import utcnow
from crisisbot.web import shared_file
from crisisbot.web.shared_file import Stamp

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Revoked:
    key: str  # "token:<sha256>" or "person:<incident>:<recipient>"
    expires_at: str | None  # ISO time after which the entry is moot; None: keep
    reason: str = ""
    revoked_at: str = ""


SaveRevocation = Callable[[Revoked], Awaitable[None]]
LoadRevocations = Callable[[], Awaitable[Iterable[Revoked]]]
RefreshRevocations = Callable[[], "Iterable[Revoked] | None"]  # sync: the entries if they changed, else None


def token_key(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def person_key(incident_id: str, recipient_id: str) -> str:
    return f"person:{incident_id}:{recipient_id}"


class Revocations:
    """The revocation list; `save` persists each change (an upsert by key); `refresh`,
    called before each check, brings the changes another process saved (merged in by key:
    the list only ever gains entries or has them replaced)."""

    def __init__(self, save: SaveRevocation | None = None, entries: Iterable[Revoked] = (),
                 clock: Callable[[], datetime] = utcnow, refresh: RefreshRevocations | None = None) -> None:
        self._save = save
        self._clock = clock
        self._refresh = refresh
        self._entries = {e.key: e for e in entries}

    @classmethod
    async def load(cls, load: LoadRevocations, save: SaveRevocation | None = None, **kw: object) -> "Revocations":
        return cls(save, await load(), **kw)  # type: ignore[arg-type]

    @classmethod
    async def from_file(cls, path: Path, *, clock: Callable[[], datetime] = utcnow,
                        read_only: bool = False) -> "Revocations":
        """The list kept in `path`, seeing other processes' saves at once. `read_only`
        (the web child): revoking here is refused; it goes to the daemon as a command."""
        file = RevocationFile(path)
        return cls(file.refused if read_only else file.save, await file.load(), clock, file.changed)

    def _check(self) -> None:
        if self._refresh is None:
            return
        try:
            changed = self._refresh()
        except (OSError, CrisisbotError) as exc:  # keep checking against what was last read
            log.error("revoked links list could not be read again (%s); checking links against the copy "
                      "read before", exc)
            return
        if changed is not None:
            self._entries.update((e.key, e) for e in changed)

    async def _add(self, entry: Revoked) -> None:
        self._entries[entry.key] = entry
        if self._save is not None:
            await self._save(entry)

    async def revoke_token(self, token: str, claims: Claims, reason: str = "") -> None:
        """This one link, until it would have expired anyway."""
        await self._add(Revoked(token_key(token), claims.expires_at.isoformat(), reason, self._clock().isoformat()))

    async def revoke_recipient(self, incident_id: str, recipient_id: str, reason: str = "") -> None:
        """Every link of this person for this incident, past and future, until `restore_recipient`."""
        await self._add(Revoked(person_key(incident_id, recipient_id), None, reason, self._clock().isoformat()))

    async def restore_recipient(self, incident_id: str, recipient_id: str) -> None:
        key = person_key(incident_id, recipient_id)
        if key in self._entries:
            await self._add(Revoked(key, self._clock().isoformat(), "restored", self._clock().isoformat()))

    def reason(self, token: str, claims: Claims) -> str | None:
        """Why this link is refused, or None if it is not revoked."""
        self._check()
        now = self._clock()
        for key in (token_key(token), person_key(claims.incident_id, claims.recipient_id)):
            entry = self._entries.get(key)
            if entry is not None and (entry.expires_at is None or datetime.fromisoformat(entry.expires_at) > now):
                return entry.reason or "revoked"
        return None

    def entries(self) -> list[Revoked]:
        """What is still in force (for `save` callbacks that rewrite the whole list)."""
        self._check()
        now = self._clock()
        return [e for e in self._entries.values()
                if e.expires_at is None or datetime.fromisoformat(e.expires_at) > now]


class RevocationFile:
    """The list in one JSON file (mode 0600) shared by processes: `save` is a
    read-modify-write of the file's current content under its lock, replaced atomically
    and synced (a power cut must not bring a revoked link back); `changed` is one `stat`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: Stamp | None = None  # the version last read or written here
        self._writing = asyncio.Lock()

    def _parse(self, text: str | None) -> dict[str, Revoked]:
        if text is None:
            return {}
        try:
            return {e["key"]: Revoked(**e) for e in json.loads(text)}
        except (ValueError, TypeError, KeyError) as exc:
            raise CrisisbotError(f"the revoked links list {self.path} is damaged ({exc}); restore it from a backup "
                                 "or move it aside (the links it revoked are then valid again)") from exc

    def read(self) -> list[Revoked]:
        found, text = shared_file.read(self.path)
        self._stamp = found  # a damaged version is reported once, not on every check
        return list(self._parse(text).values())

    async def load(self) -> list[Revoked]:
        return await asyncio.to_thread(self.read)

    def changed(self) -> list[Revoked] | None:
        """The entries if the file changed since last read or written here, else None."""
        if shared_file.stamp(self.path) == self._stamp:
            return None
        return self.read()

    def _upsert(self, entry: Revoked) -> Stamp:
        with shared_file.locked(self.path):
            found, text = shared_file.read(self.path)
            table = self._parse(text)
            table[entry.key] = entry
            return shared_file.write(self.path, json.dumps([asdict(e) for e in table.values()], indent=1),
                                     found, durable=True)

    async def save(self, entry: Revoked) -> None:
        async with self._writing:
            await asyncio.to_thread(self._upsert, entry)
        # not taken as `_stamp`: the merged file may hold another process's entries, which
        # `changed` must still bring in

    async def refused(self, entry: Revoked) -> None:
        raise CrisisbotError("this process only reads the revoked links list; links are revoked through the "
                             "daemon (the RevokeLinks command)")


def json_file(path: Path) -> tuple[LoadRevocations, SaveRevocation]:
    """A ready pair of callbacks keeping the list in one JSON file (mode 0600)."""
    file = RevocationFile(path)
    return file.load, file.save
