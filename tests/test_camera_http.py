"""HTTP cameras against real loopback servers: auth, TLS pinning, slow, hanging-up and HTML cameras."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import trustme

from connectors.base import Services
from connectors.camera_http import CertificatePinMismatch, HttpCamera
from crisisbot.errors import PermanentError, TransientError
from tests.camera_server import PASSWORD, USER, CameraServer, dead_port


@pytest.fixture
async def cams() -> AsyncIterator[CameraServer]:
    server = await CameraServer().start()
    yield server
    await server.stop()


def camera(url: str, tmp_path: Path, name: str = "hall", **extra: Any) -> HttpCamera:
    raw = {"type": "http-camera", "url": url, "timeout": "2s", **extra}
    return HttpCamera(name, HttpCamera.Config.model_validate(raw), Services(data_dir=tmp_path, root=tmp_path))


async def test_digest_camera_returns_the_served_jpeg(cams: CameraServer, tmp_path: Path) -> None:
    cam = camera(f"{cams.base}/digest.jpg", tmp_path, username=USER, password=PASSWORD, auth="digest")
    await cam.start()
    try:
        snap = await cam.snapshot()
    finally:
        await cam.stop()
    assert snap.image.data == cams.jpeg
    assert snap.image.content_type == "image/jpeg" and snap.camera == "hall"
    assert all(h.startswith("Digest ") for h in cams.auth_headers)  # the password never went in clear


async def test_basic_auth_and_wrong_password(cams: CameraServer, tmp_path: Path) -> None:
    good = camera(f"{cams.base}/basic.jpg", tmp_path, username=USER, password=PASSWORD, auth="basic")
    assert (await good.snapshot()).image.data == cams.jpeg
    bad = camera(f"{cams.base}/digest.jpg", tmp_path, username=USER, password="wrong", auth="digest")
    with pytest.raises(PermanentError, match="refused the credentials"):
        await bad.snapshot()
    await good.stop()
    await bad.stop()


async def test_html_instead_of_image_is_rejected_and_logged(cams: CameraServer, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    cam = camera(f"{cams.base}/login.html", tmp_path)
    with caplog.at_level(logging.WARNING), pytest.raises(PermanentError) as info:
        await cam.snapshot()
    await cam.stop()
    message = str(info.value)
    assert "text/html" in message and "instead of a JPEG image" in message and "<html>" in message
    assert any("instead of a JPEG image" in r.getMessage() for r in caplog.records)


async def test_camera_that_hangs_up_mid_image_is_transient(cams: CameraServer, tmp_path: Path) -> None:
    cam = camera(f"{cams.base}/hangup.jpg", tmp_path)
    with pytest.raises(TransientError, match="closed the connection"):
        await cam.snapshot()
    await cam.stop()


async def test_slow_camera_hits_its_own_deadline(cams: CameraServer, tmp_path: Path) -> None:
    cam = camera(f"{cams.base}/slow.jpg", tmp_path, timeout="300ms")
    with pytest.raises(TransientError, match="did not answer in time|no image within"):
        await cam.snapshot()
    await cam.stop()


async def test_parallel_capture_is_not_delayed_by_dead_or_slow_cameras(cams: CameraServer, tmp_path: Path) -> None:
    """The shape the snapshot step uses: gather, each camera under its own deadline."""
    refused = await dead_port()
    cameras = [
        camera(f"{cams.base}/open.jpg", tmp_path, name="a", timeout="5s"),
        camera(f"{cams.base}/digest.jpg", tmp_path, name="b", timeout="5s", username=USER, password=PASSWORD),
        camera(f"{cams.base}/slow.jpg", tmp_path, name="slow", timeout="400ms"),
        camera(f"http://127.0.0.1:{refused}/x.jpg", tmp_path, name="dead", timeout="5s"),
        camera(f"{cams.base}/login.html", tmp_path, name="html", timeout="5s"),
    ]
    results = await asyncio.gather(*(c.snapshot() for c in cameras), return_exceptions=True)
    for c in cameras:
        await c.stop()
    outcome = {c.name: r for c, r in zip(cameras, results, strict=True)}
    assert outcome["a"].image.data == cams.jpeg and outcome["b"].image.data == cams.jpeg
    assert isinstance(outcome["slow"], TransientError)
    assert isinstance(outcome["dead"], TransientError) and "unreachable" in str(outcome["dead"])
    assert isinstance(outcome["html"], PermanentError)


async def test_prealarm_buffer_records_in_the_background(cams: CameraServer, tmp_path: Path) -> None:
    cam = camera(f"{cams.base}/open.jpg", tmp_path, prealarm={"every": "50ms", "keep": "10s"})
    await cam.start()
    try:
        for _ in range(200):
            await asyncio.sleep(0.02)
            if cams.hits.get("/open.jpg", 0) >= 5:
                break
        alarm_at = (await cam.snapshot()).taken_at
        frames = cam.prealarm(alarm_at)
    finally:
        await cam.stop()
    assert len(frames) >= 4  # recorded before the alarm, without anyone asking
    assert all(f.taken_at <= alarm_at + timedelta(milliseconds=50) for f in frames)
    assert [f.taken_at for f in frames] == sorted(f.taken_at for f in frames)
    assert all(f.image.data == cams.jpeg for f in frames)
    assert camera(f"{cams.base}/open.jpg", tmp_path).prealarm(alarm_at) == []  # no buffer configured


def test_ring_keeps_only_the_window_around_the_alarm() -> None:
    from connectors.base import Snapshot
    from connectors.camera_buffer import FrameRing
    from crisisbot.models import Attachment

    t0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
    ring = FrameRing(keep=30, every=2)
    for k in range(40):  # 80 s of frames, one every 2 s
        ring.add(Snapshot("hall", t0 + timedelta(seconds=2 * k), Attachment("f.jpg", "image/jpeg", b"")))
    alarm = t0 + timedelta(seconds=70)
    frames = ring.around(alarm, after=timedelta(seconds=2))
    assert [int((f.taken_at - t0).total_seconds()) for f in frames] == list(range(48, 74, 2))
    assert len(ring._frames) <= 17  # bounded: 30 s / 2 s plus slack  # noqa: SLF001


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def tls_server(ca: trustme.CA) -> tuple[CameraServer, trustme.LeafCert]:
    leaf = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    return await CameraServer(ssl_context=ctx).start(), leaf


async def test_tls_with_ca_file_and_with_pinned_fingerprint(ca: trustme.CA, tmp_path: Path) -> None:
    server, leaf = await tls_server(ca)
    ca.cert_pem.write_to_path(str(tmp_path / "cams-ca.pem"))
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    pin = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    try:
        with_ca = camera(f"{server.base}/digest.jpg", tmp_path, username=USER, password=PASSWORD,
                         tls={"ca_file": "cams-ca.pem"})
        pinned = camera(f"{server.base}/digest.jpg", tmp_path, username=USER, password=PASSWORD,
                        tls={"fingerprint": pin})
        untrusted = camera(f"{server.base}/open.jpg", tmp_path)
        assert (await with_ca.snapshot()).image.data == server.jpeg
        assert (await pinned.snapshot()).image.data == server.jpeg
        with pytest.raises(PermanentError, match="not trusted"):
            await untrusted.snapshot()
        for c in (with_ca, pinned, untrusted):
            await c.stop()
    finally:
        await server.stop()


async def test_wrong_pin_is_refused_before_any_credential_is_sent(ca: trustme.CA, tmp_path: Path) -> None:
    server, _ = await tls_server(ca)
    try:
        cam = camera(f"{server.base}/basic.jpg", tmp_path, username=USER, password=PASSWORD, auth="basic",
                     tls={"fingerprint": "ab" * 32})
        with pytest.raises(CertificatePinMismatch, match="not the pinned"):
            await cam.snapshot()
        await cam.stop()
        assert server.hits == {} and server.auth_headers == []
    finally:
        await server.stop()


def test_config_refuses_typos_and_bad_fingerprints() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        HttpCamera.Config.model_validate({"type": "http-camera", "url": "http://x/a.jpg", "usrname": "a"})
    with pytest.raises(ValidationError, match="SHA-256"):
        HttpCamera.Config.model_validate({"type": "http-camera", "url": "http://x/a.jpg", "tls": {"fingerprint": "zz"}})
    cfg = HttpCamera.Config.model_validate({"type": "http-camera", "url": "http://x/a.jpg", "password": "pw"})
    assert "pw" not in repr(cfg)


async def test_follow_up_rounds_store_frames_and_stop_when_the_incident_closes(cams: CameraServer,
                                                                              tmp_path: Path) -> None:
    from types import SimpleNamespace

    from crisisbot.store.images import ImageStore
    from crisisbot.models import Alarm, Incident, IncidentStatus, utcnow
    from crisisbot.clock import SystemClock
    from crisisbot.steps.base import StepContext, StepServices
    from crisisbot.steps.follow_up import FollowUpSnapshotsStep, run
    from crisisbot.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "crisis.db")
    await store.open()
    images = ImageStore.open(tmp_path, retention=3600)
    refused = await dead_port()
    cameras = {("hq", "hall"): camera(f"{cams.base}/open.jpg", tmp_path, name="hall"),
               ("hq", "gate"): camera(f"http://127.0.0.1:{refused}/x.jpg", tmp_path, name="gate")}
    alarm = Alarm(source="test", site="hq", zone="lobby")
    incident = Incident("inc42", "hq", "panic", IncidentStatus.open, utcnow(), utcnow())
    await store.create_incident(incident, alarm)
    ctx = StepContext(
        StepServices(bundle=None, clock=SystemClock(), store=store, cameras=cameras, images=images),  # type: ignore[arg-type]
        incident=incident, alarm=alarm, playbook=None,  # type: ignore[arg-type]
        site=SimpleNamespace(cameras={"hall": {}, "gate": {}}, zones={"lobby": SimpleNamespace(cameras=["hall", "gate"])}),  # type: ignore[arg-type]
    )
    spec = FollowUpSnapshotsStep.model_validate(
        {"action": "follow_up_snapshots", "id": "followup", "every": "100ms", "duration": "300ms",
         "capture_timeout": "1s"})
    assert spec.timeout is not None and spec.timeout > spec.duration  # not cut by the default step deadline
    out = await run(ctx, spec)
    n = out.rounds
    assert 1 <= n <= 3 and out.images == n and "gate" in out.failures  # a slow round skips ticks
    assert [i.camera for i in await images.images("inc42")] == ["hall"] * n
    audited = [e.data for e in await store.audit_entries("inc42") if e.kind == "followup.round"]
    assert [e["round"] for e in audited] == list(range(1, n + 1)) and all("gate" in e["failures"] for e in audited)

    await store.set_incident_status("inc42", IncidentStatus.resolved, "all clear")
    again = await run(ctx, spec.model_copy(update={"id": "followup2"}))
    assert again.rounds == 0
    for cam in cameras.values():
        await cam.stop()
    await store.close()


async def test_daemon_emails_live_and_prealarm_frames_from_yaml_declared_cameras(
        cams: CameraServer, workspace: Any, smtp_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end through the lead's daemon: cameras declared in config.yaml, secrets from the environment."""
    from daemon_helpers import enable_webhook, post_alarm, running_daemon

    monkeypatch.setenv("CAM_PW", PASSWORD)

    def change(data: dict[str, Any]) -> None:
        data["sites"]["paris-hq"]["cameras"] = {
            "hall": {"type": "http-camera", "url": f"{cams.base}/digest.jpg", "username": USER,
                     "password": "${CAM_PW}", "auth": "digest", "timeout": "2s",
                     "prealarm": {"every": "100ms", "keep": "5s"}},
            "parking": {"type": "http-camera", "url": f"{cams.base}/slow.jpg", "timeout": "300ms"},
        }
    workspace.edit_config(change)
    workspace.use_smtp(smtp_server.port)
    enable_webhook(workspace)
    async with running_daemon(workspace, monkeypatch) as daemon:
        for _ in range(100):
            if cams.hits.get("/digest.jpg", 0) >= 10:  # a few buffered frames (each is a 401 + a 200)
                break
            await asyncio.sleep(0.05)
        response = await post_alarm(daemon, {"site": "paris-hq", "zone": "accueil", "kind": "panic",
                                             "severity": "critical", "label": "Bouton panique accueil"})
        incident = await daemon.engine.wait_processed(response.json()["alarm_id"])
        await daemon.engine.wait_incident(incident.id)
    alice = smtp_server.handler.to("alice.martin@exemple.fr")[0].message
    jpegs = [p.get_content() for p in alice.iter_attachments() if p.get_content_type() == "image/jpeg"]
    assert len(jpegs) >= 2  # the live frame and pre-alarm frames from the ring buffer
    assert all(j == cams.jpeg for j in jpegs)


async def test_follow_up_rounds_are_emailed_once_each_through_the_email_step(
        cams: CameraServer, workspace: Any, smtp_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The step's email path on the daemon's real runtime (templates, SMTP, delivery journal)."""
    from daemon_helpers import enable_webhook, post_alarm, running_daemon

    from crisisbot.steps.base import StepContext
    from crisisbot.steps.follow_up import FollowUpSnapshotsStep, run

    def change(data: dict[str, Any]) -> None:
        data["sites"]["paris-hq"]["cameras"] = {
            "hall": {"type": "http-camera", "url": f"{cams.base}/open.jpg", "timeout": "2s"},
            "parking": {"type": "http-camera", "url": f"{cams.base}/open.jpg", "timeout": "2s"},
        }
    workspace.edit_config(change)
    workspace.use_smtp(smtp_server.port)
    enable_webhook(workspace)
    async with running_daemon(workspace, monkeypatch) as daemon:
        response = await post_alarm(daemon, {"site": "paris-hq", "zone": "accueil", "kind": "panic",
                                             "severity": "critical", "label": "Bouton panique accueil"})
        incident = await daemon.engine.wait_processed(response.json()["alarm_id"])
        await daemon.engine.wait_incident(incident.id)
        runtime = daemon.runtime
        alarm = (await runtime.store.incident_alarms(incident.id))[0]
        ctx = StepContext(runtime.step_services(), incident=incident, alarm=alarm,
                          playbook=runtime.bundle.playbook(incident.playbook),
                          site=runtime.bundle.config.sites[alarm.site])
        before = len(smtp_server.handler.to("alice.martin@exemple.fr"))
        spec = FollowUpSnapshotsStep.model_validate({
            "action": "follow_up_snapshots", "id": "suivi", "cameras": "site", "every": "400ms",
            "duration": "800ms", "to": ["comite-crise"], "template": "committee_alert"})
        out = await run(ctx, spec)
        again = await run(ctx, spec)  # as after a restart: same round ids, nothing sent twice
        deliveries = await runtime.store.get_deliveries(incident.id)
    assert out.rounds >= 1 and out.images == 2 * out.rounds and again.rounds >= 1
    rounds = {k.split(":")[1] for k in deliveries if k.split(":")[1].startswith("suivi-")}
    assert rounds == {f"suivi-{n}" for n in range(1, max(out.rounds, again.rounds) + 1)}
    followups = smtp_server.handler.to("alice.martin@exemple.fr")[before:]
    assert len(followups) == len(rounds)  # one email per round, none sent twice by the second run
    for received in followups:
        jpegs = [p for p in received.message.iter_attachments() if p.get_content_type() == "image/jpeg"]
        assert len(jpegs) == 2  # both cameras of the site


async def test_rounds_keep_a_fixed_cadence_and_skip_ticks_after_a_slow_round() -> None:
    from crisisbot.steps.follow_up import rounds

    loop = asyncio.get_running_loop()
    started: list[float] = []

    async def one(number: int) -> None:
        started.append(loop.time())
        if number == 1:
            await asyncio.sleep(0.25)  # overruns two ticks

    before = loop.time()
    ran = await rounds(0.1, 0.5, one)
    assert ran == len(started) < 5  # ticks missed while round 1 ran are skipped, not bunched
    # No round starts before its own tick, and round 1 overran ticks 2 and 3, so round 2
    # waits for tick 4 at the earliest. Lower bounds only: a loaded machine may start any
    # round late, which the rule allows.
    earliest = [1, 4, 5, 6, 7][: len(started)]
    assert all(at - before >= tick * 0.1 - 1e-3 for at, tick in zip(started, earliest, strict=True))
