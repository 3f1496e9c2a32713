"""Switch a Modbus coil from a playbook: light the 'help is coming' lamp, silence a siren.

Goes through the Modbus trigger that already polls the device, so one connection
(and one RS-485 bus master) serves both. Writing a coil is idempotent, so an
unreachable device is retried until the step deadline.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, Field

from crisisbot.config.types import Identifier
from crisisbot.errors import TransientError
from crisisbot.steps.base import StepContext, StepFailed, StepSpec, StepType

RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)


class ModbusWriteStep(StepSpec):
    action: Literal["modbus_write"]
    trigger: Identifier = Field(description="name of the modbus trigger under `triggers:`")
    device: Identifier = Field(description="device name in that trigger's `devices:`")
    address: int = Field(ge=0, le=65535, description="0-based coil address")
    value: bool = Field(description="true: switch on, false: switch off")


class CoilWritten(BaseModel):
    trigger: str
    device: str
    address: int
    value: bool
    attempts: int


async def run(ctx: StepContext, spec: ModbusWriteStep) -> CoilWritten:
    trigger = ctx.runtime.triggers.get(spec.trigger)
    write = getattr(trigger, "write_coil", None)
    if write is None:
        raise StepFailed(f"no running modbus trigger named {spec.trigger!r}")
    attempt = 0
    while True:
        attempt += 1
        try:
            await write(spec.device, spec.address, spec.value)
        except TransientError as exc:
            if attempt > len(RETRY_DELAYS):
                raise StepFailed(f"coil {spec.address} on {spec.device}: {exc} ({attempt} attempts)") from exc
            delay = RETRY_DELAYS[attempt - 1]
            ctx.log.warning("coil %s on %s: %s; retrying in %.1fs", spec.address, spec.device, exc, delay)
            await asyncio.sleep(delay)
            continue
        return CoilWritten(trigger=spec.trigger, device=spec.device, address=spec.address,
                           value=spec.value, attempts=attempt)


STEP = StepType(ModbusWriteStep, run, CoilWritten)
