"""Live-view links over HTTP (ASGI): valid, expired, tampered, revoked; every view in the
real audit log; originals encrypted at rest and purged after the retention period."""

from __future__ import annotations

import io
import re
import stat
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from starlette.applications import Starlette

from connectors.base import Snapshot
from crisisbot.store.images import ImageNotFound, ImageStore
from crisisbot.links import Signer
from crisisbot.models import Attachment, Recipient
from crisisbot.store.sqlite import SqliteStore
from crisisbot.web.access import Revocations, json_file
from crisisbot.web.liveview import LIVEVIEW, liveview_link, liveview_routes
from crisisbot.web.refusals import RefusalAudit, Refusals

INCIDENT, OTHER = "inc0001", "inc0002"
ALICE = Recipient("alice", "Alice", "alice@example.org", "fr")
VENDOR = Recipient("vendor", "Guard company", "ops@guards.example", "fr", external=True)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def jpeg(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "JPEG", quality=92)
    return out.getvalue()


FACE_PHOTO = jpeg(skdata.astronaut())
PLAIN = jpeg(np.full((120, 160, 3), 90, np.uint8))


def snap(camera: str, data: bytes, at: datetime) -> Snapshot:
    return Snapshot(camera, at, Attachment(f"{camera}.jpg", "image/jpeg", data))


class Env:
    def __init__(self, tmp: Path, clock: Clock, store: SqliteStore) -> None:
        self.clock = clock
        self.store = store
        self.signer = Signer(b"k" * 32, now=clock)
        self.images = ImageStore.open(tmp, retention=3600, clock=clock)
        load, save = json_file(tmp / "revoked.json")
        self.revocation_file = (load, save)
        self.revocations = Revocations(save, clock=clock)
        self.refusals = Refusals(RefusalAudit(store.audit))
        app = Starlette(routes=[liveview_routes(self.signer, self.images, store.audit, revocations=self.revocations,
                                                refusals=self.refusals)])
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://crisis.test")

    def link(self, who: Recipient, ttl: float = 600, incident: str = INCIDENT) -> str:
        return liveview_link(self.signer, "http://crisis.test", incident, who, ttl).removeprefix("http://crisis.test")

    async def audit(self, kind: str) -> list[dict]:
        await self.refusals.audit.flush()  # refusals are counted per address and minute
        return [e.data for e in await self.store.audit_entries() if e.kind == kind]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = SqliteStore(tmp_path / "crisis.db")
    await store.open()
    env = Env(tmp_path, Clock(), store)
    t = env.clock.now
    await env.images.put(INCIDENT, snap("hall", PLAIN, t - timedelta(seconds=4)))
    await env.images.put(INCIDENT, snap("hall", FACE_PHOTO, t - timedelta(seconds=2)))
    await env.images.put(INCIDENT, snap("dock", PLAIN, t - timedelta(seconds=1)))
    await env.images.put(OTHER, snap("vault", PLAIN, t))
    yield env
    await env.http.aclose()
    await store.close()


def image_paths(page: str, link: str) -> list[str]:
    """The image URLs of the page, resolved against the page's own path."""
    ids = [re.sub(r'".*', "", part).split("/img/")[1] for part in page.split('src="')[1:]]
    return [f"{link}/img/{image_id}" for image_id in ids]


async def test_committee_member_sees_latest_originals_and_every_view_is_audited(env: Env) -> None:
    link = env.link(ALICE)
    page = await env.http.get(link)
    assert page.status_code == 200 and "Incident inc0001" in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    paths = image_paths(page.text, link)
    assert len(paths) == 2  # the latest frame of each of the two cameras
    bodies = {p.rsplit("-", 1)[1]: (await env.http.get(p)).content for p in paths}
    assert bodies == {"dock": PLAIN, "hall": FACE_PHOTO}  # originals, full resolution
    viewed = await env.audit("liveview.viewed")
    assert viewed and viewed[0]["recipient"] == "alice" and len(viewed[0]["images"]) == 2
    fetched = await env.audit("liveview.image")
    assert sorted(e["camera"] for e in fetched) == ["dock", "hall"] and not any(e["blurred"] for e in fetched)
    assert (await env.store.verify_audit()).ok


async def test_external_recipients_link_shows_blurred_faces(env: Env) -> None:
    link = env.link(VENDOR)
    page = await env.http.get(link)
    hall = next(p for p in image_paths(page.text, link) if p.endswith("-hall"))
    served = (await env.http.get(hall)).content
    assert served != FACE_PHOTO
    x, y, w, h = 177, 66, 95, 95
    face = np.asarray(Image.open(io.BytesIO(served)).convert("L"))[y:y + h, x:x + w].astype(float)
    original = np.asarray(Image.open(io.BytesIO(FACE_PHOTO)).convert("L"))[y:y + h, x:x + w].astype(float)
    assert np.abs(np.diff(face)).mean() < 0.3 * np.abs(np.diff(original)).mean()  # detail gone
    assert (await env.audit("liveview.image"))[-1] == {
        "recipient": "vendor", "image": hall.rsplit("/", 1)[1], "camera": "hall", "blurred": True}


async def test_expired_tampered_foreign_and_other_purpose_links_are_refused(env: Env) -> None:
    link = env.link(ALICE, ttl=60)
    assert (await env.http.get(link)).status_code == 200
    body, mac = link.rsplit(".", 1)
    tampered = f"{body}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
    assert (await env.http.get(tampered)).status_code == 403
    ack = "/live/" + env.signer.sign(INCIDENT, "alice", "acknowledge", 600)
    assert (await env.http.get(ack)).status_code == 403
    other = env.link(ALICE, incident=OTHER)
    own = image_paths((await env.http.get(link)).text, link)[0]
    stolen = other + "/img/" + own.rsplit("/", 1)[1]
    assert (await env.http.get(stolen)).status_code == 404  # an image of another incident
    env.clock.now += timedelta(seconds=61)
    expired = await env.http.get(link)
    assert expired.status_code == 410 and "expired" in expired.text
    assert (await env.http.get(own)).status_code == 410
    refused = await env.audit("liveview.refused")
    assert [e["count"] for e in refused] == [1, 3]  # the first at once, the rest as one count
    assert refused[0]["client"] == "127.0.0.1" and refused[1]["samples"] == ["403", "410"]


async def test_revoked_token_and_revoked_recipient_are_refused_and_survive_a_restart(env: Env) -> None:
    first, second = env.link(ALICE), env.link(ALICE, ttl=900)
    vendor = env.link(VENDOR)
    await env.revocations.revoke_token(first.rsplit("/", 1)[1], env.signer.verify(first.rsplit("/", 1)[1], LIVEVIEW),
                                       reason="forwarded by mistake")
    assert (await env.http.get(first)).status_code == 403
    assert (await env.http.get(second)).status_code == 200  # only that link
    await env.revocations.revoke_recipient(INCIDENT, "vendor", reason="contract ended")
    assert (await env.http.get(vendor)).status_code == 403
    refused = await env.audit("liveview.refused")
    assert [(e["count"], e["samples"]) for e in refused] == [(1, ["403 alice"]), (1, ["403 alice", "403 vendor"])]
    load, save = env.revocation_file
    reloaded = await Revocations.load(load, save, clock=env.clock)
    token = vendor.rsplit("/", 1)[1]
    claims = env.signer.verify(token, "liveview.blurred")
    assert reloaded.reason(token, claims) == "contract ended"
    await reloaded.restore_recipient(INCIDENT, "vendor")
    assert reloaded.reason(token, claims) is None


async def test_originals_are_encrypted_at_rest_and_purged_after_retention(env: Env, tmp_path: Path) -> None:
    key = tmp_path / "images.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    files = sorted((tmp_path / "images" / INCIDENT).iterdir())
    assert len(files) == 3
    for path in files:
        raw = path.read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not raw.startswith(b"\xff\xd8") and PLAIN[200:264] not in raw
    images = await env.images.images(INCIDENT)
    meta, data = await env.images.read(INCIDENT, images[-1].id)
    assert data == PLAIN and meta.camera == "dock"
    files[0].write_bytes(files[0].read_bytes()[:-1] + b"\x00")  # tampered on disk
    with pytest.raises(ImageNotFound):
        await env.images.read(INCIDENT, images[0].id)
    reopened = ImageStore.open(tmp_path, retention=3600, clock=env.clock)
    assert (await reopened.read(INCIDENT, images[-1].id))[1] == PLAIN  # same key after a restart
    env.clock.now += timedelta(minutes=59)
    assert await env.images.purge() == 0
    env.clock.now += timedelta(minutes=2)
    assert await env.images.purge() == 4
    assert await env.images.images(INCIDENT) == [] and not (tmp_path / "images" / INCIDENT).exists()
    page = await env.http.get(env.link(ALICE))
    assert "No image yet" in page.text
