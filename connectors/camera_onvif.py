"""ONVIF camera: the snapshot URL is discovered (GetServices, GetProfiles, GetSnapshotUri).

onvif-zeep-async does the SOAP and WS-Security part. The JPEG itself is then fetched
with our own `SnapshotClient`, because the library's snapshot helper turns certificate
verification off and reports failures as `None`.
"""

from __future__ import annotations

import asyncio
import contextlib
import typing
from typing import Literal

import aiohttp
import zeep.exceptions
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFAuthError, ONVIFError, ONVIFTimeoutError
from pydantic import Field

from connectors.base import Services
from connectors.camera_buffer import BufferedCamera, CameraConfig
from connectors.camera_http import HttpAuth, SnapshotClient, build_client
from crisisbot.errors import PermanentError, TransientError


class OnvifCameraConfig(CameraConfig, HttpAuth):
    type: Literal["onvif-camera"]
    host: str = Field(description="address of the camera (ONVIF device service at /onvif/device_service)")
    port: int = Field(80, ge=1, le=65535)
    profile: str | None = Field(None, description="media profile token or name (default: the first)")
    rewrite_host: bool = Field(False, description="camera behind NAT: reach the advertised URLs "
                                                  "through host:port instead")
    adjust_time: bool = Field(False, description="compensate the camera's clock skew in WS-Security")


def _pick_profile(profiles: list[typing.Any], wanted: str | None, source: str) -> str:
    if not profiles:
        raise PermanentError(f"{source} has no media profile")
    if wanted is None:
        return str(profiles[0].token)
    for profile in profiles:
        if wanted in (profile.token, getattr(profile, "Name", None)):
            return str(profile.token)
    names = ", ".join(f"{p.token} ({getattr(p, 'Name', '')})" for p in profiles)
    raise PermanentError(f"{source} has no media profile '{wanted}'; it offers: {names}")


def _translate(exc: BaseException, source: str) -> Exception:
    """Map the many ways SOAP over HTTP fails onto 'retry' or 'fix the configuration'."""
    if isinstance(exc, ONVIFAuthError):
        return PermanentError(f"{source} refused the ONVIF credentials")
    if isinstance(exc, zeep.exceptions.Fault):
        detail = " ".join(str(x) for x in (exc.message, exc.code, getattr(exc, "subcodes", "")) if x)
        if "NotAuthorized" in detail or "not authorized" in detail.lower():
            return PermanentError(f"{source} refused the ONVIF credentials ({exc.message})")
        return PermanentError(f"{source} refused the ONVIF request: {exc.message}")
    if isinstance(exc, zeep.exceptions.TransportError):
        if exc.status_code in (401, 403):
            return PermanentError(f"{source} refused the ONVIF credentials (HTTP {exc.status_code})")
        return TransientError(f"{source}: ONVIF service answered HTTP {exc.status_code}")
    if isinstance(exc, (zeep.exceptions.XMLSyntaxError, zeep.exceptions.XMLParseError)):
        return PermanentError(f"{source} did not answer in ONVIF (SOAP) at this address and port")
    if isinstance(exc, ONVIFError) and not isinstance(exc, ONVIFTimeoutError) and "support" in str(exc):
        return PermanentError(f"{source}: {exc}")
    return TransientError(f"{source}: ONVIF discovery failed ({type(exc).__name__}: {exc})")


class OnvifCamera(BufferedCamera):
    """Discovers its snapshot URL once (at start, again after a 404), then behaves as an HTTP camera."""

    Config = OnvifCameraConfig
    config: OnvifCameraConfig

    def __init__(self, name: str, config: OnvifCameraConfig, services: Services, **kw: typing.Any) -> None:
        super().__init__(name, config, services, **kw)
        self._source = f"camera {name}"
        self._uri: str | None = None
        self._lock = asyncio.Lock()
        self._client: SnapshotClient | None = None
        self._warmup: asyncio.Task[None] | None = None

    async def discover(self) -> str:
        """GetServices → GetProfiles → GetSnapshotUri; cached until it stops working."""
        async with self._lock:
            if self._uri is not None:
                return self._uri
            cfg = self.config
            password = cfg.password.get_secret_value() if cfg.password else None
            # no_cache: zeep's cache would be a sqlite file in the user's home, and the WSDLs are local.
            # Note: ONVIFCamera() removes http(s)_proxy from os.environ (cameras are on the LAN).
            device = ONVIFCamera(cfg.host, cfg.port, cfg.username, password, no_cache=True,
                                 adjust_time=cfg.adjust_time, nat_override=cfg.rewrite_host)
            try:
                await device.update_xaddrs()
                media = await device.create_media_service()
                token = _pick_profile(list(await media.GetProfiles() or []), cfg.profile, self._source)
                request = media.create_type("GetSnapshotUri")
                request.ProfileToken = token
                answer = await media.GetSnapshotUri(request)
            except (PermanentError, TransientError):
                raise
            except (ONVIFError, zeep.exceptions.Error, aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise _translate(exc, self._source) from exc
            finally:
                await device.close()
            uri = getattr(answer, "Uri", None)
            if not uri:
                raise PermanentError(f"{self._source} offers no snapshot URI for profile {token}; "
                                     "use an rtsp-camera instead")
            self._uri = device.rewrite_url(str(uri)) or str(uri)
            self.log.info("camera %s: snapshot URI discovered for profile %s", self.name, token)
            return self._uri

    async def capture(self) -> bytes:
        if self._client is None:
            http = build_client(self.config, self.services.root, self.config.timeout)
            self._client = SnapshotClient(http, self._source, self.config.max_bytes)
        uri = await self.discover()
        try:
            return await self._client.fetch(uri)
        except PermanentError as exc:
            if "no snapshot at this URL" in str(exc):
                self._uri = None  # the camera was reconfigured or rebooted: discover again next time
            raise

    async def start(self) -> None:
        """Discover in the background, so the first alarm does not pay for WSDL parsing."""
        self._warmup = asyncio.create_task(self._warm(), name=f"onvif-discover-{self.name}")
        await super().start()

    async def _warm(self) -> None:
        try:
            await self.discover()
        except (PermanentError, TransientError) as exc:
            self.log.warning("camera %s: %s (will retry at the next snapshot)", self.name, exc)

    async def stop(self) -> None:
        if self._warmup is not None:
            self._warmup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warmup
        await super().stop()
        if self._client is not None:
            await self._client.client.aclose()
            self._client = None
