"""The playbook step actions, found through the `crisisbot.steps` entry-point group.

A step module defines one `StepSpec` subclass (with `action: Literal["name"]`),
`async def run(ctx, config) -> Output` and a `STEP = StepType(Config, run, Output)`
that pyproject.toml registers, e.g. `meeting = "crisisbot.steps.meeting:STEP"`.
Built-in and third-party steps are registered the same way (docs/playbooks.md).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from crisisbot.errors import StepsNotInstalled
from crisisbot.plugins import STEPS, available
from crisisbot.steps.base import StepSpec, StepType
from crisisbot.store.base import StepRecord

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def step_types() -> dict[str, StepType]:
    """Every installed step by action name. A plugin that fails to load is logged and left
    out (its action is then an unknown action in `validate`), never a crash of the daemon."""
    entries = available(STEPS)
    if not entries:
        raise StepsNotInstalled()
    found: dict[str, StepType] = {}
    for name, entry in sorted(entries.items()):  # a stable order: the JSON schema is committed
        try:
            step = entry.load()
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not take the others down
            log.error("step plugin %r (%s) cannot be imported: %s: %s", name, entry.value, type(exc).__name__, exc)
            continue
        if not isinstance(step, StepType):
            log.error("step plugin %r (%s) is not a crisisbot.steps.base.StepType", name, entry.value)
        elif step.action != name:
            log.error("step plugin %r (%s) declares action %r: the entry-point name must match",
                      name, entry.value, step.action)
        else:
            found[name] = step
    return found


def step_type(action: str) -> StepType:
    return step_types()[action]


def step_specs() -> dict[str, type[StepSpec]]:
    """The `Config` model of every action: the playbook schema's discriminated union."""
    return {name: step.Config for name, step in step_types().items()}


def kept_output(step: StepSpec, record: StepRecord) -> Any:
    """A done step's journaled output as its type, or None when it was not kept (or was kept
    in a shape this version cannot read: then it counts as not kept, and is logged)."""
    kind = step_type(step.action)
    if not kind.journal or record.output is None:
        return None
    try:
        return kind.load(record.output)
    except ValidationError as exc:
        log.warning("step %s: its journaled output is unreadable, treated as not kept: %s",
                    step.id, str(exc).splitlines()[0])
        return None
