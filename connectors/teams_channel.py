"""Post the alert to a Teams channel as an Adaptive Card, through a Teams Workflows webhook.

Workflows ("Post to a channel when a webhook request is received") replaced the
Office 365 connectors; it takes `{"type": "message", "attachments": [card]}` and
answers 202. The URL carries its own signature, so it is a secret here. Teams caps a
message at about 28 KB: snapshot thumbnails are shrunk and dropped until the card fits.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import ssl
from pathlib import Path
from typing import Any, Literal

import httpx
from PIL import Image
from pydantic import Field, SecretStr

from connectors.base import AlertCard, CardPoster, Services
from crisisbot.config.types import Seconds, Strict
from crisisbot.errors import PermanentError, TransientError
from crisisbot.retry import RetryPolicy

log = logging.getLogger(__name__)

CARD_TYPE = "application/vnd.microsoft.card.adaptive"


class TeamsChannelConfig(Strict):
    type: Literal["teams-channel"]
    webhook_url: SecretStr = Field(description="HTTP POST URL of the Workflows flow (contains its signature)")
    timeout: Seconds = Field(10.0, gt=0)
    max_retries: int = Field(2, ge=0, le=5, description="retries of 429/5xx answers")
    max_retry_wait: Seconds = Field(5.0, ge=0, description="longest Retry-After slept in place")
    thumbnail_width: int = Field(240, ge=64, le=1024, description="pixels; halved as needed to fit")
    max_card_bytes: int = Field(26_000, ge=4_000, le=28_000, description="Teams refuses messages over ~28 KB")
    ca_bundle: Path | None = Field(None, description="extra CA file (TLS-inspecting proxy, tests)")


class TeamsChannel(CardPoster):
    """Posts Adaptive Cards to one channel's Workflows webhook."""

    kind = "channel"
    Config = TeamsChannelConfig
    config: TeamsChannelConfig

    def __init__(self, name: str, config: TeamsChannelConfig, services: Services) -> None:
        if config.ca_bundle and not config.ca_bundle.is_absolute():
            config = config.model_copy(update={"ca_bundle": Path(services.root) / config.ca_bundle})
        super().__init__(name, config, services)
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        verify: Any = ssl.create_default_context(cafile=str(self.config.ca_bundle)) if self.config.ca_bundle else True
        self._http = httpx.AsyncClient(timeout=self.config.timeout, verify=verify)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def post_alert(self, alert: AlertCard) -> dict[str, Any]:
        """Post the card; returns the payload sent (for the incident log)."""
        payload = message(build_card(alert, self.config.thumbnail_width, self.config.max_card_bytes))
        await self.post(payload)
        return payload

    async def post(self, payload: dict[str, Any]) -> None:
        if self._http is None:
            raise PermanentError(f"connector {self.name} used before start()")
        url = self.config.webhook_url.get_secret_value()
        what = f"post to the Teams channel webhook of {self.name}"
        policy = RetryPolicy(first=0.5, attempts=self.config.max_retries + 1)
        failures = 0

        def worth_waiting(exc: BaseException) -> bool:
            """Throttled or failing server: wait in place if its Retry-After (or our backoff) is short."""
            nonlocal failures
            failures += 1
            if not isinstance(exc, _Busy):
                return False
            pause = exc.retry_after if exc.retry_after is not None else policy.pause(failures)
            return pause <= self.config.max_retry_wait

        def log_retry(exc: BaseException, pause: float) -> None:
            log.info("%s: %s, retrying in %.1fs", self.name, exc, pause)

        try:
            async for attempt in policy.retrying(retry_on=worth_waiting, before_sleep=log_retry):
                with attempt:
                    await self._post_once(url, payload, what)
        except _Busy as busy:
            raise TransientError(f"{what}: {busy}", retry_after=busy.retry_after) from None

    async def _post_once(self, url: str, payload: dict[str, Any], what: str) -> None:
        assert self._http is not None
        try:  # never put the URL (it holds the signature) in an error or a log line
            response = await self._http.post(url, json=payload)
        except httpx.TimeoutException:
            raise TransientError(f"{what}: no answer within {self.config.timeout:.0f}s") from None
        except httpx.TransportError as exc:
            raise TransientError(f"{what}: {type(exc).__name__}") from None
        status = response.status_code
        if status < 300:
            return
        detail = f"HTTP {status} {_error_text(response)}".strip()
        if status == 429 or status >= 500:
            raise _Busy(detail, _seconds(response.headers.get("retry-after")))
        if status in (401, 403, 404):
            raise PermanentError(f"{what}: {detail}; the flow was deleted or turned off, or the URL is "
                                 "wrong: copy it again from the Workflows app")
        raise PermanentError(f"{what}: {detail}")


class _Busy(Exception):
    """429 or 5xx: worth another try after `retry_after` (raised as TransientError past the loop)."""

    def __init__(self, detail: str, retry_after: float | None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def build_card(alert: AlertCard, thumbnail_width: int = 240, max_bytes: int = 26_000) -> dict[str, Any]:
    """An Adaptive Card 1.4: title, facts, snapshot thumbnails (as many as fit), join button."""
    header = f"[DRILL] {alert.title}" if alert.drill else alert.title
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": header, "size": "Large", "weight": "Bolder", "wrap": True,
         "color": "Warning" if alert.drill else "Attention"},
        {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in alert.facts]},
    ]
    card: dict[str, Any] = {
        "type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4", "msteams": {"width": "Full"}, "body": body,
    }
    if alert.join_url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Join the crisis meeting", "url": alert.join_url}]
    images: list[dict[str, Any]] = []
    for snap in alert.snapshots:
        for width in (thumbnail_width, thumbnail_width * 2 // 3, thumbnail_width // 2):  # shrink before dropping
            thumb = thumbnail(snap.image.data, width)
            if thumb is None:
                break
            image = {"type": "Image", "url": thumb, "altText": f"{snap.camera} {snap.taken_at:%H:%M:%S}"}
            trial = {**card, "body": [*body, {"type": "ImageSet", "imageSize": "Medium", "images": [*images, image]}]}
            if len(json.dumps(message(trial))) <= max_bytes:
                images.append(image)
                break
        else:
            log.info("snapshot of %s left out of the card: it would exceed %d bytes", snap.camera, max_bytes)
    if images:
        card["body"] = [*body, {"type": "ImageSet", "imageSize": "Medium", "images": images}]
    return card


def message(card: dict[str, Any]) -> dict[str, Any]:
    """The envelope the Workflows webhook trigger expects."""
    return {"type": "message", "attachments": [{"contentType": CARD_TYPE, "contentUrl": None, "content": card}]}


def thumbnail(data: bytes, width: int) -> str | None:
    """A small JPEG data URI (Teams renders data URIs in cards; URLs would need public hosting)."""
    try:
        with Image.open(io.BytesIO(data)) as source:
            img = source.convert("RGB")
            img.thumbnail((width, width))
            out = io.BytesIO()
            img.save(out, "JPEG", quality=50, optimize=True)
    except (OSError, ValueError) as exc:
        log.info("snapshot is not a readable image: %s", exc)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    return str(error)[:200]
