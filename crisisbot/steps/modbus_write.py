"""Switch a Modbus coil from a playbook: light the 'help is coming' lamp, silence a siren.

Writes through a `modbus-coil` connector, whose connection is the device's shared hub: a
`modbus` trigger polling the same gateway or bus takes turns on it (crisisbot/hubs/modbus.py).
The older form, `trigger:` + `device:`, names a device of a modbus trigger and writes
through the same hub, never through the running trigger. Writing a coil is idempotent, so
an unreachable device is retried until the step deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Awaitable, Callable, Literal

from pydantic import BaseModel, Field, model_validator

from crisisbot.config.types import Identifier, Reference
from crisisbot.errors import PermanentError, TransientError
from crisisbot.hubs.modbus import CoilWriter, ModbusDevices, acquire
from crisisbot.retry import RetryPolicy
from crisisbot.steps.base import StepContext, StepFailed, StepSpec, StepType

RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)  # pauses between tries: a gateway rebooting takes seconds


@dataclass(frozen=True)
class _Scheduled(RetryPolicy):
    """The one retry policy, with its pauses read from a fixed schedule rather than doubled:
    the coil's schedule (0.2 s to 5 s in five steps) predates the policy and operators rely on it."""

    delays: tuple[float, ...] = ()

    def pause(self, failures: int) -> float:
        return self.delays[min(failures, len(self.delays)) - 1] if self.delays else 0.0


COIL_RETRY = _Scheduled(first=RETRY_DELAYS[0], delays=RETRY_DELAYS, attempts=len(RETRY_DELAYS) + 1)


class ModbusWriteStep(StepSpec):
    action: Literal["modbus_write"]
    connector: Annotated[Identifier | None, Reference("connectors", of="coil")] = Field(
        None, description="a modbus-coil connector under `connectors:`")
    trigger: Identifier | None = Field(
        None, description="older form, with `device`: a modbus trigger under `triggers:`")
    device: Identifier | None = Field(None, description="older form: a device in that trigger's `devices:`")
    address: int = Field(ge=0, le=65535, description="0-based coil address")
    value: bool = Field(description="true: switch on, false: switch off")

    @model_validator(mode="after")
    def _target(self) -> "ModbusWriteStep":
        if (self.connector is None) == (self.trigger is None) or (self.trigger is None) != (self.device is None):
            raise ValueError("give `connector` (a modbus-coil connector), or `trigger` and `device`")
        return self


class CoilWritten(BaseModel):
    connector: str | None = None
    trigger: str | None = None
    device: str | None = None
    address: int
    value: bool
    attempts: int


def _writer(ctx: StepContext, spec: ModbusWriteStep) -> Callable[[], Awaitable[None]]:
    """How to switch the coil: through the connector, or the hub of the trigger's device."""
    if spec.connector is not None:
        coil = ctx.connector(spec.connector)
        if not isinstance(coil, CoilWriter):
            raise StepFailed(f"no modbus-coil connector named {spec.connector!r}")
        return lambda: coil.write_coil(spec.address, spec.value)
    pc = ctx.services.bundle.triggers.get(spec.trigger) if spec.trigger is not None else None
    if pc is None or not isinstance(pc.config, ModbusDevices):
        raise StepFailed(f"no modbus trigger named {spec.trigger!r}")
    link = pc.config.devices.get(spec.device) if spec.device is not None else None
    if link is None:
        raise StepFailed(f"modbus trigger {spec.trigger} has no device {spec.device!r}")

    hubs = ctx.services.hubs

    async def write() -> None:
        hub = acquire(hubs, link)
        try:
            await hub.write_coil(link.unit, spec.address, spec.value)
        finally:
            hubs.release(link.link_key())

    return write


async def run(ctx: StepContext, spec: ModbusWriteStep) -> CoilWritten:
    write = _writer(ctx, spec)
    target = spec.connector or f"{spec.trigger}/{spec.device}"
    tries = 0

    def warn(exc: BaseException, pause: float) -> None:
        ctx.log.warning("coil %s on %s: %s; retrying in %.1fs", spec.address, target, exc, pause)

    try:
        async for attempt in COIL_RETRY.retrying(retry_on=TransientError, before_sleep=warn):
            with attempt:
                tries = attempt.retry_state.attempt_number
                await write()
    except TransientError as exc:
        raise StepFailed(f"coil {spec.address} on {target}: {exc} ({tries} attempts)") from exc
    except PermanentError as exc:
        raise StepFailed(f"coil {spec.address} on {target}: {exc}") from exc
    return CoilWritten(connector=spec.connector, trigger=spec.trigger, device=spec.device,
                       address=spec.address, value=spec.value, attempts=tries)

STEP = StepType(ModbusWriteStep, run, CoilWritten)
