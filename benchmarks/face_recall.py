"""Recall of the face detector on faces pasted into 1080p frames (not part of `./dev bench`).

The astronaut, the cameraman (a profile) and 10 LFW faces (scikit-image's data, offline),
each cropped with a margin, scaled so the face is 60-300 px tall and pasted at 5 random
places of the benchmark's 1080p background, two draws (seeds 1 and 2): 720 frames.
A face counts as found when a box holds its centre; other boxes are counted as false.
Prints the total, per kind and size, and the median detection CPU per frame. Then the
same for 8 frames holding no face but texture everywhere (tiles of scikit-image's other
photos: coffee, bricks, gravel, text, a motorcycle…), as a busy camera view is: every box
there is a patch blurred for nothing, and such frames cost the cascades most.

    python -m benchmarks.face_recall [--profile-side 400] [--seeds 1 2]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from typing import Callable, Iterator

import cv2
import numpy as np
from PIL import Image
from skimage import data as sk

from crisisbot.imaging import FaceDetector
from tests.camera_server import make_jpeg

SIZES = (60, 80, 110, 160, 220, 300)
Frame = tuple[int, str, np.ndarray, float, float]


def sources() -> Iterator[tuple[str, np.ndarray, tuple[int, int, int, int]]]:
    """(kind, RGB photo, face box x, y, w, h in it)."""
    yield "astronaut", sk.astronaut(), (177, 66, 95, 95)
    yield "cameraman", np.stack([sk.camera()] * 3, -1), (220, 60, 90, 110)
    lfw = sk.lfw_subset()
    for i in range(0, 100, 10):
        yield "lfw", np.stack([(np.clip(lfw[i] * 255, 0, 255)).astype(np.uint8)] * 3, -1), (0, 0, 25, 25)


def frames(seed: int) -> list[Frame]:
    rng = np.random.default_rng(seed)
    background = np.asarray(Image.open(io.BytesIO(make_jpeg(1920, 1080, "hall"))).convert("RGB"))
    out = []
    for size in SIZES:
        for kind, photo, (fx, fy, fw, fh) in sources():
            margin = int(0.8 * fh)
            x0, y0 = max(0, fx - margin), max(0, fy - margin)
            patch = photo[y0:fy + fh + margin, x0:fx + fw + margin]
            scale = size / fh
            patch = cv2.resize(patch, None, fx=scale, fy=scale,
                               interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
            for _ in range(5):
                frame = background.copy()
                h, w = patch.shape[:2]
                x, y = int(rng.integers(0, 1920 - w)), int(rng.integers(0, 1080 - h))
                frame[y:y + h, x:x + w] = patch
                buf = io.BytesIO()
                Image.fromarray(frame).save(buf, "JPEG", quality=90)
                gray = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
                out.append((size, kind, gray, x + (fx - x0 + fw / 2) * scale, y + (fy - y0 + fh / 2) * scale))
    return out


NO_FACE = ("coffee", "rocket", "brick", "grass", "gravel", "coins", "hubble_deep_field", "immunohistochemistry",
           "page", "text", "moon", "clock", "stereo_motorcycle", "colorwheel", "cell", "retina")


def textured_frames(count: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Grey 1080p frames of 4 x 2 tiles drawn from `NO_FACE`, through a JPEG as a camera's are."""
    rng = np.random.default_rng(seed)
    tiles = []
    for name in NO_FACE:
        photo = getattr(sk, name)()
        photo = photo[0] if isinstance(photo, tuple) else photo
        photo = photo if photo.ndim == 2 else cv2.cvtColor(photo[..., :3], cv2.COLOR_RGB2GRAY)
        tiles.append(cv2.resize(photo, (480, 540), interpolation=cv2.INTER_AREA))
    out = []
    for _ in range(count):
        order = rng.permutation(len(tiles))[:8]
        frame = np.vstack([np.hstack([tiles[i] for i in order[row * 4:row * 4 + 4]]) for row in range(2)])
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, "JPEG", quality=90)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L")))
    return out


def evaluate_textured(detect: Callable[[np.ndarray], list[tuple[int, int, int, int]]]) -> None:
    cpu, boxes = [], []
    for gray in textured_frames():
        started = time.process_time()
        boxes.append(len(detect(gray)))
        cpu.append(time.process_time() - started)
    print(f"  no face, textured: {sum(boxes)} false boxes on {len(boxes)} frames {boxes}, "
          f"detect CPU median {statistics.median(cpu) * 1e3:.1f} ms")


def evaluate(label: str, detect: Callable[[np.ndarray], list[tuple[int, int, int, int]]],
             frames_: list[Frame]) -> None:
    hits: dict[tuple[str, int], list[bool]] = {}
    cpu, false = [], 0
    for size, kind, gray, cx, cy in frames_:
        started = time.process_time()
        boxes = detect(gray)
        cpu.append(time.process_time() - started)
        inside = [x0 <= cx <= x1 and y0 <= cy <= y1 for x0, y0, x1, y1 in boxes]
        false += inside.count(False)
        hits.setdefault((kind, size), []).append(any(inside))
    found = sum(sum(v) for v in hits.values())
    print(f"{label}: found {found}/{len(frames_)}, {false} false boxes, "
          f"detect CPU median {statistics.median(cpu) * 1e3:.1f} ms")
    for kind in ("astronaut", "cameraman", "lfw"):
        print(f"  {kind:10s} " + " ".join(f"{s}px {sum(hits[kind, s])}/{len(hits[kind, s])}" for s in SIZES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frontal-side", type=int, default=FaceDetector.frontal_side)
    parser.add_argument("--profile-side", type=int, default=FaceDetector.profile_side)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    cv2.setNumThreads(1)
    detector = FaceDetector(frontal_side=args.frontal_side, profile_side=args.profile_side)
    frames_ = [f for seed in args.seeds for f in frames(seed)]
    evaluate(f"frontal {args.frontal_side} px, profile {args.profile_side} px", detector.faces_in_gray, frames_)
    evaluate_textured(detector.faces_in_gray)


if __name__ == "__main__":
    main()
