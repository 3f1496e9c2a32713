"""Image work for emails and the live view: fit a size budget, blur faces for external eyes.

Everything here is a pure function of bytes in, bytes out, CPU-bound: callers on the
event loop use the `*_async` wrappers, which run it in a thread. Faces are found with
OpenCV's Haar cascades, which ship inside opencv-python-headless (nothing is downloaded),
on a downscaled grey copy (the cascades' cost grows with the pixel count), and blurred
at full size; only the face boxes are touched, the rest of the frame is never copied.
The frames of one email are decoded, searched, blurred and encoded in parallel on a
small pool, one worker per core (OpenCV releases the GIL, Pillow's JPEG encoder does
not: see `_blur_one`); each thread keeps its own classifiers (loading them costs about
one plain decode + encode, and an OpenCV CascadeClassifier must not be shared by
threads). OpenCV and numpy (~40 MiB, ~0.5 s to import) are imported on the first blur,
not when the daemon starts. Re-encoding (Pillow or OpenCV) also drops EXIF metadata.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

from PIL import Image

from connectors.base import Snapshot
from crisisbot.models import Attachment

if TYPE_CHECKING:
    import cv2
    import numpy as np

BlurMode = Literal["faces", "full"]

QUALITIES = (85, 72, 60, 48, 38)
MIN_SIDE = 320  # below this an image tells the committee little: drop it instead
MIN_FRAME_BUDGET = 30_000  # a pre-alarm frame smaller than this is not worth its place
PART_OVERHEAD = 400  # MIME headers of one attachment part
CASCADES = ("haarcascade_frontalface_alt2.xml", "haarcascade_profileface.xml")


def wire_size(raw: int) -> int:
    """Bytes an attachment takes in the message: base64 plus a CRLF every 76 characters."""
    encoded = 4 * math.ceil(raw / 3)
    return encoded + 2 * math.ceil(encoded / 76) + PART_OVERHEAD


def decode(data: bytes, max_side: int | None = None) -> Image.Image:
    image: Image.Image = Image.open(io.BytesIO(data))
    if max_side and image.format == "JPEG":
        image.draft("RGB", (max_side, max_side))  # let libjpeg scale down while decoding: far cheaper
    image = image.convert("RGB") if image.mode != "RGB" else _loaded(image)
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _loaded(image: Image.Image) -> Image.Image:
    """`image` decoded where it is (convert("RGB") of an RGB image would copy its pixels)."""
    image.load()
    return image


def encode(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


@dataclass
class FaceDetector:
    """Frontal and profile Haar cascades, searched on downscaled grey copies.

    The sides set the smallest face searched for: the cascades' window is 20 px, so on a
    1920-px-wide frame 20 x 1920 / `frontal_side` = 60 px for frontal faces and
    20 x 1920 / `profile_side` = 80 px for profiles (a frame narrower than a side is
    searched at full size). Measured on 1080p frames, faces pasted at 8 random places
    each: scikit-image's astronaut was found 8/8 at every size from 60 to 150 px (3/8 at
    60 px with the former settings), LFW faces 76 % at 60 px and 84-92 % from 80 px, the
    cameraman's profile 5/6 from 100 px. tests/test_imaging.py checks a 60-px face. A
    1.25 step between scales with 1 neighbour finds more faces than the former 1.2 step
    with 3 neighbours (detection varies with where a face falls on the scale grid) for
    ~25 % less work; its extra false positives only blur a patch that was not a face.
    The octave search (`_search`), measured on 720 frames (the astronaut, the cameraman
    and 10 LFW faces at 60-400 px, 5 random places each, two draws): 636 faces found
    against 626 with OpenCV's own pyramid, one size or another a face better or worse;
    24 boxes that were no face against 16. `profile_side` stays at 480: on the 720 frames of
    benchmarks/face_recall.py (60-300 px), 400 px found the cameraman's profile at 80-160 px
    12/30 times and 440 px 14/30, against 21/30 at 480 px (frontal faces found as often).
    The coarse first octave with its confirming scans (`_search`, `_confirm`), on those
    720 frames: 651 faces found against 626 (six draws, 2160 frames: 1942 against
    1876), as many or more at every size and kind
    (60-px LFW faces 86 % against 77 %, the cameraman's profile at 80-110 px 18/20
    against 11/20), 16 boxes that were no face against 11; on 8 textured frames with no
    face, 29 such boxes against 18. Detection CPU -25 % on the benchmark's frame, -20 %
    on the textured frames (callgrind: 285 M instructions against 368 M).
    """

    frontal_side: int = 640
    profile_side: int = 480
    pad: float = 0.3
    scale_factor: float = 1.25
    min_neighbors: int = 1
    first_octave_sizes: int = 2
    confirm_range: float = 1.3
    confirm_margin: float = 0.5
    confirm_hits: int = 3

    def __post_init__(self) -> None:
        import cv2

        # One thread per search: the frames of an email are spread over the cores by the
        # blur pool, and OpenCV's own workers, on a busy machine, wait on one another
        # (measured with 5 jobs on 2 cores: one frame 107-169 ms instead of 156-270 ms,
        # 8 frames 0.7-1.7 s instead of 1.3-2.0 s; CPU the same on an idle machine).
        cv2.setNumThreads(1)
        folder = cv2.data.haarcascades  # type: ignore[attr-defined]  # cv2's stubs omit cv2.data
        self._cascades = [cv2.CascadeClassifier(folder + name) for name in CASCADES]
        if any(c.empty() for c in self._cascades):
            raise RuntimeError("OpenCV's Haar cascades are missing; install opencv-python-headless 4.x")

    def faces(self, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Boxes (x0, y0, x1, y1), padded, in the coordinates of the RGB array `rgb`."""
        import cv2

        return self.faces_in_gray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))

    def faces_in_gray(self, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Boxes (x0, y0, x1, y1), padded, in the coordinates of the grey array `gray`.

        The profile cascade only sees faces looking one way: it also runs on the mirror."""
        import cv2

        height, width = gray.shape[:2]
        boxes = []
        for index, cascade in enumerate(self._cascades):
            side = self.profile_side if index else self.frontal_side
            scale = min(1.0, side / max(height, width))
            small = gray if scale >= 1.0 else cv2.resize(
                gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
            small = cv2.equalizeHist(small)
            views = [(small, False), (cv2.flip(small, 1), True)] if index else [(small, False)]
            for view, mirrored in views:
                for x, y, w, h in self._search(cascade, view):
                    if mirrored:
                        x = view.shape[1] - x - w
                    dx, dy = w * self.pad, h * self.pad
                    boxes.append((max(0, int((x - dx) / scale)), max(0, int((y - dy) / scale)),
                                  min(width, int((x + w + dx) / scale)), min(height, int((y + h + dy) / scale))))
        return boxes

    def _search(self, cascade: cv2.CascadeClassifier, view: np.ndarray) -> Sequence[Sequence[int]]:
        """Faces (x, y, w, h) of every size in `view`, searched one octave at a time.

        OpenCV slides its window 2 px at a time while the window is less than twice the
        cascade's, then 1 px: four times the positions for the larger faces, which cost
        more than all the small ones. Here each octave (windows up to twice the cascade's)
        is searched on a copy halved once more, 2 px at a time: a tenth of the window at
        every size. So coarse a grid gives a larger face fewer hits, too few to pass
        OpenCV's grouping (a hit needs `min_neighbors` others): a hit above the first
        octave stands alone. The first octave, the smallest faces, holds three quarters of
        the windows: it is scanned at `first_octave_sizes` sizes (2: 20 and 28 px) instead
        of four. Hits that cluster there stand as before; a lone hit, which a finer grid
        might have hit again, stands only once `_confirm` finds the face around it (most
        real faces cluster even on the coarse grid, so few regions are scanned twice). The
        candidates of every octave are grouped together, as OpenCV groups its own."""
        import cv2

        width, height = cascade.getOriginalWindowSize()
        octaves = [view]
        while octaves[-1].shape[0] // 2 > height and octaves[-1].shape[1] // 2 > width:
            last = octaves[-1]
            octaves.append(cv2.resize(last, (last.shape[1] // 2, last.shape[0] // 2), interpolation=cv2.INTER_AREA))
        found: list[list[int]] = []
        searched: list[tuple[int, int, int, int, float, float]] = []
        first = self._octave(cascade, view, 2 ** (1 / self.first_octave_sizes), largest=(2 * width - 1, 2 * height - 1))
        lone: list[list[int]] = []
        for cluster in _clusters(first):
            if len(cluster) > self.min_neighbors:
                found += cluster  # hit often enough even on the coarse grid: stands as before
            else:
                lone += cluster
        for x, y, w, h in lone:
            if any(x0 <= x and y0 <= y and x + w <= x1 and y + h <= y1 and lo <= w <= hi
                   for x0, y0, x1, y1, lo, hi in searched):
                continue  # this window was part of a fine scan already
            region, faces = self._confirm(cascade, view, (x, y, w, h))
            searched.append((*region, w / self.confirm_range, w * self.confirm_range))
            found += faces
        for level, octave in enumerate(octaves[1:], 1):
            found += [[v << level for v in box]
                      for box in self._octave(cascade, octave, self.scale_factor, largest=(2 * width, 2 * height))]
        if not found:
            return []
        # Every box stands: doubled, each passes the threshold, and the grouping only merges
        # the boxes of one face.
        grouped, _ = cv2.groupRectangles(found * 2, 1, 0.2)  # 0.2: detectMultiScale's own eps
        return grouped

    @staticmethod
    def _octave(cascade: cv2.CascadeClassifier, octave: np.ndarray, step: float,
                largest: tuple[int, int]) -> list[list[int]]:
        """Every window (x, y, w, h) of `octave` where the cascade fires, from the cascade's
        size to `largest`, sizes `step` apart."""
        found = cascade.detectMultiScale(octave, scaleFactor=step, minNeighbors=0,
                                         minSize=cascade.getOriginalWindowSize(), maxSize=largest)
        return [[int(v) for v in box] for box in found]

    def _confirm(self, cascade: cv2.CascadeClassifier, view: np.ndarray, hit: tuple[int, int, int, int],
                 ) -> tuple[tuple[int, int, int, int], list[list[int]]]:
        """The region of `view` searched around a `hit` of the coarse first octave, and the
        faces found there: on the region doubled, windows within `confirm_range` of the
        hit's size, 1.1 apart (the coarse scan: 1.41; OpenCV's usual 1.25) and 1 px apart
        (the coarse scan: 2 px), a face needing `confirm_hits` hits. A stray hit is rarely
        hit again, a face is; so few windows fire that this costs little: ~0.2 ms for a
        stray hit, ~3 ms for a real face (many windows there pass deep into the cascade).
        Measured on benchmarks/face_recall.py: the region searched as it is (2 px apart)
        confirmed fewer faces and missed the benchmark's; 2 hits, more false boxes (28
        against 16 with 3 on the 720 frames), 4 hits, fewer faces (645 against 651)."""
        import cv2

        x, y, w, h = hit
        mx, my = int(w * self.confirm_margin), int(h * self.confirm_margin)
        x0, y0 = max(0, x - mx), max(0, y - my)
        x1, y1 = min(view.shape[1], x + w + mx), min(view.shape[0], y + h + my)
        width, height = cascade.getOriginalWindowSize()
        crop = cv2.resize(view[y0:y1, x0:x1], None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
        lo, hi = max(width, int(2 * w / self.confirm_range)), int(2 * w * self.confirm_range) + 1
        faces = cascade.detectMultiScale(crop, scaleFactor=1.1, minNeighbors=self.confirm_hits - 1,
                                         minSize=(lo, lo * height // width), maxSize=(hi, hi * height // width))
        return (x0, y0, x1, y1), [[x0 + int(fx) // 2, y0 + int(fy) // 2, int(fw) // 2, int(fh) // 2]
                                  for fx, fy, fw, fh in faces]


def _clusters(boxes: list[list[int]], eps: float = 0.2) -> list[list[list[int]]]:
    """`boxes` (x, y, w, h) split into the groups cv2.groupRectangles would form (its
    similarity rule, same `eps`), which it does not return: only their mean."""
    groups: list[list[list[int]]] = []
    for box in boxes:
        near = [g for g in groups if any(_similar(box, other, eps) for other in g)]
        merged = [box] + [b for g in near for b in g]
        groups = [g for g in groups if all(g is not n for n in near)] + [merged]
    return groups


def _similar(a: Sequence[int], b: Sequence[int], eps: float) -> bool:
    """OpenCV's SimilarRects: every edge within eps x the mean of the smaller sides."""
    delta = eps * (min(a[2], b[2]) + min(a[3], b[3])) * 0.5
    return (abs(a[0] - b[0]) <= delta and abs(a[1] - b[1]) <= delta
            and abs(a[0] + a[2] - b[0] - b[2]) <= delta and abs(a[1] + a[3] - b[1] - b[3]) <= delta)


_local = threading.local()
_opencv_lock = threading.Lock()


def import_opencv() -> None:
    """Import OpenCV, one thread at a time: its package bootstraps itself (it swaps its own
    module in sys.modules), and a second thread importing it meanwhile gets a half-made
    module (AttributeError: module 'cv2' has no attribute 'data'). The first external
    email of a fresh daemon, whose two pool workers both import it, failed so 2 times in 5."""
    with _opencv_lock:
        import cv2  # noqa: F401


def thread_detector() -> FaceDetector:
    """This thread's detector with the default settings, built on its first blur."""
    detector = getattr(_local, "detector", None)
    if detector is None:
        import_opencv()
        detector = _local.detector = FaceDetector()
    return detector


def obscure(region: np.ndarray) -> np.ndarray:
    """A coarse mosaic (about five cells across), then blurred: no feature is left for a
    person, a face detector or a deblurring tool to recover."""
    import cv2

    h, w = region.shape[:2]
    cells = max(1, min(w, h) // 5)
    small = cv2.resize(region, (max(1, w // cells), max(1, h // cells)), interpolation=cv2.INTER_AREA)
    mosaic = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    k = max(3, (cells // 2) | 1)
    return cv2.GaussianBlur(mosaic, (k, k), 0)


def blur_image(image: Image.Image, detector: FaceDetector | None, mode: BlurMode = "faces",
               *, in_place: bool = False) -> tuple[Image.Image, int]:
    """The image with faces (or everything) obscured, and how many regions were;
    `image` itself is changed only with `in_place` (for a caller that just decoded it).

    Only the boxes go through numpy: copying a whole 1080p frame in and out costs about
    as much as decoding it."""
    import numpy as np

    if mode == "full" or detector is None:
        return Image.fromarray(obscure(np.asarray(image))), 1
    boxes = detector.faces_in_gray(np.asarray(image.convert("L")))
    out = image if in_place or not boxes else image.copy()
    obscure_boxes(out, boxes)
    return out, len(boxes)


def obscure_boxes(image: Image.Image, boxes: Sequence[tuple[int, int, int, int]]) -> None:
    """Obscure each box (x0, y0, x1, y1) of `image`, in place."""
    import numpy as np

    for x0, y0, x1, y1 in boxes:
        if x1 > x0 and y1 > y0:
            region = np.asarray(image.crop((x0, y0, x1, y1)))
            image.paste(Image.fromarray(obscure(region)), (x0, y0))


def blur_faces(data: bytes, *, quality: int = 88, mode: BlurMode = "faces",
               detector: FaceDetector | None = None) -> bytes:
    """A JPEG with the faces obscured, at the original resolution."""
    import_opencv()
    image, _ = blur_image(decode(data), detector or (thread_detector() if mode == "faces" else None), mode,
                          in_place=True)
    return encode(image, quality)


def fit_jpeg(image: Image.Image, budget: int, first: bytes | None = None) -> bytes | None:
    """The best JPEG of `image` whose wire size fits `budget`: lower quality first, then smaller.

    `first` is `image` already encoded at the best quality, when a caller had that done
    ahead (in parallel, before the budget of each frame was known)."""
    while max(image.size) >= MIN_SIDE:
        for quality in QUALITIES:
            data = first if first is not None and quality == QUALITIES[0] else encode(image, quality)
            if wire_size(len(data)) <= budget:
                return data
        first = None
        shrink = max(0.4, min(0.85, math.sqrt(budget / wire_size(len(data))) * 0.95))
        image = image.resize((max(1, round(image.width * shrink)), max(1, round(image.height * shrink))),
                             Image.Resampling.LANCZOS)
    return None


def _order(snapshots: Sequence[Snapshot]) -> tuple[list[Snapshot], list[Snapshot]]:
    """The newest frame of each camera first; then the others, newest first (dropped first: the oldest)."""
    latest: dict[str, Snapshot] = {}
    for snap in snapshots:
        if snap.camera not in latest or snap.taken_at > latest[snap.camera].taken_at:
            latest[snap.camera] = snap
    primary = list(latest.values())
    rest = sorted((s for s in snapshots if all(s is not p for p in primary)), key=lambda s: s.taken_at, reverse=True)
    return primary, rest


def thin(frames: list[Snapshot], keep: int) -> list[Snapshot]:
    """`keep` frames spread evenly over the list (its first, the newest, always kept)."""
    if keep >= len(frames):
        return frames
    if keep <= 1:
        return frames[:keep]
    step = (len(frames) - 1) / (keep - 1)
    return [frames[round(i * step)] for i in range(keep)]


def prepare_for_email(
    snapshots: Sequence[Snapshot],
    *,
    external: bool,
    budget_bytes: int,
    max_side: int = 1920,
    prealarm_side: int = 960,
    blur: BlurMode = "faces",
) -> list[Attachment]:
    """Attachments for one recipient, whose total size *on the wire* (base64) stays within
    `budget_bytes`. The newest frame of each camera gets three shares of the budget, older
    frames one; when older frames would be too small to be of use, fewer of them are kept,
    spread over the pre-alarm window. External recipients get faces obscured. The
    originals are not touched (they stay in the image store)."""
    primary, rest = _order(snapshots)
    rest_budget = budget_bytes * len(rest) // max(1, 3 * len(primary) + len(rest))
    rest = thin(rest, rest_budget // MIN_FRAME_BUDGET)
    weighted = [(s, 3, max_side, True) for s in primary] + [(s, 1, prealarm_side, False) for s in rest]
    blurred = _blur_all([(s.image.data, side) for s, _, side, _ in weighted], blur) if external else None
    remaining = budget_bytes
    chosen: list[tuple[Snapshot, bytes]] = []
    for index, (snap, weight, side, is_latest) in enumerate(weighted):
        share = remaining * weight // sum(w for _, w, _, _ in weighted[index:])
        if blurred is not None:
            image, best = blurred[index]
            data = fit_jpeg(image, share, first=best)
        else:
            data = _fit_one(snap.image.data, share, side)
        if data is None:
            if is_latest:
                continue  # another camera's latest frame may still fit
            break  # older frames are only worth sending with the newer ones
        chosen.append((snap, data))
        remaining -= wire_size(len(data))
    chosen.sort(key=lambda item: (all(item[0] is not p for p in primary), item[0].camera, item[0].taken_at))
    names: set[str] = set()
    return [Attachment(_filename(snap, names), "image/jpeg", data) for snap, data in chosen]


class EmailImages:
    """The attachments of one batch of messages: blurring and resizing are paid once per
    variant (internal / external), not once per recipient."""

    def __init__(self, snapshots: Sequence[Snapshot], budget_bytes: int, **options: object) -> None:
        self.snapshots = list(snapshots)
        self.budget_bytes = budget_bytes
        self.options = options
        self._done: dict[bool, list[Attachment]] = {}

    def for_recipient(self, external: bool) -> list[Attachment]:
        if external not in self._done:
            self._done[external] = prepare_for_email(
                self.snapshots, external=external, budget_bytes=self.budget_bytes, **self.options)  # type: ignore[arg-type]
        return list(self._done[external])

    async def prepare(self) -> None:
        """Both variants, off the event loop (call before building messages synchronously)."""
        for external in (False, True):
            await asyncio.to_thread(self.for_recipient, external)


def _fit_one(data: bytes, budget: int, side: int) -> bytes | None:
    if wire_size(len(data)) <= budget and data[:3] == b"\xff\xd8\xff":
        with Image.open(io.BytesIO(data)) as probe:
            if max(probe.size) <= side:
                return data  # already small enough: send the camera's own bytes untouched
    return fit_jpeg(decode(data, side), budget)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _blur_pool() -> ThreadPoolExecutor:
    """One worker per core, kept between emails (and so their classifiers)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="blur")
        return _pool


def _blur_one(data: bytes, side: int, mode: BlurMode) -> tuple[Image.Image, bytes]:
    """The frame decoded (at most `side` px) and obscured, and its JPEG at the best quality:
    encoded here, on the pool, it is ready for `fit_jpeg` when the frame's share of the
    budget allows it (the usual case); otherwise only this encode was wasted.

    A colour JPEG that needs no scaling down goes through OpenCV from end to end: Pillow's
    JPEG encoder holds the GIL (as does its copy of an image into numpy), so on the pool
    the frames' encodes ran one at a time and held up the other worker's return from each
    OpenCV call (8 frames: ~40 ms CPU of encoding added ~40 ms of wall); OpenCV's imdecode
    and imencode release it. Both bundle libjpeg-turbo with the same settings: the same
    pixels and the same bytes (tests/test_imaging.py checks it against a new version of
    either). Any other frame takes the Pillow path (`decode` scales down while decoding)."""
    import_opencv()
    bgr = _decode_bgr(data, side)
    if bgr is None:
        image = blur_image(decode(data, side), thread_detector() if mode == "faces" else None, mode, in_place=True)[0]
        return image, encode(image, QUALITIES[0])
    import cv2

    if mode == "full":
        bgr = obscure(bgr)
    else:
        for x0, y0, x1, y1 in thread_detector().faces_in_gray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)):
            if x1 > x0 and y1 > y0:
                bgr[y0:y1, x0:x1] = obscure(bgr[y0:y1, x0:x1])
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, QUALITIES[0], cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    if not ok:
        raise OSError("OpenCV could not encode a JPEG")
    return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), jpeg.tobytes()


def _decode_bgr(data: bytes, side: int) -> np.ndarray | None:
    """`data` decoded by OpenCV (BGR) when it gives the pixels `decode` would: a colour
    JPEG at most `side` px, EXIF orientation ignored as Pillow does; otherwise None.
    Only the header is read to choose (Image.open decodes nothing)."""
    import cv2
    import numpy as np

    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format != "JPEG" or probe.mode != "RGB" or max(probe.size) > side:
                return None
    except (OSError, ValueError):
        return None  # the Pillow path raises what it always raised
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None  # truncated: OpenCV would fill the rest with grey where Pillow raises
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return bgr if bgr is not None and bgr.shape[:2] == probe.size[::-1] else None


def _blur_all(frames: list[tuple[bytes, int]], mode: BlurMode) -> list[tuple[Image.Image, bytes]]:
    """`_blur_one` for every frame, in parallel on the blur pool."""
    if len(frames) == 1:
        return [_blur_one(frames[0][0], frames[0][1], mode)]
    pool = _blur_pool()
    return [job.result() for job in [pool.submit(_blur_one, data, side, mode) for data, side in frames]]


def _filename(snap: Snapshot, taken: set[str]) -> str:
    stem = f"{snap.camera}-{snap.taken_at:%Y%m%d-%H%M%S}"
    name, n = f"{stem}.jpg", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.jpg"
    taken.add(name)
    return name


async def prepare_for_email_async(snapshots: Sequence[Snapshot], *, external: bool, budget_bytes: int,
                                  **options: object) -> list[Attachment]:
    """`prepare_for_email` off the event loop."""
    return await asyncio.to_thread(
        lambda: prepare_for_email(snapshots, external=external, budget_bytes=budget_bytes, **options)  # type: ignore[arg-type]
    )


async def blur_faces_async(data: bytes, *, mode: BlurMode = "faces") -> bytes:
    return await asyncio.to_thread(blur_faces, data, mode=mode)
