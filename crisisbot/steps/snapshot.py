"""Grab snapshots from the site's cameras, all in parallel, each under the step deadline.

A dead camera costs at most the deadline and is reported by name; the others'
images still reach the committee.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Iterator, Literal, Mapping

from pydantic import Field

from connectors.base import BuffersFrames, Camera, Snapshot
from crisisbot.config.types import Identifier, Reference
from crisisbot.steps.base import StepContext, StepSpec, StepType


class SnapshotStep(StepSpec):
    produces = True
    urgent = True

    action: Literal["snapshot"]
    cameras: Annotated[list[Identifier] | Literal["zone", "site"], Reference("cameras", keywords=("zone", "site"))] = Field(
        "zone",
        description="camera ids of the alarm's site, 'zone' (cameras of the alarm's zone, "
        "else of the site) or 'site' (every camera of the site)",
    )
    prealarm: bool = Field(True, description="include buffered frames from before the alarm")


@dataclass(slots=True)
class SnapshotSet:
    """The images of one snapshot step and why each missing camera is missing."""

    snapshots: list[Snapshot] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def select_cameras(spec: SnapshotStep, ctx: StepContext) -> list[str]:
    site = ctx.site
    if site is None:
        return []
    if isinstance(spec.cameras, list):
        return spec.cameras
    if spec.cameras == "zone" and ctx.alarm.zone and ctx.alarm.zone in site.zones:
        return list(site.zones[ctx.alarm.zone].cameras)
    return list(site.cameras)


async def run(ctx: StepContext, spec: SnapshotStep) -> SnapshotSet:
    names = select_cameras(spec, ctx)
    if not names:
        return SnapshotSet()
    timeout = spec.timeout or ctx.config.incidents.step_timeout

    cameras = {name: ctx.camera(name) for name in names}
    result = await capture_all(cameras, timeout, ctx.alarm.occurred_at if spec.prealarm else None)
    if ctx.services.images is not None and result.snapshots:  # originals for the live view
        await ctx.services.images.put_many(ctx.incident.id, result.snapshots)
    for name, reason in result.failures.items():
        ctx.log.warning("camera %s: %s", name, reason)
    await ctx.store.audit(
        "snapshot.taken", ctx.incident.id,
        {"cameras": names, "images": len(result.snapshots), "failures": result.failures},
    )
    return result


def describe(ctx: StepContext, spec: SnapshotStep, bodies: bool) -> Iterator[str]:
    yield f"  cameras: {', '.join(select_cameras(spec, ctx)) or 'none'}"


async def capture_all(cameras: Mapping[str, Camera | None], timeout: float,
                      prealarm_since: datetime | None = None) -> SnapshotSet:
    """Every camera at once, each under `timeout`; failures are named, never raised.
    With `prealarm_since`, cameras that buffer frames add those from just before it."""
    result = SnapshotSet()

    async def grab(name: str, camera: Camera | None) -> None:
        if not isinstance(camera, Camera):
            result.failures[name] = "camera is not configured for this site"
            return
        if prealarm_since is not None and isinstance(camera, BuffersFrames):
            result.snapshots.extend(camera.prealarm(prealarm_since))
        try:
            async with asyncio.timeout(timeout):
                result.snapshots.append(await camera.snapshot())
        except TimeoutError:
            result.failures[name] = f"no image within {timeout:.1f}s"
        except Exception as exc:  # noqa: BLE001 - one camera's failure must not sink the others
            result.failures[name] = f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(grab(n, c) for n, c in cameras.items()))
    return result


# not journaled: the images are kept encrypted in the image store, not in the step journal;
# after a restart the step runs again if a message that needs them has yet to go out
STEP = StepType(SnapshotStep, run, SnapshotSet, journal=False, describe=describe)
