"""Demo camera: draws a labelled test picture, so the quick start shows attachments offline."""

from __future__ import annotations

import asyncio
import io
from typing import Literal

from PIL import Image, ImageDraw

from connectors.base import Camera, Snapshot
from crisisbot.config.types import Strict
from crisisbot.models import Attachment, utcnow


class DemoCameraConfig(Strict):
    type: Literal["demo-camera"]
    label: str = "Demo camera"
    width: int = 640
    height: int = 360


def _picture(label: str, stamp: str, width: int, height: int) -> bytes:
    image = Image.new("RGB", (width, height), (32, 48, 64))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 40):
        draw.line([(x, 0), (x, height)], fill=(48, 68, 88))
    draw.rectangle([10, 10, width - 10, 60], fill=(0, 0, 0))
    draw.text((20, 20), f"{label}  {stamp}", fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


class DemoCamera(Camera):
    Config = DemoCameraConfig
    config: DemoCameraConfig

    async def snapshot(self) -> Snapshot:
        now = utcnow()
        data = await asyncio.to_thread(
            _picture, self.config.label, now.strftime("%Y-%m-%d %H:%M:%S UTC"), self.config.width, self.config.height
        )
        return Snapshot(self.name, now, Attachment(f"{self.name}-{now:%H%M%S}.jpg", "image/jpeg", data))
