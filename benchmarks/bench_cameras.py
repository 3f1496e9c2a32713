"""Cameras: parallel capture against the slowest camera alone, and the cost of blurring faces.

1. Capture: 7 live loopback HTTP cameras (1080p JPEG, 20-150 ms to answer, two with
   digest auth) plus one dead camera, all captured at once as the snapshot step does.
   Compared with the slowest live camera captured alone, in the same run. Expected
   ratio: close to 1 when the dead camera refuses connections; when it hangs instead,
   the round is bounded by the per-camera deadline, never longer.
2. Blur: detecting and blurring faces on a 1080p frame holding a real face (scikit-image's
   astronaut when installed), against a plain JPEG decode + encode of the same frame.

    python -m benchmarks.bench_cameras [--runs 15]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from connectors.base import Services
from connectors.camera_http import HttpCamera
from crisisbot.imaging import blur_faces, decode, encode, prepare_for_email
from tests.camera_server import PASSWORD, USER, CameraServer, dead_port, make_jpeg

DELAYS_MS = (20, 35, 50, 70, 90, 120, 150)
DEADLINE = 1.0


def frame_with_face() -> bytes:
    """1080p frame: the astronaut photo (a real face) on a textured background."""
    canvas = np.asarray(Image.open(io.BytesIO(make_jpeg(1920, 1080, "hall")))).copy()
    try:
        from skimage import data

        face = data.astronaut()
        canvas[200:200 + face.shape[0], 700:700 + face.shape[1]] = face
    except ImportError:  # scikit-image is a test dependency only
        pass
    out = io.BytesIO()
    Image.fromarray(canvas).save(out, "JPEG", quality=90)
    return out.getvalue()


def cam(name: str, url: str, root: Path, **extra: object) -> HttpCamera:
    raw = {"type": "http-camera", "url": url, "timeout": DEADLINE, **extra}
    return HttpCamera(name, HttpCamera.Config.model_validate(raw), Services(data_dir=root, root=root))


async def timed(coro_factory, runs: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await coro_factory()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def capture_bench(runs: int, root: Path) -> None:
    server = await CameraServer(jpeg=frame_with_face(), slow_delay=30).start()
    refused = await dead_port()
    live = [cam(f"live{ms}", f"{server.base}/delay.jpg?ms={ms}", root) for ms in DELAYS_MS[:-2]]
    live += [cam(f"digest{ms}", f"{server.base}/delay.jpg?ms={ms}", root, username=USER, password=PASSWORD)
             for ms in DELAYS_MS[-2:]]
    slowest = live[-1]
    refusing = cam("dead-refused", f"http://127.0.0.1:{refused}/x.jpg", root)
    hanging = cam("dead-hanging", f"{server.base}/slow.jpg", root)

    async def group(dead: HttpCamera) -> None:
        results = await asyncio.gather(*(c.snapshot() for c in [*live, dead]), return_exceptions=True)
        assert sum(not isinstance(r, BaseException) for r in results) == len(live)

    try:
        await group(refusing)  # warm connections, as a running daemon has them
        alone = await timed(slowest.snapshot, runs)
        with_refused = await timed(lambda: group(refusing), runs)
        with_hanging = await timed(lambda: group(hanging), max(3, runs // 5))
    finally:
        for c in [*live, refusing, hanging]:
            await c.stop()
        await server.stop()
    print(f"image: {len(server.jpeg) / 1e3:.0f} kB 1080p JPEG; {len(live)} live cameras "
          f"({DELAYS_MS[0]}-{DELAYS_MS[-1]} ms) + 1 dead; median of {runs} runs")
    print(f"slowest live camera alone:           {alone * 1e3:7.1f} ms")
    print(f"8 cameras in parallel, dead refuses: {with_refused * 1e3:7.1f} ms   ratio {with_refused / alone:.2f}")
    print(f"8 cameras in parallel, dead hangs:   {with_hanging * 1e3:7.1f} ms   "
          f"(deadline {DEADLINE * 1e3:.0f} ms; ratio to deadline {with_hanging / DEADLINE:.2f})")


def blur_bench(runs: int) -> None:
    """Wall time (what the committee waits for) and CPU time (the work, which a loaded
    machine does not distort as much); the blur of the 8 frames uses one worker per core.
    Each sample of the blur is taken right after a sample of its baseline (interleaved,
    so a change of load on the shared machine hits both alike), after one warm-up call of
    each that is not counted; ratios are of the medians."""
    from connectors.base import Snapshot
    from crisisbot.models import Attachment, utcnow

    data = frame_with_face()
    snaps = [Snapshot(f"cam{i}", utcnow(), Attachment("x.jpg", "image/jpeg", data)) for i in range(8)]

    def plain() -> None:
        encode(decode(data), 88)

    def plain8() -> None:
        for _ in range(8):
            plain()

    def interleaved(base_fn, fn) -> tuple[float, float, float, float]:  # type: ignore[no-untyped-def]
        base_fn()
        fn()
        samples: list[list[float]] = [[], [], [], []]
        for _ in range(runs):
            for offset, call in ((0, base_fn), (2, fn)):
                started, cpu = time.perf_counter(), time.process_time()
                call()
                samples[offset].append(time.perf_counter() - started)
                samples[offset + 1].append(time.process_time() - cpu)
        base, base_cpu, wall, wall_cpu = (statistics.median(s) for s in samples)
        return base, base_cpu, wall, wall_cpu

    base, base_cpu, blur, blur_cpu = interleaved(plain, lambda: blur_faces(data))
    print(f"plain decode + encode, 1080p:        {base * 1e3:7.1f} ms   (CPU {base_cpu * 1e3:.1f} ms)")
    print(f"blur faces (detect + blur + encode): {blur * 1e3:7.1f} ms   ratio {blur / base:.1f}   "
          f"(CPU ratio {blur_cpu / base_cpu:.1f})")
    stage_bench(data, runs)
    internal = statistics.median(
        timed_call(lambda: prepare_for_email(snaps, external=False, budget_bytes=10_000_000)) for _ in range(runs))
    base8, base8_cpu, external, external_cpu = interleaved(
        plain8, lambda: prepare_for_email(snaps, external=True, budget_bytes=10_000_000))
    print(f"email of 8 frames, internal:         {internal * 1e3:7.1f} ms   (frames fit: sent untouched)")
    print(f"email of 8 frames, external (blur):  {external * 1e3:7.1f} ms   "
          f"ratio to 8 plain decode + encode {external / base8:.1f}   (CPU ratio {external_cpu / base8_cpu:.1f}; "
          f"target <= 3 in wall time; {runs} interleaved samples)")


def timed_call(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def stage_bench(data: bytes, runs: int) -> None:
    """Where one frame's blur goes, in CPU time on one thread (median of `runs`)."""
    from crisisbot.imaging import obscure_boxes, thread_detector

    detector = thread_detector()
    image = decode(data)
    boxes = detector.faces_in_gray(np.asarray(image.convert("L")))

    def cpu(fn) -> float:  # type: ignore[no-untyped-def]
        fn()
        samples = []
        for _ in range(runs):
            started = time.process_time()
            fn()
            samples.append(time.process_time() - started)
        return statistics.median(samples) * 1e3

    stages = {
        "decode": cpu(lambda: decode(data)),
        "detect": cpu(lambda: detector.faces_in_gray(np.asarray(image.convert("L")))),
        "blur": cpu(lambda: obscure_boxes(image, boxes)),
        "encode": cpu(lambda: encode(image, 85)),
    }
    print("one frame, CPU per stage:            " + ", ".join(f"{k} {v:.1f} ms" for k, v in stages.items())
          + f"   ({len(boxes)} face(s) found)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv if argv is not None else [])
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(capture_bench(args.runs, Path(tmp)))
    blur_bench(args.runs)  # 15 interleaved pairs: a steadier median on a shared machine (+~6 s)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
