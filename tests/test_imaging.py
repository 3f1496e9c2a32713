"""Face blurring on a real photo (scikit-image's astronaut) and the email size budget."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from connectors.base import Snapshot
from crisisbot.imaging import FaceDetector, blur_faces, prepare_for_email, prepare_for_email_async, wire_size
from crisisbot.models import Attachment

FACE = (177, 66, 95, 95)  # x, y, w, h of Eileen Collins' face in astronaut(), per OpenCV's cascade
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


def jpeg(array: np.ndarray, quality: int = 95) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "JPEG", quality=quality)
    return out.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def snap(camera: str, data: bytes, seconds: float = 0) -> Snapshot:
    return Snapshot(camera, T0 + timedelta(seconds=seconds), Attachment(f"{camera}.jpg", "image/jpeg", data))


@pytest.fixture(scope="module")
def astronaut() -> bytes:
    return jpeg(skdata.astronaut())


def face_and_background_change(before: bytes, after: bytes) -> tuple[float, float]:
    """How much of the face's detail is left (1 = all of it), and how much the background moved."""
    a, b = pixels(before), pixels(after)
    x, y, w, h = FACE

    def detail(img: np.ndarray) -> float:
        gray = cv2.cvtColor(img[y:y + h, x:x + w].astype(np.uint8), cv2.COLOR_RGB2GRAY)
        return float(cv2.Laplacian(gray, cv2.CV_64F).var())

    background = np.abs(a[300:500, 20:150] - b[300:500, 20:150]).mean()  # the suit and flag, far from the face
    return detail(b) / detail(a), float(background)


def no_face_left(data: bytes) -> bool:
    x, y, w, h = FACE
    boxes = FaceDetector(pad=0).faces(pixels(data).astype(np.uint8))
    return not any(x0 < x + w and x < x1 and y0 < y + h and y < y1 for x0, y0, x1, y1 in boxes)


def test_detector_finds_the_real_face(astronaut: bytes) -> None:
    boxes = FaceDetector().faces(pixels(astronaut).astype(np.uint8))
    x, y, w, h = FACE
    assert any(x0 <= x + w / 2 <= x1 and y0 <= y + h / 2 <= y1 for x0, y0, x1, y1 in boxes)


def test_external_recipient_gets_the_face_blurred_internal_gets_the_original(astronaut: bytes) -> None:
    snaps = [snap("hall", astronaut)]
    internal = prepare_for_email(snaps, external=False, budget_bytes=10_000_000)
    external = prepare_for_email(snaps, external=True, budget_bytes=10_000_000)
    assert internal[0].data == astronaut  # fits already: the camera's own bytes, untouched
    face, background = face_and_background_change(astronaut, external[0].data)
    assert face < 0.05, face  # the face's detail is gone
    assert no_face_left(external[0].data) and not no_face_left(internal[0].data)
    assert background < 6, background  # the rest of the picture is still useful
    assert pixels(external[0].data).shape == pixels(astronaut).shape
    assert snaps[0].image.data == astronaut  # the original is not modified in place


def test_blur_faces_full_resolution_and_full_mode(astronaut: bytes) -> None:
    face, background = face_and_background_change(astronaut, blur_faces(astronaut))
    assert face < 0.05 and background < 6
    face, background = face_and_background_change(astronaut, blur_faces(astronaut, mode="full"))
    assert face < 0.05 and background > 10


SMALLEST_FACE = 60  # px on a 1080p frame: the size crisisbot/imaging.py documents as found (FaceDetector)


@pytest.mark.parametrize("x, y", [(0, 0), (873, 262), (1455, 655)])
def test_a_60px_face_on_a_1080p_frame_is_blurred_for_external_recipients(x: int, y: int) -> None:
    """Detection runs on a downscaled copy: the smallest documented face must survive it."""
    from tests.camera_server import make_jpeg

    scale = SMALLEST_FACE / FACE[3]
    photo = cv2.resize(skdata.astronaut(), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.asarray(Image.open(io.BytesIO(make_jpeg(1920, 1080, "hall"))).convert("RGB")).copy()
    frame[y:y + photo.shape[0], x:x + photo.shape[1]] = photo
    original = jpeg(frame, quality=90)
    external = prepare_for_email([snap("hall", original)], external=True, budget_bytes=10_000_000)[0].data
    fx, fy = x + round(FACE[0] * scale), y + round(FACE[1] * scale)

    def detail(data: bytes) -> float:
        face = pixels(data)[fy:fy + SMALLEST_FACE, fx:fx + SMALLEST_FACE].astype(np.uint8)
        return float(cv2.Laplacian(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())

    assert detail(external) / detail(original) < 0.05  # the face's detail is gone
    assert pixels(external).shape == pixels(original).shape  # blurred at full size


@pytest.mark.parametrize("size", [200, 400])
def test_a_large_face_close_to_the_camera_is_blurred(size: int) -> None:
    """Large faces are searched on halved copies with a coarser grid (FaceDetector._search):
    a face filling much of the frame must still be found, and its detail gone."""
    from tests.camera_server import make_jpeg

    x, y, w, h = FACE
    crop = skdata.astronaut()[y - 45:y + h + 40, x - 45:x + w + 50]  # the head, with a margin
    scale = size / h
    head = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    frame = np.asarray(Image.open(io.BytesIO(make_jpeg(1920, 1080, "hall"))).convert("RGB")).copy()
    top, left = (1080 - head.shape[0]) // 2, 300
    frame[top:top + head.shape[0], left:left + head.shape[1]] = head
    original = jpeg(frame, quality=90)
    external = prepare_for_email([snap("hall", original)], external=True, budget_bytes=10_000_000)[0].data
    fx, fy = left + round(45 * scale), top + round(45 * scale)

    def detail(data: bytes) -> float:  # measured at the photo's own resolution (upscaling smoothed it)
        face = pixels(data)[fy:fy + size, fx:fx + size].astype(np.uint8)
        face = cv2.resize(face, (h, h), interpolation=cv2.INTER_AREA)
        return float(cv2.Laplacian(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())

    assert detail(external) / detail(original) < 0.05  # the face's detail is gone
    found = FaceDetector(pad=0).faces(pixels(original).astype(np.uint8))
    left_over = FaceDetector(pad=0).faces(pixels(external).astype(np.uint8))
    assert any(x0 < fx + size and fx < x1 and y0 < fy + size and fy < y1 for x0, y0, x1, y1 in found)
    assert not any(x0 < fx + size and fx < x1 and y0 < fy + size and fy < y1 for x0, y0, x1, y1 in left_over)


@pytest.mark.parametrize("size", [70, 95, 120])
def test_small_faces_are_found_wherever_they_fall_on_the_coarse_grid(size: int) -> None:
    """The smallest faces are scanned coarsely and each hit confirmed by a finer scan
    (FaceDetector._search): a real face must pass both, whatever its place against the grid."""
    from tests.camera_server import make_jpeg

    x, y, w, h = FACE
    scale = size / h
    photo = cv2.resize(skdata.astronaut(), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    background = np.asarray(Image.open(io.BytesIO(make_jpeg(1920, 1080, "hall"))).convert("L"))
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    detector = FaceDetector(pad=0)
    rng = np.random.default_rng(size)
    for _ in range(6):
        left, top = int(rng.integers(0, 1920 - grey.shape[1])), int(rng.integers(0, 1080 - grey.shape[0]))
        frame = background.copy()
        frame[top:top + grey.shape[0], left:left + grey.shape[1]] = grey
        cx, cy = left + (x + w / 2) * scale, top + (y + h / 2) * scale
        boxes = detector.faces_in_gray(frame)
        assert any(x0 <= cx <= x1 and y0 <= cy <= y1 for x0, y0, x1, y1 in boxes), (left, top, boxes)


def test_hit_clusters_are_the_groups_opencv_forms() -> None:
    """The first octave keeps clusters of coarse hits as OpenCV's grouping would (and
    confirms lone hits): the split must match cv2.groupRectangles, which only returns means."""
    from crisisbot.imaging import _clusters

    hits = [[294, 91, 28, 28], [297, 91, 28, 28], [299, 93, 28, 28], [100, 40, 20, 20], [400, 200, 20, 20],
            [403, 200, 20, 20], [100, 60, 28, 28]]
    groups = sorted(sorted(g) for g in _clusters(hits))
    assert groups == [[[100, 40, 20, 20]], [[100, 60, 28, 28]], [[294, 91, 28, 28], [297, 91, 28, 28], [299, 93, 28, 28]],
                      [[400, 200, 20, 20], [403, 200, 20, 20]]]
    means, weights = cv2.groupRectangles(hits, 1, 0.2)
    assert sorted(int(w) for w in weights) == sorted(len(g) for g in groups if len(g) > 1)


def noisy_frame(seed: int, width: int = 1920, height: int = 1080) -> bytes:
    """A large frame that compresses badly (noise over a gradient), like a grainy night image."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width, dtype=np.float32)[None, :, None].repeat(height, 0).repeat(3, 2)
    return jpeg(np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8), quality=92)


def test_eight_cameras_with_prealarm_frames_fit_the_budget() -> None:
    frames = [noisy_frame(i) for i in range(3)]
    snaps = [snap(f"cam{c}", frames[c % 3], 0) for c in range(8)]
    snaps += [snap(f"cam{c}", frames[(c + 1) % 3], -2 * k) for c in range(2) for k in range(1, 6)]
    budget = 3_000_000
    assert sum(len(s.image.data) for s in snaps) > 3 * budget
    out = prepare_for_email(snaps, external=False, budget_bytes=budget)
    assert sum(wire_size(len(a.data)) for a in out) <= budget
    names = [a.filename for a in out]
    assert len(set(names)) == len(names)
    assert {n.split("-")[0] for n in names[:8]} == {f"cam{c}" for c in range(8)}  # every camera's latest first
    for attachment in out:
        image = Image.open(io.BytesIO(attachment.data))
        assert image.format == "JPEG" and max(image.size) <= 1920


def test_tight_budget_drops_old_frames_before_the_latest_ones() -> None:
    frame = noisy_frame(7, 1280, 720)
    snaps = [snap("gate", frame, 0)] + [snap("gate", frame, -2 * k) for k in range(1, 15)]
    out = prepare_for_email(snaps, external=False, budget_bytes=250_000)
    assert sum(wire_size(len(a.data)) for a in out) <= 250_000
    names = [a.filename for a in out]
    assert names[0] == "gate-20260301-080000.jpg"  # the latest frame first
    assert 3 <= len(out) < len(snaps)
    assert names[1] == "gate-20260301-075932.jpg"  # the kept older frames still span the whole window
    assert min(max(Image.open(io.BytesIO(a.data)).size) for a in out) >= 320
    assert prepare_for_email(snaps, external=False, budget_bytes=1_000) == []


async def test_async_wrapper_runs_off_the_loop(astronaut: bytes) -> None:
    out = await prepare_for_email_async([snap("hall", astronaut)], external=True, budget_bytes=5_000_000)
    assert len(out) == 1 and out[0].content_type == "image/jpeg"


async def test_email_images_pays_the_blur_once_per_variant(astronaut: bytes) -> None:
    from crisisbot.imaging import EmailImages

    images = EmailImages([snap("hall", astronaut)], 5_000_000)
    await images.prepare()
    first, second = images.for_recipient(True), images.for_recipient(True)
    assert first[0].data is second[0].data and images.for_recipient(False)[0].data == astronaut


@pytest.mark.parametrize("mode", ["faces", "full"])
def test_the_pools_opencv_path_gives_the_pillow_paths_pixels_and_bytes(astronaut: bytes, mode: str) -> None:
    """The email pool decodes and encodes through OpenCV (it releases the GIL, Pillow's
    encoder does not); a new version of either library that stopped matching fails here."""
    from crisisbot.imaging import QUALITIES, _blur_one, _decode_bgr, blur_image, decode, encode

    for data in (astronaut, rotated_exif_frame()[1], noisy_frame(3)):
        assert _decode_bgr(data, 1920) is not None  # the OpenCV path is the one under test
        image, best = _blur_one(data, 1920, mode)  # type: ignore[arg-type]
        expected = blur_image(decode(data, 1920), FaceDetector(), mode, in_place=True)[0]  # type: ignore[arg-type]
        assert np.array_equal(np.asarray(image), np.asarray(expected))
        assert best == encode(expected, QUALITIES[0])


def rotated_exif_frame() -> tuple[np.ndarray, bytes]:
    """A 640x360 frame and its JPEG tagged "rotate 90" in EXIF (which Pillow's decode ignores)."""
    array = np.random.default_rng(5).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    Image.fromarray(array).save(out, "JPEG", quality=90, exif=exif)
    return array, out.getvalue()


def test_frames_the_opencv_path_would_change_take_the_pillow_path(astronaut: bytes) -> None:
    from crisisbot.imaging import _blur_one, _decode_bgr, decode

    rotated = rotated_exif_frame()[1]
    assert _decode_bgr(rotated, 1920).shape[:2] == decode(rotated).size[::-1]  # type: ignore[union-attr]
    png = io.BytesIO()
    Image.open(io.BytesIO(astronaut)).save(png, "PNG")
    grey = jpeg(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2GRAY))
    for data, side in ((png.getvalue(), 1920), (grey, 1920), (astronaut, 256), (astronaut[:-5000], 1920)):
        assert _decode_bgr(data, side) is None
    image, _ = _blur_one(astronaut, 256, "faces")  # scaled down while decoding, as before
    assert max(image.size) == 256
    with pytest.raises(OSError):
        _blur_one(astronaut[:-5000], 1920, "faces")  # truncated: an error, as Pillow always gave


FRESH_THREADS = """
import sys, threading, time
from crisisbot import imaging
assert "cv2" not in sys.modules
errors = []
def first_blur():
    try:
        imaging.thread_detector()
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=first_blur) for _ in range(40)]
for t in threads:
    t.start()
    time.sleep(0.005)
for t in threads: t.join()
assert not errors, errors
"""


def test_threads_making_their_first_detector_at_once_all_get_one() -> None:
    """The blur pool's workers both import OpenCV on a fresh daemon's first external email;
    unguarded, one could get a half-made module (AttributeError: module 'cv2' has no
    attribute 'data': 2 fresh processes in 5), so 40 threads start 5 ms apart, a few times."""
    import subprocess
    import sys
    from pathlib import Path

    for _ in range(4):
        run = subprocess.run([sys.executable, "-c", FRESH_THREADS], cwd=Path(__file__).parent.parent,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
