"""Step plugins as a third party would ship them, loaded by tests/test_step_plugins.py
through entry points of their own (never registered in pyproject.toml)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel

from crisisbot.sdk import Identifier, Reference, StepContext, StepSpec, StepType


class PingStep(StepSpec):
    action: Literal["ping"]
    host: str
    tell: Annotated[list[Identifier], Reference("contacts")] = []  # checked by `validate` like `email.to`
    via: Annotated[Identifier | None, Reference("connectors", of="mail")] = None


class Pinged(BaseModel):
    host: str
    incident: str


async def run(ctx: StepContext, config: PingStep) -> Pinged:
    return Pinged(host=config.host, incident=ctx.incident.id)


STEP = StepType(PingStep, run, Pinged)
NOT_A_STEP = {"action": "ping"}
