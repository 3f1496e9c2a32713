"""Demo alarm source: presses a virtual panic button, so the quick start needs no hardware.

It presses only under `crisisbot demo`: `crisisbot run` leaves it unstarted, because a
daemon restarted on the shipped configuration with a real relay would otherwise email
a fake panic to the real committee at every start.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from crisisbot.config.types import Reference, Seconds, Strict
from crisisbot.models import Alarm, EventKind, Severity
from triggers.base import Trigger


class DemoConfig(Strict):
    type: Literal["demo"]
    site: Annotated[str, Reference("sites")]
    zone: str | None = None
    input: str | None = "demo-button"
    label: str = "Bouton panique (démo)"
    kind: EventKind = EventKind.panic
    severity: Severity = Severity.critical
    delay: Seconds = Field(1.0, description="first press after start-up")
    every: Seconds | None = Field(None, description="press again at this interval (default: once)")


class DemoTrigger(Trigger):
    Config = DemoConfig
    config: DemoConfig
    demo_only: ClassVar[bool] = True  # the daemon starts it under `crisisbot demo` only

    async def start(self) -> None:
        self.pressed: asyncio.Future[str] = asyncio.get_running_loop().create_future()  # first alarm id
        self._task = asyncio.create_task(self._press(), name=f"demo-{self.name}")

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _press(self) -> None:
        await asyncio.sleep(self.config.delay)
        while True:
            c = self.config
            alarm = Alarm(source=self.name, site=c.site, zone=c.zone, input=c.input, label=c.label,
                          kind=c.kind, severity=c.severity, raw="demo button pressed")
            alarm_id = await self.sink.submit(alarm)
            self.log.info("demo alarm %s submitted", alarm_id)
            if not self.pressed.done():
                self.pressed.set_result(alarm_id)
            if c.every is None:
                return
            await asyncio.sleep(c.every)
