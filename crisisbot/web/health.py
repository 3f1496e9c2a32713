"""GET /health: the verdict for everyone, the details only with the health token."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crisisbot.health import Check, Status

if TYPE_CHECKING:
    from crisisbot.lifecycle.service import Lifecycle
    from crisisbot.runtime import Runtime

SUPERVISION: dict[str, Status] = {"ok": "up", "degraded": "degraded"}  # anything else the supervisor says is "down"


def supervision_check(lifecycle: "Lifecycle | None"):
    """The lifecycle supervisor's verdict (store, queue, timers) as a named check."""

    async def check() -> Check:
        if lifecycle is None:
            return Check("down", {"state": "starting"})
        _, body = await lifecycle.supervision.health()
        details = {k: v for k, v in body.items() if k != "status"}
        return Check(SUPERVISION.get(str(body.get("status")), "down"), details)

    return check


def pools_check(runtime: "Runtime"):
    """The non-alarm pools: degraded while one of them refuses work (a login flood)."""
    seen: dict[str, int] = {}

    async def check() -> Check:
        stats = runtime.executors.stats()
        refusing = [name for name, s in stats.items() if s["refused"] > seen.get(name, 0)]
        seen.update({name: s["refused"] for name, s in stats.items()})
        return Check("up", {"pools": stats, "refusing_since_last_check": refusing})

    return check


def authorized(request: Request, runtime: "Runtime") -> bool:
    token = runtime.bundle.config.web.health_token
    given = request.headers.get("authorization", "")
    if token is None or not given.lower().startswith("bearer "):
        return False
    return hmac.compare_digest(given[7:].strip().encode(), token.get_secret_value().encode())


def health_route(runtime: "Runtime") -> Route:
    """The daemon registers its own checks at start (supervision, inputs, pools…); the web
    process has the daemon's verdict as its check "daemon" and adds its own pools here."""
    if "pools" not in runtime.health:
        runtime.health.add("pools", pools_check(runtime))

    async def health(request: Request) -> Response:
        status, checks = await runtime.health.gather()
        code = 200 if status == "up" else 503
        if not authorized(request, runtime):
            return JSONResponse({"status": status}, code, headers={"Cache-Control": "no-store"})
        return JSONResponse({"status": status, "checks": checks}, code, headers={"Cache-Control": "no-store"})

    return Route("/health", health, methods=["GET"])
