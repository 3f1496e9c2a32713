"""Revoking signed links before they expire: one token, or every link of a person for an incident.

An HMAC token cannot be "unsigned", so revocation is a list checked on every use. The list
is kept in memory and each change is handed to a `save` callback (the store, a JSON file),
so the daemon decides where it lives; entries drop out once the links they cover expire.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Awaitable, Callable, Iterable

from crisisbot.links import Claims
from crisisbot.models import utcnow


@dataclass(frozen=True, slots=True)
class Revoked:
    key: str  # "token:<sha256>" or "person:<incident>:<recipient>"
    expires_at: str | None  # ISO time after which the entry is moot; None: keep
    reason: str = ""
    revoked_at: str = ""


SaveRevocation = Callable[[Revoked], Awaitable[None]]
LoadRevocations = Callable[[], Awaitable[Iterable[Revoked]]]


def token_key(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def person_key(incident_id: str, recipient_id: str) -> str:
    return f"person:{incident_id}:{recipient_id}"


class Revocations:
    """The revocation list; `save` persists each change (an upsert by key)."""

    def __init__(self, save: SaveRevocation | None = None, entries: Iterable[Revoked] = (),
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._save = save
        self._clock = clock
        self._entries = {e.key: e for e in entries}

    @classmethod
    async def load(cls, load: LoadRevocations, save: SaveRevocation | None = None, **kw: object) -> "Revocations":
        return cls(save, await load(), **kw)  # type: ignore[arg-type]

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
        now = self._clock()
        for key in (token_key(token), person_key(claims.incident_id, claims.recipient_id)):
            entry = self._entries.get(key)
            if entry is not None and (entry.expires_at is None or datetime.fromisoformat(entry.expires_at) > now):
                return entry.reason or "revoked"
        return None

    def entries(self) -> list[Revoked]:
        """What is still in force (for `save` callbacks that rewrite the whole list)."""
        now = self._clock()
        return [e for e in self._entries.values()
                if e.expires_at is None or datetime.fromisoformat(e.expires_at) > now]


def json_file(path: Path) -> tuple[LoadRevocations, SaveRevocation]:
    """A ready pair of callbacks keeping the list in one JSON file (mode 0600)."""
    table: dict[str, Revoked] = {}
    writing = asyncio.Lock()

    def read() -> list[Revoked]:
        if path.is_file():
            table.update({e["key"]: Revoked(**e) for e in json.loads(path.read_text())})
        return list(table.values())

    def write() -> None:
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps([asdict(e) for e in table.values()], indent=1))
        temp.chmod(0o600)
        temp.replace(path)

    async def load() -> Iterable[Revoked]:
        return await asyncio.to_thread(read)

    async def save(entry: Revoked) -> None:
        async with writing:
            table[entry.key] = entry
            await asyncio.to_thread(write)

    return load, save
