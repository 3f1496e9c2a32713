"""Alert tier after tier until the acknowledgement rule is met.

Tier 1 is alerted at once; later tiers and reminders are persisted timers (they
survive restarts and fire once), cancelled as soon as enough people — by count and
role — have acknowledged, or the incident is stood down.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from crisisbot.config.types import Identifier, Reference, Seconds, Strict
from crisisbot.lifecycle.schema import AckRule
from crisisbot.steps.base import StepContext, StepSpec, StepType


class Reminders(Strict):
    every: Seconds = Field(description="remind those of the tier who have not answered, e.g. 5m")
    count: int = Field(1, ge=1, le=20)
    template: Annotated[Identifier, Reference("templates")] = "reminder"


class Tier(Strict):
    to: Annotated[list[Identifier], Reference("contacts")] = Field(min_length=1, description="groups (duty schedules apply) or people")
    after: Seconds = Field(0.0, description="delay since the escalation started, e.g. 10m")
    template: Annotated[Identifier, Reference("templates")] = "committee_alert"
    reminders: Reminders | None = None


class EscalateStep(StepSpec):
    consumes = True

    action: Literal["escalate"]
    tiers: list[Tier] = Field(min_length=1)
    until: AckRule = Field(default_factory=AckRule, description="acknowledgements that stop the escalation")
    via: Annotated[list[Identifier] | None, Reference("connectors", of="mail")] = Field(
        None, description="mail connectors (default: mail.via)")


class Escalation(BaseModel):
    """What the step leaves in the journal: later tiers are timers of their own."""

    scheduled: int = Field(0, description="timers set for the later tiers and reminders")
    tier1: dict[str, Any] = Field(default_factory=dict, description="delivery summary of the first tier")


async def run(ctx: StepContext, spec: EscalateStep) -> Escalation:
    from crisisbot.lifecycle.escalation import begin  # the lifecycle imports the step table

    return Escalation.model_validate(await begin(spec, ctx))


STEP = StepType(EscalateStep, run, Escalation)
