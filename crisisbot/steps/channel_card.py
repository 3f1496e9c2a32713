"""Post the alert to a Teams channel: title, site, time, join button, snapshot thumbnails.

Through any `CardPoster` connector (connectors.base; today `teams-channel`), so the core
imports no Teams module.

It consumes the meeting and snapshot outputs, so by default it waits for the earlier
meeting/snapshot steps; a channel post without the join link is still posted when
the meeting step failed, because the people watching the channel must know anyway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from connectors.base import AlertCard, CardPoster, Snapshot
from crisisbot.config.types import Identifier, Reference, Templated
from crisisbot.errors import ConnectorError
from crisisbot.steps.base import StepContext, StepFailed, StepSpec, StepType
from crisisbot.steps.snapshot import SnapshotSet


class ChannelCardStep(StepSpec):
    consumes: ClassVar[bool] = True
    urgent: ClassVar[bool] = True
    notifies: ClassVar[bool] = True

    action: Literal["channel_card"]
    connector: Annotated[Identifier, Reference("connectors")] = Field(description="a teams-channel connector")
    title: Annotated[str, Templated()] = Field(
        "{{ alarm.label or alarm.kind.value }} - {{ site_name }}", description="Jinja2 expression for the card title"
    )
    thumbnails: int = Field(4, ge=0, le=8, description="at most this many snapshot thumbnails")


def _snapshots(ctx: StepContext) -> list[Snapshot]:
    """Snapshots of every earlier snapshot step (a SnapshotSet or a plain list), newest first."""
    found: list[Snapshot] = []
    for output in ctx.outputs.values():
        items = output.snapshots if isinstance(output, SnapshotSet) else output
        if isinstance(items, (list, tuple)):
            found.extend(s for s in items if isinstance(s, Snapshot))
    return sorted(found, key=lambda s: s.taken_at, reverse=True)


def _local(moment: datetime, timezone: str) -> str:
    return moment.astimezone(ZoneInfo(timezone)).strftime("%d/%m/%Y %H:%M:%S %Z")


def alert_card(spec: ChannelCardStep, ctx: StepContext) -> AlertCard:
    variables = ctx.template_context()
    alarm = ctx.alarm
    title = ctx.templates.render_string(spec.title, variables).strip() or ctx.incident.title
    facts = [("Site", str(variables["site_name"]))]
    if alarm.zone:
        zone = ctx.site.zones.get(alarm.zone) if ctx.site else None
        facts.append(("Zone", zone.name if zone and zone.name else alarm.zone))
    facts += [
        ("Event", f"{alarm.kind.value} ({alarm.severity.value})"),
        ("Time", _local(alarm.occurred_at, variables["timezone"])),
        ("Incident", ctx.incident.id),
    ]
    if variables["join_url"] is None:
        facts.append(("Meeting", "not available yet"))
    return AlertCard(
        title=title, facts=facts, join_url=variables["join_url"],
        snapshots=tuple(_snapshots(ctx)[: spec.thumbnails]), drill=ctx.incident.drill,
    )


class CardPosted(BaseModel):
    connector: str
    title: str
    join_url: str | None
    thumbnails: int


async def run(ctx: StepContext, spec: ChannelCardStep) -> CardPosted:
    channel = ctx.connector(spec.connector)
    if not isinstance(channel, CardPoster):
        raise StepFailed(f"{spec.connector} is not a teams-channel connector")
    card = alert_card(spec, ctx)
    try:
        await channel.post_alert(card)
    except ConnectorError as exc:
        raise StepFailed(f"teams channel {spec.connector}: {exc}") from exc
    posted = CardPosted(connector=spec.connector, title=card.title, join_url=card.join_url,
                        thumbnails=len(card.snapshots))
    await ctx.store.audit("channel_card.posted", ctx.incident.id, posted.model_dump())
    return posted


STEP = StepType(ChannelCardStep, run, CardPosted)
