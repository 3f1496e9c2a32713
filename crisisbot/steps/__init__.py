"""The table of playbook step actions.

A step module defines one `StepSpec` subclass (with `action: Literal["name"]`),
`async def run(spec, ctx) -> output` and, if its output must survive a restart
(a meeting must not be opened twice), `to_json(output)` / `from_json(data)`.
Add the module to `STEP_MODULES` to make the action available in playbooks.
"""

from __future__ import annotations

from types import ModuleType

from crisisbot.steps import channel_card, email, escalate, follow_up, meeting, modbus_write, snapshot
from crisisbot.steps.base import StepSpec

STEP_MODULES: dict[str, ModuleType] = {
    "meeting": meeting,
    "snapshot": snapshot,
    "email": email,
    "escalate": escalate,
    "channel_card": channel_card,
    "modbus_write": modbus_write,
    "follow_up_snapshots": follow_up,
}


def _spec(module: ModuleType) -> type[StepSpec]:
    return next(
        v for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, StepSpec) and v is not StepSpec
        and v.__module__ == module.__name__
    )


STEP_SPECS: dict[str, type[StepSpec]] = {name: _spec(m) for name, m in STEP_MODULES.items()}
