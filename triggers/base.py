"""The small interface every alarm input implements.

A trigger receives an `AlarmSink` and pushes normalized `Alarm`s into it. The sink
returns only once the alarm is durably stored, so a trigger acknowledges its panel
*after* `await sink.submit(...)` and never before. Registered under the
`crisisbot.triggers` entry-point group, e.g.

    [project.entry-points."crisisbot.triggers"]
    webhook = "triggers.webhook:WebhookTrigger"
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from crisisbot.hubs import Hubs
from crisisbot.models import Alarm, EventKind, Severity
from crisisbot.store.base import Nonce
from triggers.state import TriggerState


class AlarmSink(Protocol):
    async def submit(self, alarm: Alarm, nonce: Nonce | None = None) -> str:
        """Store the alarm durably, queue it for its playbook, return the alarm id.

        A `nonce` (replay-protection token) is recorded in the same transaction as the
        alarm, so a failed store never burns it; raises `Replayed` if it was used."""
        ...

    def known_site(self, site: str) -> bool:
        """Whether the configuration defines this site (inputs that compute it check it)."""
        ...


class Trigger(ABC):
    """An input. `stats` counts what it received and refused (shown by `crisisbot status`
    and the authenticated /health); `state` is what it must remember across reloads
    and restarts (see triggers/state.py)."""

    Config: ClassVar[type[BaseModel]]
    demo_only: ClassVar[bool] = False  # True: started under `crisisbot demo` only (triggers/demo.py)
    # modules it imports on first use rather than at start, imported in the background
    # right after the daemon is ready (crisisbot/warmup.py)
    deferred_imports: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, config: BaseModel, sink: AlarmSink, *, state: TriggerState | None = None) -> None:
        self.name = name
        self.config = config
        self.sink = sink
        self.state = state if state is not None else TriggerState(name)
        self.stats: dict[str, int] = {}
        # device connections shared with connectors (a Modbus hub): the daemon lends the
        # runtime's before start(); a trigger built on its own has its own
        self.hubs = Hubs()
        self.log = logging.getLogger(f"crisisbot.trigger.{name}")

    @abstractmethod
    async def start(self) -> None:
        """Begin listening/polling; return once ready (background work in tasks)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop listening and wait for in-flight alarms to be stored."""

    async def close(self) -> None:
        """Stop, then make sure what the trigger remembers is saved (the daemon calls this)."""
        try:
            await self.stop()
        finally:
            await self.state.flush()

    async def submit_link_alarm(self, kind: EventKind, *, site: str, input: str, label: str, raw: str,
                                details: dict[str, Any], what: str, errors: str, counted: str,
                                zone: str | None = None) -> bool:
        """Store the `input_fault` of a device or panel gone silent, or its `restore`
        (`details` gets `restores: input_fault`); False if the store refused it (counted
        under `errors`, logged; the caller tries again later). Each input keeps its own
        counter names (`counted`, `errors`): `crisisbot status` shows them to users."""
        silent = kind is EventKind.input_fault
        if not silent:
            details = {**details, "restores": EventKind.input_fault.value}
        alarm = Alarm(source=self.name, site=site, zone=zone, input=input, kind=kind,
                      severity=Severity.major if silent else Severity.info, label=label, details=details, raw=raw)
        try:
            await self.sink.submit(alarm)
        except Exception:
            self.stats[errors] += 1
            self.log.exception("could not store the supervision alarm of %s", what)
            return False
        self.stats[counted] += 1
        return True
