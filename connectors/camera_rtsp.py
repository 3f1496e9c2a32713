"""Camera without a snapshot URL: one key frame is grabbed from its RTSP (or any FFmpeg) stream.

PyAV (FFmpeg) does the protocol and the decoding; the blocking work runs in a thread and
carries FFmpeg's own open/read timeout, so an abandoned grab ends by itself.
"""

from __future__ import annotations

import asyncio
import io
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

import av
import av.error
from pydantic import Field, SecretStr

from connectors.camera_buffer import BufferedCamera, CameraConfig
from crisisbot.errors import PermanentError, TransientError


class RtspCameraConfig(CameraConfig):
    type: Literal["rtsp-camera"]
    url: str = Field(pattern=r"^(rtsps?|rtmp|https?|file)://",
                     description="stream URL, e.g. rtsp://cam:554/Streaming/Channels/102")
    username: str | None = None
    password: SecretStr | None = None
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport; tcp passes firewalls")
    quality: int = Field(90, ge=30, le=100, description="JPEG quality of the grabbed frame")


def redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """FFmpeg takes RTSP credentials only inside the URL."""
    if username is None:
        return url
    parts = urlsplit(url)
    netloc = quote(username, safe="") + (":" + quote(password, safe="") if password else "") + "@"
    netloc += parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc))


def grab_frame(url: str, *, transport: str, timeout: float, quality: int, source: str) -> bytes:
    """Open the stream, decode the first key frame, return it as JPEG (blocking)."""
    options = {"rtsp_transport": transport} if url.startswith(("rtsp:", "rtsps:")) else {}
    try:
        with av.open(url, options=options, timeout=(timeout, timeout)) as container:
            if not container.streams.video:
                raise PermanentError(f"{source}: the stream has no video")
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"  # decode key frames only: cheap and never smeared
            for frame in container.decode(stream):
                out = io.BytesIO()
                frame.to_image().save(out, "JPEG", quality=quality)
                return out.getvalue()
    except (av.error.PermissionError, av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError) as exc:
        raise PermanentError(f"{source} refused the credentials ({exc.strerror})") from exc
    except (av.error.FileNotFoundError, av.error.HTTPNotFoundError, av.error.InvalidDataError) as exc:
        raise PermanentError(f"{source}: no usable video stream at this URL ({exc.strerror})") from exc
    except av.error.FFmpegError as exc:
        raise TransientError(f"{source}: stream failed ({type(exc).__name__}: {exc.strerror})") from exc
    raise TransientError(f"{source}: the stream ended before a key frame")


class RtspCamera(BufferedCamera):
    """One frame from a video stream, for cameras (or recorders) that offer no JPEG URL."""

    Config = RtspCameraConfig
    config: RtspCameraConfig

    async def capture(self) -> bytes:
        cfg = self.config
        url = with_credentials(cfg.url, cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        source = f"camera {self.name} ({redact(cfg.url)})"
        return await asyncio.to_thread(
            grab_frame, url, transport=cfg.transport, timeout=cfg.timeout, quality=cfg.quality, source=source
        )
