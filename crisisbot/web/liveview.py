"""Live view: a personal, expiring, revocable link showing the incident's latest frames.

The token in the path is the only credential: it names the incident and the person, so
every view is audited under their name. Links made for external recipients carry
another purpose and get faces blurred, like their emails. Nothing is cached by the
browser or leaked through the Referer header. Links stop working `grace` seconds
after the incident is stood down or cancelled, and operators can revoke one person's
links at any time; refused attempts are rate-limited per address and audited as counts.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route

from crisisbot.executors import PoolFull
from crisisbot.store.images import ImageNotFound, ImageStore
from crisisbot.imaging import blur_faces, blur_faces_async
from crisisbot.links import Claims, LinkError, LinkExpired, Signer
from crisisbot.models import Recipient
from crisisbot.web.access import Revocations
from crisisbot.web.refusals import RefusalAudit, Refusals
from crisisbot.errors import LinkRefused as Refused  # noqa: F401 - re-exported for existing importers

log = logging.getLogger(__name__)

LIVEVIEW = "liveview"  # originals, for the crisis committee
LIVEVIEW_BLURRED = "liveview.blurred"  # faces blurred, for external recipients
DEFAULT_TTL = 24 * 3600.0
BLUR_CACHE = 256  # blurred frames kept in memory

Audit = Callable[[str, "str | None", dict[str, Any]], Awaitable[object]]
EndedAt = Callable[[str], Awaitable["datetime | None"]]  # when an incident was closed, None if still open

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
}


def liveview_link(signer: Signer, base_url: str, incident_id: str, recipient: Recipient,
                  ttl: float = DEFAULT_TTL, mount: str = "/live") -> str:
    """The personal link to put in a recipient's email."""
    purpose = LIVEVIEW_BLURRED if recipient.external else LIVEVIEW
    token = signer.sign(incident_id, recipient.person_id, purpose, ttl)
    return f"{base_url.rstrip('/')}{mount}/{token}"


def _utcnow() -> datetime:
    from crisisbot.models import utcnow

    return utcnow()


def _page(title: str, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
        f"content='width=device-width, initial-scale=1'>{meta}<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:1rem;background:#111;color:#eee}"
        "main{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1rem}"
        "figure{margin:0}img{width:100%;height:auto;background:#222}figcaption{font-size:.9rem;color:#aaa}"
        f"</style></head><body>{body}</body></html>"
    )


def liveview_routes(signer: Signer, image_store: ImageStore, audit: Audit, *,
                    revocations: Revocations | None = None, refresh: int = 5,
                    path: str = "/live", refusals: Refusals | None = None,
                    ended_at: EndedAt | None = None, grace: float = 900.0,
                    now: Callable[[], datetime] | None = None,
                    offload: Callable[..., Awaitable[Any]] | None = None) -> Mount:
    """Routes `GET {path}/{token}` (the page) and `GET {path}/{token}/img/{image_id}` (one frame).
    `offload` runs face blurring on a pool kept apart from the alarm path (the daemon's `web` pool)."""
    refusals = refusals or Refusals(RefusalAudit(audit))

    async def check(request: Request) -> Claims:
        client = request.client.host if request.client else None
        if refusals.blocked(client):
            raise Refused(429, "Too many invalid links from your address; wait a minute.")
        token = request.path_params["token"]
        claims = None
        for purpose in (LIVEVIEW, LIVEVIEW_BLURRED):
            try:
                claims = signer.verify(token, purpose)
                break
            except LinkExpired as exc:
                raise Refused(410, "This link has expired. Ask the crisis team for a new one.") from exc
            except LinkError:
                continue
        if claims is None:
            raise Refused(403, "This link is not valid.")
        reason = revocations.reason(token, claims) if revocations else None
        if reason is not None:
            raise Refused(403, "This link has been revoked.", claims)
        ended = await ended_at(claims.incident_id) if ended_at is not None else None
        if ended is not None and (now or _utcnow)() >= ended + timedelta(seconds=grace):
            raise Refused(410, "The incident is over; this link no longer works.", claims)
        return claims

    async def refuse(request: Request, exc: Refused) -> Response:
        claims = exc.claims
        client = request.client.host if request.client else None
        if exc.status == 429:
            refusals.audit.note("liveview.throttled", None, client)
        else:
            refusals.refuse("liveview.refused", claims.incident_id if claims else None, client,
                            f"{exc.status} {claims.recipient_id if claims else ''}".strip())
        headers = {**HEADERS, "Retry-After": "60"} if exc.status == 429 else HEADERS
        return HTMLResponse(_page("Live view", f"<p>{html.escape(str(exc))}</p>"), exc.status, headers=headers)

    async def page(request: Request) -> Response:
        try:
            claims = await check(request)
        except Refused as exc:
            return await refuse(request, exc)
        images = await image_store.latest(claims.incident_id)
        await audit("liveview.viewed", claims.incident_id, {
            "recipient": claims.recipient_id, "blurred": claims.purpose == LIVEVIEW_BLURRED,
            "images": [i.id for i in images], "client": request.client.host if request.client else None,
        })
        token = request.path_params["token"]
        figures = "".join(
            f'<figure><img src="{html.escape(token)}/img/{html.escape(i.id)}" alt="{html.escape(i.camera)}">'
            f"<figcaption>{html.escape(i.camera)} — {i.taken_at:%Y-%m-%d %H:%M:%S} UTC</figcaption></figure>"
            for i in images
        ) or "<p>No image yet; this page refreshes by itself.</p>"
        body = (f"<h1>Incident {html.escape(claims.incident_id)}</h1><main>{figures}</main>"
                f"<p><small>Personal link, valid until {claims.expires_at:%Y-%m-%d %H:%M} UTC. "
                "Every view is recorded.</small></p>")
        return HTMLResponse(_page("Live view", body, refresh), headers=HEADERS)

    # blurred copies are computed once per image (pages refresh every few seconds)
    blurred_cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
    blurring = asyncio.Semaphore(2)

    async def image(request: Request) -> Response:
        try:
            claims = await check(request)
        except Refused as exc:
            return await refuse(request, exc)
        image_id = request.path_params["image_id"]
        try:
            meta, data = await image_store.read(claims.incident_id, image_id)
        except ImageNotFound:
            return Response("not found", 404, headers=HEADERS)
        blurred = claims.purpose == LIVEVIEW_BLURRED
        if blurred:
            key = (claims.incident_id, image_id)
            if key not in blurred_cache:
                async with blurring:  # detection costs ~1 s of CPU a frame: never more than two at once
                    if key not in blurred_cache:
                        try:
                            blurred_cache[key] = (await offload(blur_faces, data) if offload is not None
                                                  else await blur_faces_async(data))
                        except PoolFull:
                            return Response("busy, try again", 503, headers={**HEADERS, "Retry-After": "2"})
                        while len(blurred_cache) > BLUR_CACHE:
                            blurred_cache.popitem(last=False)
            data = blurred_cache[key]
        await audit("liveview.image", claims.incident_id, {
            "recipient": claims.recipient_id, "image": image_id, "camera": meta.camera, "blurred": blurred,
        })
        return Response(data, media_type="image/jpeg", headers=HEADERS)

    return Mount(path, routes=[
        Route("/{token}", page, methods=["GET"], name="page"),
        Route("/{token}/img/{image_id}", image, methods=["GET"], name="image"),
    ], name="liveview")
