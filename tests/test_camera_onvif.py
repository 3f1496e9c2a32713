"""ONVIF discovery through onvif-zeep-async against a small SOAP server on loopback.

The server answers GetServices, GetProfiles and GetSnapshotUri (checking the WS-Security
UsernameToken digest like a real camera); the snapshot URI points at a digest-protected
loopback camera, so the whole chain is exercised.
"""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from connectors.base import Services
from connectors.camera_onvif import OnvifCamera
from crisisbot.errors import PermanentError, TransientError
from tests.camera_server import PASSWORD, USER, CameraServer, dead_port

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NS = 'xmlns:s="{}" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" ' \
     'xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:tt="http://www.onvif.org/ver10/schema"'.format(SOAP)


def envelope(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope {NS}><s:Body>{body}</s:Body></s:Envelope>'


def fault(subcode: str, text: str) -> str:
    return envelope(
        f"<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>ter:{subcode}</s:Value>"
        f'</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en">{text}</s:Text></s:Reason></s:Fault>'
    ).replace("<s:Fault>", '<s:Fault xmlns:ter="http://www.onvif.org/ver10/error">')


def token_ok(root: ET.Element) -> bool:
    """WS-Security PasswordDigest = Base64(SHA1(nonce + created + password))."""
    token = root.find(f".//{{{WSSE}}}UsernameToken")
    if token is None or token.findtext(f"{{{WSSE}}}Username") != USER:
        return False
    nonce = base64.b64decode(token.findtext(f"{{{WSSE}}}Nonce") or "")
    created = token.findtext(f"{{{WSU}}}Created") or ""
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + PASSWORD.encode()).digest()).decode()
    return digest == token.findtext(f"{{{WSSE}}}Password")


class OnvifServer:
    def __init__(self, snapshot_uri: str, profiles: tuple[str, ...] = ("main", "sub")) -> None:
        self.snapshot_uri = snapshot_uri
        self.profiles = profiles
        self.calls: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        root = ET.fromstring(await request.read())
        body = root.find(f"{{{SOAP}}}Body")
        assert body is not None
        operation = body[0].tag.rpartition("}")[2]
        self.calls.append(operation)
        if not token_ok(root):
            return web.Response(status=400, text=fault("NotAuthorized", "Sender not Authorized"),
                                content_type="application/soap+xml")
        return web.Response(text=envelope(self.answer(operation, body[0])), content_type="application/soap+xml")

    def answer(self, operation: str, request: ET.Element) -> str:
        if operation == "GetServices":
            services = [("http://www.onvif.org/ver10/device/wsdl", "device_service"),
                        ("http://www.onvif.org/ver10/media/wsdl", "media_service")]
            return "<tds:GetServicesResponse>" + "".join(
                f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{self.base}/onvif/{path}</tds:XAddr>"
                "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
                for ns, path in services
            ) + "</tds:GetServicesResponse>"
        if operation == "GetProfiles":
            return "<trt:GetProfilesResponse>" + "".join(
                f'<trt:Profiles token="Profile_{i}" fixed="true"><tt:Name>{name}</tt:Name></trt:Profiles>'
                for i, name in enumerate(self.profiles, 1)
            ) + "</trt:GetProfilesResponse>"
        if operation == "GetSnapshotUri":
            token = request.findtext("{http://www.onvif.org/ver10/media/wsdl}ProfileToken")
            return (f"<trt:GetSnapshotUriResponse><trt:MediaUri><tt:Uri>{self.snapshot_uri}?profile={token}</tt:Uri>"
                    "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false"
                    "</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetSnapshotUriResponse>")
        raise web.HTTPNotImplemented()

    async def start(self) -> "OnvifServer":
        app = web.Application()
        app.router.add_post("/onvif/{service}", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def cams() -> AsyncIterator[CameraServer]:
    server = await CameraServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def onvif(cams: CameraServer) -> AsyncIterator[OnvifServer]:
    server = await OnvifServer(f"{cams.base}/digest.jpg").start()
    yield server
    await server.stop()


def camera(port: int, tmp_path: Path, **extra: Any) -> OnvifCamera:
    raw = {"type": "onvif-camera", "host": "127.0.0.1", "port": port, "username": USER,
           "password": PASSWORD, "timeout": "10s", **extra}
    return OnvifCamera("lobby", OnvifCamera.Config.model_validate(raw), Services(data_dir=tmp_path, root=tmp_path))


async def test_discovers_snapshot_uri_and_fetches_the_jpeg(onvif: OnvifServer, cams: CameraServer,
                                                           tmp_path: Path) -> None:
    cam = camera(onvif.port, tmp_path, profile="sub")
    await cam.start()
    try:
        snap = await cam.snapshot()
        again = await cam.snapshot()
    finally:
        await cam.stop()
    assert snap.image.data == cams.jpeg and again.image.data == cams.jpeg
    assert onvif.calls == ["GetServices", "GetProfiles", "GetSnapshotUri"]  # discovered once, then cached
    assert await cam.discover() == f"{cams.base}/digest.jpg?profile=Profile_2"


async def test_wrong_onvif_password_is_permanent(onvif: OnvifServer, tmp_path: Path) -> None:
    cam = camera(onvif.port, tmp_path, password="nope")
    with pytest.raises(PermanentError, match="refused the ONVIF"):
        await cam.snapshot()
    await cam.stop()


async def test_unknown_profile_names_the_available_ones(onvif: OnvifServer, tmp_path: Path) -> None:
    cam = camera(onvif.port, tmp_path, profile="thermal")
    with pytest.raises(PermanentError, match="no media profile 'thermal'.*Profile_1 \\(main\\)"):
        await cam.snapshot()
    await cam.stop()


async def test_unreachable_onvif_device_is_transient(tmp_path: Path) -> None:
    cam = camera(await dead_port(), tmp_path, timeout="3s")
    with pytest.raises(TransientError):
        await cam.snapshot()
    await cam.stop()
