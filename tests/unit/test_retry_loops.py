"""The loops that went onto the one retry policy keep their behaviour: the `modbus_write`
step's schedule, attempt count and errors; the trigger-state writer that keeps a refused
write in memory and tries again."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from crisisbot.errors import PermanentError, TransientError
from crisisbot.steps import modbus_write
from crisisbot.steps.base import StepFailed
from triggers.state import TriggerState


class FlakyCoil:
    """A coil connector that fails with the given errors first, then switches."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.written: list[tuple[int, bool]] = []

    async def write_coil(self, address: int, value: bool) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.written.append((address, value))


def step_run(coil: FlakyCoil) -> Any:
    ctx = SimpleNamespace(connector={"relays": coil}.get, log=logging.getLogger("test.modbus_write"))
    spec = modbus_write.ModbusWriteStep(action="modbus_write", connector="relays", address=3, value=True)
    return modbus_write.run(ctx, spec)  # type: ignore[arg-type]  # the step reads only these two


def test_coil_schedule_is_kept():
    policy = modbus_write.COIL_RETRY
    assert [policy.pause(n) for n in range(1, 6)] == [0.2, 0.5, 1.0, 2.0, 5.0]
    assert policy.attempts == 6  # the first try and five more


def test_an_unreachable_coil_is_tried_again_and_the_attempts_reported(caplog: pytest.LogCaptureFixture):
    coil = FlakyCoil([TransientError("gateway rebooting"), TransientError("gateway rebooting")])
    with caplog.at_level(logging.WARNING, "test.modbus_write"):
        written = asyncio.run(step_run(coil))
    assert written.attempts == 3 and coil.written == [(3, True)]
    assert [m.rsplit("retrying in ", 1)[-1] for m in caplog.messages] == ["0.2s", "0.5s"]


def test_a_refused_coil_fails_the_step_at_once():
    coil = FlakyCoil([PermanentError("illegal data address"), TransientError("never reached")])
    with pytest.raises(StepFailed, match="coil 3 on relays: illegal data address"):
        asyncio.run(step_run(coil))
    assert len(coil.failures) == 1  # not tried again


def test_state_writer_keeps_a_refused_write_and_tries_again(caplog: pytest.LogCaptureFixture):
    saved: list[dict[str, Any]] = []
    refusals = [RuntimeError("database is locked")]

    async def save(trigger: str, changes: dict[str, Any]) -> None:
        if refusals:
            raise refusals.pop(0)
        saved.append(changes)

    async def main() -> TriggerState:
        state = TriggerState("panel", save=save)
        state.put("held", ["btn1"])
        await asyncio.sleep(0)  # the writer's first try is refused
        state.put("silent", True)  # a newer change joins the refused one
        await state.flush(timeout=10)
        return state

    with caplog.at_level(logging.WARNING, "triggers.state"):
        state = asyncio.run(main())
    assert state.write_errors == 1 and any("database is locked" in m for m in caplog.messages)
    assert {k: v for batch in saved for k, v in batch.items()} == {"held": ["btn1"], "silent": True}
