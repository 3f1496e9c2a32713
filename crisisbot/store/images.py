"""The original frames of each incident: encrypted at rest, purged after the retention period.

Emails carry reduced (and, for external recipients, blurred) copies; the full-resolution
originals stay here and are shown only through a signed, audited live-view link.
Each file is AES-256-GCM with the incident and image id as associated data, so a file
cannot be moved to another incident unnoticed. One file per image, named after what
the listing needs, so no index can disagree with the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Protocol, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crisisbot.models import utcnow
from crisisbot.store.files import load_or_create_key
from crisisbot.errors import ImageNotFound  # noqa: F401 - re-exported for existing importers

log = logging.getLogger(__name__)


class Snapshot(Protocol):
    """What a camera hands over (connectors.base.Snapshot); named here so the store needs no connector."""

    @property
    def camera(self) -> str: ...
    @property
    def taken_at(self) -> datetime: ...
    @property
    def image(self) -> "_Image": ...


class _Image(Protocol):
    @property
    def data(self) -> bytes: ...

SUFFIX = ".jpg.aes"
_INCIDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_IMAGE = re.compile(r"^(\d+)-(\d+)-([0-9a-f]{8})-([A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")


@dataclass(frozen=True, slots=True)
class StoredImage:
    id: str
    incident_id: str
    camera: str
    taken_at: datetime
    stored_at: datetime


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _at(ms: str) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, timezone.utc)


def _parse(incident_id: str, image_id: str) -> StoredImage | None:
    match = _IMAGE.match(image_id)
    if not match:
        return None
    taken, stored, _, camera = match.groups()
    return StoredImage(image_id, incident_id, camera, _at(taken), _at(stored))


class ImageStore:
    """Encrypted originals under `root/<incident>/`; `start()` runs the retention purge."""

    def __init__(self, root: Path, key: bytes, retention: float,
                 clock: Callable[[], datetime] = utcnow, purge_every: float | None = None) -> None:
        self.root = root
        self.retention = timedelta(seconds=retention)
        self._aead = AESGCM(key)
        self._clock = clock
        self._purge_every = purge_every or min(3600.0, max(1.0, retention / 10))
        self._purger: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, data_dir: Path, retention: float, **kw: object) -> "ImageStore":
        """The store of an installation, its key in `images.key` (0600, created on first run)."""
        return cls(data_dir / "images", load_or_create_key(data_dir, "images.key"), retention, **kw)  # type: ignore[arg-type]

    def _dir(self, incident_id: str) -> Path:
        if not _INCIDENT.match(incident_id):
            raise ValueError(f"not an incident id: {incident_id!r}")
        return self.root / incident_id

    async def put(self, incident_id: str, snapshot: Snapshot) -> StoredImage:
        folder = self._dir(incident_id)
        stored_at = self._clock()
        image_id = f"{_ms(snapshot.taken_at)}-{_ms(stored_at)}-{secrets.token_hex(4)}-{snapshot.camera}"
        if not _IMAGE.match(image_id):
            raise ValueError(f"not a camera id: {snapshot.camera!r}")
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, snapshot.image.data, f"{incident_id}/{image_id}".encode())
        await asyncio.to_thread(self._write, folder, image_id + SUFFIX, sealed)
        return StoredImage(image_id, incident_id, snapshot.camera, snapshot.taken_at, stored_at)

    async def put_many(self, incident_id: str, snapshots: Sequence[Snapshot]) -> list[StoredImage]:
        return [await self.put(incident_id, s) for s in snapshots]

    @staticmethod
    def _write(folder: Path, name: str, data: bytes) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = folder / f".{name}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, folder / name)

    async def images(self, incident_id: str) -> list[StoredImage]:
        """Every image still kept for the incident, oldest first."""
        folder = self._dir(incident_id)
        names = await asyncio.to_thread(lambda: os.listdir(folder) if folder.is_dir() else [])
        found = [_parse(incident_id, n[: -len(SUFFIX)]) for n in names if n.endswith(SUFFIX)]
        return sorted((f for f in found if f is not None), key=lambda f: (f.taken_at, f.id))

    async def latest(self, incident_id: str) -> list[StoredImage]:
        """The newest image of each camera, by camera id."""
        newest: dict[str, StoredImage] = {}
        for image in await self.images(incident_id):
            newest[image.camera] = image
        return [newest[c] for c in sorted(newest)]

    async def read(self, incident_id: str, image_id: str) -> tuple[StoredImage, bytes]:
        meta = _parse(incident_id, image_id)
        if meta is None:
            raise ImageNotFound(image_id)
        path = self._dir(incident_id) / (image_id + SUFFIX)
        try:
            sealed = await asyncio.to_thread(path.read_bytes)
            data = self._aead.decrypt(sealed[:12], sealed[12:], f"{incident_id}/{image_id}".encode())
        except FileNotFoundError as exc:
            raise ImageNotFound(image_id) from exc
        except InvalidTag as exc:
            log.error("image %s of incident %s fails its integrity check", image_id, incident_id)
            raise ImageNotFound(image_id) from exc
        return meta, data

    async def purge(self) -> int:
        """Delete what was stored longer ago than the retention period; returns how many."""
        horizon = self._clock() - self.retention
        return await asyncio.to_thread(self._purge, horizon)

    def _purge(self, horizon: datetime) -> int:
        removed = 0
        if not self.root.is_dir():
            return 0
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                meta = _parse(folder.name, path.name.removesuffix(SUFFIX))
                if meta is not None and meta.stored_at < horizon:
                    path.unlink(missing_ok=True)
                    removed += 1
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds once the incident's last image is gone
        if removed:
            log.info("purged %d image(s) older than the retention period", removed)
        return removed

    async def start(self) -> None:
        if self._purger is None:
            self._purger = asyncio.create_task(self._purge_loop(), name="image-retention")

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None

    async def _purge_loop(self) -> None:
        while True:
            try:
                await self.purge()
            except OSError:
                log.exception("image retention purge failed; will try again")
            await asyncio.sleep(self._purge_every)
