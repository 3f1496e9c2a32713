"""What every real camera shares: capture deadline, JPEG check and the pre-alarm ring buffer.

The ring buffer is why a camera is more than a URL: the committee wants to see the
seconds *before* the panic button was pressed, which no camera can hand out later.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from abc import abstractmethod
from datetime import datetime, timedelta
from typing import Callable

from pydantic import BaseModel, Field

from connectors.base import Camera, Services, Snapshot
from crisisbot.config.types import Seconds, Strict
from crisisbot.errors import ConnectorError, PermanentError, TransientError
from crisisbot.models import Attachment, utcnow

JPEG_MAGIC = b"\xff\xd8\xff"


class PrealarmConfig(Strict):
    every: Seconds = Field(2.0, gt=0, description="one frame every ... (e.g. 2s)")
    keep: Seconds = Field(30.0, gt=0, description="how far back the buffer reaches (e.g. 30s)")


class CameraConfig(Strict):
    """Fields every camera type accepts."""

    timeout: Seconds = Field(5.0, gt=0, description="deadline of one capture")
    max_bytes: int = Field(20_000_000, gt=0, description="larger answers are refused")
    prealarm: PrealarmConfig | None = Field(None, description="keep a short ring buffer of frames")


def check_jpeg(data: bytes, source: str, content_type: str = "") -> bytes:
    """Refuse what is not a whole JPEG, with a message the operator can act on."""
    if not data.startswith(JPEG_MAGIC):
        head = data[:60].decode("utf-8", "replace").replace("\n", " ").strip()
        kind = content_type.split(";")[0].strip() or "unknown content"
        raise PermanentError(
            f"{source} answered with {kind} ({len(data)} bytes, starting {head!r}) instead of a "
            "JPEG image; check the snapshot URL and the camera's credentials"
        )
    if not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        raise TransientError(f"{source} sent a truncated JPEG ({len(data)} bytes)")
    return data


class FrameRing:
    """The frames of the last `keep` seconds, oldest first; bounded so memory stays flat."""

    def __init__(self, keep: float, every: float) -> None:
        self.keep = timedelta(seconds=keep)
        self._frames: collections.deque[Snapshot] = collections.deque(maxlen=int(keep / every) + 2)

    def add(self, snapshot: Snapshot) -> None:
        self._frames.append(snapshot)
        horizon = snapshot.taken_at - self.keep
        while self._frames and self._frames[0].taken_at < horizon:
            self._frames.popleft()

    def around(self, moment: datetime, after: timedelta) -> list[Snapshot]:
        return [s for s in self._frames if moment - self.keep <= s.taken_at <= moment + after]


class BufferedCamera(Camera):
    """Base of the real cameras: subclasses implement `capture()` returning JPEG bytes."""

    config: CameraConfig

    def __init__(self, name: str, config: BaseModel, services: Services,
                 clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(name, config, services)
        self._clock = clock
        prealarm = self.config.prealarm
        self._ring = FrameRing(prealarm.keep, prealarm.every) if prealarm else None
        self._recorder: asyncio.Task[None] | None = None

    @abstractmethod
    async def capture(self) -> bytes:
        """Fetch one JPEG; raise TransientError / PermanentError."""

    async def snapshot(self) -> Snapshot:
        try:
            async with asyncio.timeout(self.config.timeout):
                data = await self.capture()
        except TimeoutError as exc:
            raise TransientError(f"camera {self.name}: no image within {self.config.timeout:g}s") from exc
        now = self._clock()
        return Snapshot(self.name, now, Attachment(f"{self.name}-{now:%Y%m%d-%H%M%S}.jpg", "image/jpeg", data))

    def prealarm(self, since: datetime) -> list[Snapshot]:
        """Buffered frames from `keep` seconds before `since` (the alarm time) up to one
        interval after it, oldest first; empty when no buffer is configured."""
        if self._ring is None or self.config.prealarm is None:
            return []
        return self._ring.around(since, timedelta(seconds=self.config.prealarm.every))

    async def start(self) -> None:
        if self._ring is not None and self._recorder is None:
            self._recorder = asyncio.create_task(self._record(), name=f"prealarm-{self.name}")

    async def stop(self) -> None:
        if self._recorder is not None:
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder
            self._recorder = None

    async def _record(self) -> None:
        """Grab a frame every `every` seconds on a fixed cadence; log failures once per outage."""
        assert self._ring is not None and self.config.prealarm is not None
        every = self.config.prealarm.every
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        failing = False
        while True:
            try:
                async with asyncio.timeout(every):
                    self._ring.add(await self.snapshot())
                if failing:
                    self.log.info("pre-alarm buffer of camera %s: images again", self.name)
                failing = False
            except (ConnectorError, TimeoutError) as exc:
                if not failing:
                    self.log.warning("pre-alarm buffer of camera %s: %s", self.name, exc)
                failing = True
            except Exception:  # noqa: BLE001 - a bug must not stop the buffer for good
                if not failing:
                    self.log.exception("pre-alarm buffer of camera %s failed", self.name)
                failing = True
            next_at += every
            now = loop.time()
            if next_at < now:  # a slow capture: skip the missed ticks instead of bursting
                next_at = now + every - (now - next_at) % every
            await asyncio.sleep(next_at - now)
