"""Stream cameras: PyAV encodes a real H.264 clip, the camera grabs a key frame from it
(from a file, and streamed as MPEG-TS over loopback HTTP)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from connectors.base import Services
from connectors.camera_rtsp import RtspCamera, redact, with_credentials
from crisisbot.errors import PermanentError, TransientError
from tests.camera_server import dead_port

COLOUR = (200, 30, 60)


def encode_clip(path: Path, fmt: str, frames: int = 20) -> bytes:
    """A 320x240 H.264 clip, one key frame every 5 frames, of a red picture with a white bar."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.gop_size = 5
        picture = np.zeros((240, 320, 3), np.uint8)
        picture[:] = COLOUR
        for i in range(frames):
            picture[100:140, :] = 255 if i % 2 else 0
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


def camera(url: str, tmp_path: Path, **extra: Any) -> RtspCamera:
    raw = {"type": "rtsp-camera", "url": url, "timeout": "3s", **extra}
    return RtspCamera("dock", RtspCamera.Config.model_validate(raw), Services(data_dir=tmp_path, root=tmp_path))


def assert_is_clip_frame(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (320, 240)
    corner = np.asarray(image.convert("RGB"))[:80, :80].reshape(-1, 3).mean(axis=0)
    assert np.allclose(corner, COLOUR, atol=12), corner


async def test_grabs_a_real_frame_from_a_video_file(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    encode_clip(clip, "mp4")
    snap = await camera(f"file://{clip}", tmp_path).snapshot()
    assert snap.camera == "dock" and snap.image.content_type == "image/jpeg"
    assert_is_clip_frame(snap.image.data)


@pytest.fixture
async def ts_server(tmp_path: Path) -> AsyncIterator[str]:
    body = encode_clip(tmp_path / "clip.ts", "mpegts")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/mp2t"})
        await response.prepare(request)
        for start in range(0, len(body), 4096):
            await response.write(body[start:start + 4096])
        return response

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>not a stream</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/live.ts", stream)
    app.router.add_get("/index.html", page)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_grabs_a_frame_from_a_network_stream(ts_server: str, tmp_path: Path) -> None:
    snap = await camera(f"{ts_server}/live.ts", tmp_path).snapshot()
    assert_is_clip_frame(snap.image.data)


async def test_html_instead_of_a_stream_is_permanent(ts_server: str, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="no usable video stream"):
        await camera(f"{ts_server}/index.html", tmp_path).snapshot()


async def test_unreachable_rtsp_camera_is_transient(tmp_path: Path) -> None:
    port = await dead_port()
    cam = camera(f"rtsp://127.0.0.1:{port}/stream", tmp_path, username="op", password="p@ss:word")
    with pytest.raises(TransientError) as info:
        await cam.snapshot()
    assert "p@ss" not in str(info.value)


def test_credentials_go_into_the_url_and_out_of_messages() -> None:
    url = with_credentials("rtsp://cam.local:554/ch1", "op", "p@ss:w/rd")
    assert url == "rtsp://op:p%40ss%3Aw%2Frd@cam.local:554/ch1"
    assert redact(url) == "rtsp://cam.local:554/ch1"
