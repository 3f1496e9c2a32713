"""The daemon's health: named checks gathered into up / degraded / down.

Anyone may learn the verdict (`GET /health`, for load balancers and monitoring); the
details — last alarm time, queue, trigger counters — only with the health token
(`web.health_token`), since an intruder could otherwise watch whether their entry
raised an alarm. Parts of the daemon add their own check with `HealthChecks.add`:
delivery backlogs (degraded while messages wait), trigger counters, pools.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal

log = logging.getLogger(__name__)

Status = Literal["up", "degraded", "down"]
ORDER: dict[str, int] = {"up": 0, "degraded": 1, "down": 2}


@dataclass(slots=True)
class Check:
    status: Status
    details: dict[str, Any] = field(default_factory=dict)


CheckFn = Callable[[], Awaitable[Check]]


class HealthChecks:
    def __init__(self) -> None:
        self._checks: dict[str, CheckFn] = {}

    def add(self, name: str, check: CheckFn) -> None:
        """Register (or replace) a named check; it should answer quickly and not raise."""
        self._checks[name] = check

    def __contains__(self, name: object) -> bool:
        return name in self._checks

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)

    async def gather(self) -> tuple[Status, dict[str, dict[str, Any]]]:
        """The worst status of all checks, and each check's status and details."""
        worst: Status = "up"
        report: dict[str, dict[str, Any]] = {}
        for name, check in list(self._checks.items()):
            try:
                result = await check()
            except Exception as exc:  # noqa: BLE001 - a failing check is a verdict, not a crash
                log.exception("health check %s failed", name)
                result = Check("down", {"error": f"{type(exc).__name__}: {exc}"})
            report[name] = {"status": result.status, **result.details}
            if ORDER[result.status] > ORDER[worst]:
                worst = result.status
        return worst, report
