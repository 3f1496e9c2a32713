"""Camera whose snapshot is one HTTP GET (Axis, Hikvision, Dahua, most ONVIF snapshot URIs).

The client part (`SnapshotClient`) knows nothing of the daemon, so the ONVIF camera
reuses it once it has discovered its snapshot URL.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import typing
from pathlib import Path
from typing import Literal

import httpcore
import httpx
from pydantic import Field, SecretStr, field_validator

from connectors.base import Services
from connectors.camera_buffer import BufferedCamera, CameraConfig, check_jpeg
from crisisbot.config.types import Strict
from crisisbot.errors import PermanentError, TransientError, CertificatePinMismatch

log = logging.getLogger(__name__)


class TlsConfig(Strict):
    ca_file: str | None = Field(None, description="PEM bundle that signed the camera's certificate")
    fingerprint: str | None = Field(
        None, description="SHA-256 of the camera's certificate (hex, colons allowed): pinned, "
        "so a self-signed certificate is accepted only if it is exactly this one",
    )
    verify_hostname: bool = Field(True, description="false when the certificate does not name "
                                                    "the address used (cameras reached by IP)")

    @field_validator("fingerprint")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = value.replace(":", "").replace(" ", "").lower()
        if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
            raise ValueError("expected the 64 hex digits of a SHA-256 fingerprint")
        return digits


class HttpAuth(Strict):
    """Credentials shared by the HTTP and ONVIF cameras."""

    username: str | None = None
    password: SecretStr | None = None
    auth: Literal["digest", "basic"] = Field("digest", description="how the camera checks credentials")
    tls: TlsConfig = Field(default_factory=TlsConfig)


class HttpCameraConfig(CameraConfig, HttpAuth):
    type: Literal["http-camera"]
    url: str = Field(pattern=r"^https?://", description="snapshot URL, e.g. http://cam/axis-cgi/jpg/image.cgi")


class _PinnedStream(httpcore.AsyncNetworkStream):
    """Checks the certificate right after the TLS handshake, before any credential is sent."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, fingerprint: str) -> None:
        self._inner = inner
        self._fingerprint = fingerprint

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        der = stream.get_extra_info("ssl_object").getpeercert(binary_form=True)
        seen = hashlib.sha256(der).hexdigest()
        if seen != self._fingerprint:
            await stream.aclose()
            raise CertificatePinMismatch(
                f"the certificate of {server_hostname} has SHA-256 {seen}, not the pinned {self._fingerprint}"
            )
        return stream

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, fingerprint: str) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._fingerprint = fingerprint

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _PinnedStream(stream, self._fingerprint)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def ssl_context(tls: TlsConfig, root: Path) -> ssl.SSLContext:
    """CA trust as configured; a pinned fingerprint alone replaces CA trust (self-signed cameras)."""
    if tls.ca_file:
        ctx = ssl.create_default_context(cafile=str(root / tls.ca_file))
    elif tls.fingerprint:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context()
    if not tls.verify_hostname:
        ctx.check_hostname = False
    return ctx


def build_client(auth: HttpAuth, root: Path, timeout: float) -> httpx.AsyncClient:
    ctx = ssl_context(auth.tls, root)
    transport = httpx.AsyncHTTPTransport(verify=ctx)
    if auth.tls.fingerprint:
        # httpx has no hook between the TLS handshake and the first request; httpcore's
        # network backend is the only place to pin, so the pool is rebuilt with one.
        transport._pool = httpcore.AsyncConnectionPool(  # noqa: SLF001
            ssl_context=ctx, network_backend=_PinnedBackend(auth.tls.fingerprint)
        )
    credentials: httpx.Auth | None = None
    if auth.username is not None:
        password = auth.password.get_secret_value() if auth.password else ""
        credentials = (httpx.DigestAuth if auth.auth == "digest" else httpx.BasicAuth)(auth.username, password)
    return httpx.AsyncClient(transport=transport, auth=credentials, timeout=timeout,
                             follow_redirects=True, headers={"Accept": "image/jpeg"})


class SnapshotClient:
    """GETs a snapshot URL and turns every way it can go wrong into a typed error."""

    def __init__(self, client: httpx.AsyncClient, source: str, max_bytes: int) -> None:
        self.client = client
        self.source = source
        self.max_bytes = max_bytes

    async def fetch(self, url: str) -> bytes:
        try:
            async with self.client.stream("GET", url) as response:
                self._check_status(response)
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise PermanentError(f"{self.source} sent more than {self.max_bytes} bytes; not an image")
                content_type = response.headers.get("content-type", "")
        except httpx.TimeoutException as exc:
            raise TransientError(f"{self.source} did not answer in time ({type(exc).__name__})") from exc
        except httpx.ConnectError as exc:
            if isinstance(exc.__context__, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in str(exc):
                raise PermanentError(f"{self.source}: TLS certificate not trusted ({exc}); "
                                     "set tls.ca_file or tls.fingerprint") from exc
            raise TransientError(f"{self.source} is unreachable ({exc or type(exc).__name__})") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise TransientError(f"{self.source} closed the connection before the image was complete "
                                 f"({exc or type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise TransientError(f"{self.source}: {type(exc).__name__}: {exc}") from exc
        try:
            return check_jpeg(bytes(body), self.source, content_type)
        except PermanentError as exc:
            log.warning("rejected: %s", exc)
            raise

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        if status in (401, 403):
            raise PermanentError(f"{self.source} refused the credentials (HTTP {status}); "
                                 "check username, password and auth (digest or basic)")
        if status in (400, 404, 405, 410):
            raise PermanentError(f"{self.source} has no snapshot at this URL (HTTP {status})")
        retry_after = response.headers.get("retry-after", "")
        raise TransientError(f"{self.source} answered HTTP {status}",
                             retry_after=float(retry_after) if retry_after.isdigit() else None)


class HttpCamera(BufferedCamera):
    """Snapshot by HTTP GET, with basic/digest auth and CA or pinned-certificate TLS."""

    Config = HttpCameraConfig
    config: HttpCameraConfig

    def __init__(self, name: str, config: HttpCameraConfig, services: Services, **kw: typing.Any) -> None:
        super().__init__(name, config, services, **kw)
        self._client: SnapshotClient | None = None

    def _snapshots(self) -> SnapshotClient:
        if self._client is None:
            http = build_client(self.config, self.services.root, self.config.timeout)
            self._client = SnapshotClient(http, f"camera {self.name}", self.config.max_bytes)
        return self._client

    async def capture(self) -> bytes:
        return await self._snapshots().fetch(self.config.url)

    async def stop(self) -> None:
        await super().stop()
        if self._client is not None:
            await self._client.client.aclose()
            self._client = None
