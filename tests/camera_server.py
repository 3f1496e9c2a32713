"""Real HTTP cameras on loopback (aiohttp): digest/basic auth, slow, hanging-up and HTML-serving ones.

Used by the camera tests and by benchmarks/bench_cameras.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import secrets
import ssl
from dataclasses import dataclass, field

from aiohttp import web
from PIL import Image, ImageDraw

USER, PASSWORD = "viewer", "s3cret-pw"


def make_jpeg(width: int = 640, height: int = 360, label: str = "cam", quality: int = 85) -> bytes:
    """A real JPEG with some structure (gradient, shapes, text), so encoders do real work."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for i in range(0, width, max(1, width // 12)):
        draw.ellipse([i, height // 3, i + width // 14, height // 3 + width // 14], fill=(200, 40 + i % 200, 90))
    draw.text((10, 10), label, fill=(255, 255, 0))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 2617 digest is MD5


def _digest_ok(header: str, method: str, realm: str, nonce: str) -> bool:
    """Check an RFC 2617 `Digest` answer (qop=auth), as Hikvision/Axis cameras do."""
    if not header.startswith("Digest "):
        return False
    fields: dict[str, str] = {}
    for part in header[7:].split(","):
        key, _, value = part.strip().partition("=")
        fields[key] = value.strip('"')
    if fields.get("username") != USER or fields.get("nonce") != nonce:
        return False
    ha1 = _md5(f"{USER}:{realm}:{PASSWORD}")
    ha2 = _md5(f"{method}:{fields.get('uri', '')}")
    expected = _md5(f"{ha1}:{nonce}:{fields.get('nc')}:{fields.get('cnonce')}:{fields.get('qop')}:{ha2}")
    return secrets.compare_digest(expected, fields.get("response", ""))


@dataclass
class CameraServer:
    """One aiohttp app with a route per camera behaviour; `hits` counts requests per path."""

    jpeg: bytes = field(default_factory=make_jpeg)
    slow_delay: float = 30.0
    ssl_context: ssl.SSLContext | None = None
    hits: dict[str, int] = field(default_factory=dict)
    auth_headers: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _nonce: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def base(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _count(self, request: web.Request) -> None:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        if "Authorization" in request.headers:
            self.auth_headers.append(request.headers["Authorization"])

    def _image(self) -> web.Response:
        return web.Response(body=self.jpeg, content_type="image/jpeg")

    async def digest(self, request: web.Request) -> web.Response:
        self._count(request)
        realm = "IP Camera"
        if _digest_ok(request.headers.get("Authorization", ""), request.method, realm, self._nonce):
            return self._image()
        challenge = f'Digest realm="{realm}", qop="auth", nonce="{self._nonce}", algorithm=MD5'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async def basic(self, request: web.Request) -> web.Response:
        self._count(request)
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") == expected:
            return self._image()
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="cam"'})

    async def open(self, request: web.Request) -> web.Response:
        self._count(request)
        return self._image()

    async def delayed(self, request: web.Request) -> web.Response:
        """`/delay.jpg?ms=120`: a camera that takes that long to produce its image."""
        self._count(request)
        await asyncio.sleep(int(request.query.get("ms", "0")) / 1000)
        return self._image()

    async def slow(self, request: web.Request) -> web.Response:
        self._count(request)
        await asyncio.sleep(self.slow_delay)
        return self._image()

    async def hangup(self, request: web.Request) -> web.StreamResponse:
        """Announces the whole image, sends a third of it, then drops the connection."""
        self._count(request)
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg", "Content-Length": str(len(self.jpeg))})
        await response.prepare(request)
        await response.write(self.jpeg[: len(self.jpeg) // 3])
        assert request.transport is not None
        request.transport.close()
        return response

    async def html(self, request: web.Request) -> web.Response:
        self._count(request)
        return web.Response(text="<html><body><h1>Login</h1></body></html>", content_type="text/html")

    async def start(self) -> "CameraServer":
        app = web.Application()
        app.router.add_get("/digest.jpg", self.digest)
        app.router.add_get("/basic.jpg", self.basic)
        app.router.add_get("/open.jpg", self.open)
        app.router.add_get("/slow.jpg", self.slow)
        app.router.add_get("/delay.jpg", self.delayed)
        app.router.add_get("/hangup.jpg", self.hangup)
        app.router.add_get("/login.html", self.html)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server  # noqa: SLF001 - the only way to learn the port aiohttp picked
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def dead_port() -> int:
    """A loopback port that accepts nothing (bound, then closed)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port
