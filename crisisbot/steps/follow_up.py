"""Updated snapshots every N seconds for M minutes, while the incident stays open.

Each round captures the cameras in parallel (each under its own deadline), keeps the
originals in the image store (the live view shows them), and, when `to` is given,
emails the round through the notify service with a per-round step id, so every round
is delivered exactly once even across a restart. Rounds stop early when the incident
is resolved, cancelled or declared a false alarm.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Awaitable, Callable, Literal

from pydantic import BaseModel, Field, model_validator

from crisisbot.config.types import Identifier, Reference, Seconds
from crisisbot.models import IncidentStatus
from crisisbot.notify import Request, notify_of
from crisisbot.steps.base import StepContext, StepSpec, StepType
from crisisbot.steps.snapshot import SnapshotSet, capture_all, select_cameras

CLOSED = {IncidentStatus.resolved, IncidentStatus.false_alarm, IncidentStatus.cancelled}


class FollowUpSnapshotsStep(StepSpec):
    consumes = True  # waits for the meeting, so the follow-up emails carry its link

    action: Literal["follow_up_snapshots"]
    cameras: Annotated[list[Identifier] | Literal["zone", "site"], Reference("cameras", keywords=("zone", "site"))] = Field(
        "zone", description="camera ids of the alarm's site, 'zone' or 'site' (as in `snapshot`)")
    every: Seconds = Field(60.0, gt=0, description="one round every ... (e.g. 30s)")
    duration: Seconds = Field(600.0, gt=0, description="for how long (e.g. 10m)")
    capture_timeout: Seconds = Field(10.0, gt=0, description="deadline of each camera in a round")
    to: Annotated[list[Identifier] | None, Reference("contacts")] = Field(
        None, description="contact groups or people to email each round")
    template: Annotated[Identifier | None, Reference("templates")] = Field(
        None, description="email template of the rounds (with `to`)")
    max_attachment_bytes: int = Field(10_000_000, ge=0, description="image budget of each email")

    @model_validator(mode="after")
    def _defaults(self) -> "FollowUpSnapshotsStep":
        if self.to and not self.template:
            raise ValueError("'to' needs a 'template' for the follow-up emails")
        if self.timeout is None:  # the step lasts `duration`: the default step deadline would cut it
            self.timeout = self.duration + self.every + self.capture_timeout + 60
        return self


async def rounds(every: float, duration: float, one_round: Callable[[int], Awaitable[None]], *,
                 keep_going: Callable[[], Awaitable[bool]] | None = None) -> int:
    """Call `one_round(1..)` at start + k*every for k*every <= duration (a slow round skips
    ticks, never bunches them) while `keep_going()` agrees; returns how many rounds ran."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    slot = ran = 0
    while True:
        slot += 1
        if slot * every > duration + 1e-9:
            return ran
        await asyncio.sleep(max(0.0, start + slot * every - loop.time()))
        if keep_going is not None and not await keep_going():
            return ran
        ran += 1
        await one_round(ran)
        slot = max(slot, int((loop.time() - start) // every))


class FollowUpTotals(BaseModel):
    rounds: int = 0
    images: int = 0
    failures: dict[str, str] = Field(default_factory=dict, description="camera: why its last failure")


async def run(ctx: StepContext, spec: FollowUpSnapshotsStep) -> FollowUpTotals:
    step_id = spec.id or "follow_up_snapshots"
    names = select_cameras(spec, ctx)  # type: ignore[arg-type]  # same `cameras` field as SnapshotStep
    cameras = {n: ctx.camera(n) for n in names}
    image_store = ctx.services.images  # None: no live view (a bare test context)
    totals = FollowUpTotals()
    if not cameras:
        return totals

    async def keep_going() -> bool:
        incident = await ctx.store.get_incident(ctx.incident.id)
        return incident is None or incident.status not in CLOSED

    async def one_round(number: int) -> None:
        result = await capture_all(cameras, spec.capture_timeout)
        if image_store is not None:
            await image_store.put_many(ctx.incident.id, result.snapshots)
        totals.images += len(result.snapshots)
        totals.failures.update(result.failures)
        for name, reason in result.failures.items():
            ctx.log.warning("follow-up round %d, camera %s: %s", number, name, reason)
        await ctx.store.audit("followup.round", ctx.incident.id, {
            "step": step_id, "round": number, "images": len(result.snapshots), "failures": result.failures,
        })
        if spec.to and result.snapshots:
            await _email(spec, ctx, f"{step_id}-{number}", result)

    totals.rounds = await rounds(spec.every, spec.duration, one_round, keep_going=keep_going)
    return totals


async def _email(spec: FollowUpSnapshotsStep, ctx: StepContext, round_id: str, images: SnapshotSet) -> None:
    """One round through the notify service: same templates, budget, blurring and idempotency
    as the email step; the round's images replace the earlier snapshots."""
    assert spec.to is not None and spec.template is not None
    others = {k: v for k, v in ctx.outputs.items() if not isinstance(v, SnapshotSet)}
    await notify_of(ctx.services).send(Request(
        context=dataclasses.replace(ctx, outputs={**others, round_id: images}), step_id=round_id,
        to=list(spec.to), template=spec.template, max_attachment_bytes=spec.max_attachment_bytes))


STEP = StepType(FollowUpSnapshotsStep, run, FollowUpTotals)
