"""The Teams channel card: connector against a local Workflows webhook, and the playbook step."""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest
from PIL import Image, ImageDraw

from connectors.base import Services, Snapshot
from connectors.teams_channel import AlertCard, TeamsChannel, TeamsChannelConfig, build_card, message
from crisisbot.config.settings import Site, Zone
from crisisbot.errors import PermanentError, TransientError
from crisisbot.models import Alarm, Attachment, EventKind, Incident, IncidentStatus, Meeting
from crisisbot.clock import SystemClock
from crisisbot.steps.base import StepContext, StepFailed, StepServices
from crisisbot.steps.channel_card import ChannelCardStep, run
from crisisbot.steps.snapshot import SnapshotSet
from tests.graph_server import WebhookServer

AT = datetime(2030, 5, 1, 8, 0, tzinfo=timezone.utc)
JOIN = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0"


def jpeg(width: int = 1280, height: int = 720, seed: int = 0, noise: bool = False) -> bytes:
    """A camera-like frame (gradient + shapes), or pure noise: the worst case for JPEG size."""
    rng = random.Random(seed)
    if noise:
        img = Image.new("RGB", (width, height))
        img.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(width * height)])
    else:
        img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x, y = rng.randrange(width), rng.randrange(height)
            draw.rectangle((x, y, x + width // 8, y + height // 6), fill=(rng.randrange(256), 80, 40))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def snapshot(camera: str, seed: int = 0, size: tuple[int, int] = (1280, 720), noise: bool = False) -> Snapshot:
    data = jpeg(*size, seed=seed, noise=noise)
    return Snapshot(camera, AT + timedelta(seconds=seed), Attachment(f"{camera}.jpg", "image/jpeg", data))


@pytest.fixture
async def hook() -> AsyncIterator[WebhookServer]:
    async with WebhookServer() as server:
        yield server


@pytest.fixture
async def channel(hook: WebhookServer, tmp_path: Path) -> AsyncIterator[TeamsChannel]:
    config = TeamsChannelConfig.model_validate({"type": "teams-channel", "webhook_url": hook.url, "max_retry_wait": 2})
    connector = TeamsChannel("teams-channel", config, Services(data_dir=tmp_path, root=tmp_path))
    await connector.start()
    yield connector
    await connector.stop()


async def test_card_with_facts_thumbnails_and_join_button(hook: WebhookServer, channel: TeamsChannel) -> None:
    alert = AlertCard("Panic button - Paris HQ", [("Site", "Paris HQ"), ("Time", "01/05/2030 10:00:00 CEST")],
                      JOIN, (snapshot("hall", 1), snapshot("dock", 2)))

    await channel.post_alert(alert)

    (payload,) = hook.posts
    attachment = payload["attachments"][0]
    assert payload["type"] == "message" and attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0]["text"] == "Panic button - Paris HQ" and card["body"][0]["color"] == "Attention"
    assert card["body"][1]["facts"] == [{"title": "Site", "value": "Paris HQ"},
                                        {"title": "Time", "value": "01/05/2030 10:00:00 CEST"}]
    images = card["body"][2]["images"]
    assert [i["altText"] for i in images] == ["hall 08:00:01", "dock 08:00:02"]
    assert all(i["url"].startswith("data:image/jpeg;base64,") for i in images)
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Join the crisis meeting", "url": JOIN}]
    assert len(json.dumps(payload)) <= 26_000


def test_thumbnails_are_dropped_to_fit_the_teams_size_limit() -> None:
    big = [snapshot(f"cam{i}", i, size=(640, 360), noise=True) for i in range(6)]
    card = build_card(AlertCard("t", [("Site", "x")], JOIN, tuple(big)), max_bytes=26_000)

    size = len(json.dumps(message(card)))
    images = card["body"][2]["images"] if len(card["body"]) > 2 else []
    assert size <= 26_000 and 0 < len(images) < 6


def test_unreadable_snapshot_is_skipped_and_drill_is_marked() -> None:
    broken = Snapshot("cam", AT, Attachment("x.jpg", "image/jpeg", b"not a jpeg"))
    card = build_card(AlertCard("Fire", [], None, (broken,), drill=True))
    assert card["body"][0]["text"] == "[DRILL] Fire" and len(card["body"]) == 2 and "actions" not in card


async def test_throttled_webhook_is_retried_after_retry_after(hook: WebhookServer, channel: TeamsChannel) -> None:
    hook.fail_next(429, retry_after=1)

    began = time.monotonic()
    await channel.post_alert(AlertCard("t", [], JOIN))

    # waited at least Retry-After before the second attempt (a lower bound: sleeps never end early)
    assert time.monotonic() - began >= 1.0 and hook.attempts == 2 and len(hook.posts) == 1


async def test_server_errors_become_transient(hook: WebhookServer, channel: TeamsChannel) -> None:
    hook.fail_next(502, times=3)

    with pytest.raises(TransientError, match="HTTP 502"):
        await channel.post_alert(AlertCard("t", [], JOIN))
    assert hook.attempts == 3


async def test_bad_url_is_permanent_and_the_signature_stays_secret(hook: WebhookServer, tmp_path: Path) -> None:
    config = TeamsChannelConfig.model_validate({"type": "teams-channel", "webhook_url": hook.url.replace("SIGNATURE-SECRET", "old")})
    connector = TeamsChannel("ops-channel", config, Services(data_dir=tmp_path, root=tmp_path))
    await connector.start()
    try:
        with pytest.raises(PermanentError, match="HTTP 401 DirectApiAuthorizationRequired") as caught:
            await connector.post_alert(AlertCard("t", [], JOIN))
    finally:
        await connector.stop()
    assert "sig=" not in str(caught.value) and "SIGNATURE" not in repr(config)


def context(channel: Any, outputs: dict[str, Any]) -> StepContext:
    audits: list[tuple[str, str, dict[str, Any]]] = []

    async def audit(kind: str, incident_id: str, data: dict[str, Any]) -> None:
        audits.append((kind, incident_id, data))

    services = StepServices(
        bundle=SimpleNamespace(  # type: ignore[arg-type]
            templates=SimpleNamespace(render_string=lambda src, ctx: jinja2.Environment().from_string(src).render(ctx)),
            config=SimpleNamespace(organization=SimpleNamespace(name="ACME"))),
        clock=SystemClock(),
        store=SimpleNamespace(audit=audit, audits=audits),  # type: ignore[arg-type]
        connectors={"ops": channel},
    )
    site = Site(name="Paris HQ", timezone="Europe/Paris", zones={"hall": Zone(name="Main hall")})
    alarm = Alarm(source="webhook", site="paris", zone="hall", kind=EventKind.panic, label="Panic button", occurred_at=AT)
    incident = Incident("inc-42", "paris", "panic", IncidentStatus.open, AT, AT, title="Panic at Paris HQ")
    return StepContext(services, incident=incident, alarm=alarm, playbook=None, site=site, outputs=outputs)  # type: ignore[arg-type]


async def test_step_posts_the_card_with_meeting_and_snapshots(hook: WebhookServer, channel: TeamsChannel) -> None:
    meeting = Meeting("teams", JOIN, "m1", "Panic", AT, AT + timedelta(hours=2))
    snaps = SnapshotSet(snapshots=[snapshot("hall", 1), snapshot("dock", 2)])
    ctx = context(channel, {"1-meeting": meeting, "2-snapshot": snaps})
    spec = ChannelCardStep.model_validate({"action": "channel_card", "connector": "ops", "thumbnails": 1})

    summary = await run(ctx, spec)

    card = hook.posts[0]["attachments"][0]["content"]
    assert card["body"][0]["text"] == "Panic button - Paris HQ"
    assert {"title": "Zone", "value": "Main hall"} in card["body"][1]["facts"]
    assert {"title": "Time", "value": "01/05/2030 10:00:00 CEST"} in card["body"][1]["facts"]
    assert [i["altText"] for i in card["body"][2]["images"]] == ["dock 08:00:02"]  # newest first, capped
    assert card["actions"][0]["url"] == JOIN
    assert summary.join_url == JOIN
    assert ctx.store.audits[0][:2] == ("channel_card.posted", "inc-42")
    assert ChannelCardStep.consumes is True


async def test_step_without_meeting_still_posts_and_failures_are_step_failures(
    hook: WebhookServer, channel: TeamsChannel
) -> None:
    ctx = context(channel, {})
    spec = ChannelCardStep.model_validate({"action": "channel_card", "connector": "ops"})
    await run(ctx, spec)
    facts = hook.posts[0]["attachments"][0]["content"]["body"][1]["facts"]
    assert {"title": "Meeting", "value": "not available yet"} in facts

    hook.fail_next(400)
    with pytest.raises(StepFailed, match="teams channel ops: .*HTTP 400"):
        await run(ctx, spec)
