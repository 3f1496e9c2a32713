"""What each input received and refused, for people: `crisisbot status` and the
authenticated /health payload read it from here, so both show the same counters.

Counters (`Trigger.stats`) count since the input last started; refusals are named
by reason (bad_frame, unknown_account, unknown_site, oversized…), see docs/triggers.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from crisisbot.health import Check

if TYPE_CHECKING:
    from crisisbot.runtime import Runtime


def input_counters(runtime: "Runtime") -> dict[str, dict[str, Any]]:
    """Per input name: its type and counters (a JSON-able copy, safe to serialize later)."""
    out: dict[str, dict[str, Any]] = {}
    for name, trigger in sorted(runtime.triggers.items()):
        entry: dict[str, Any] = {"type": getattr(trigger.config, "type", type(trigger).__name__),
                                 "counters": dict(trigger.stats)}
        if trigger.state.write_errors:  # every Trigger has stats and a state (triggers/base.py)
            entry["state_write_errors"] = trigger.state.write_errors
        out[name] = entry
    return out


def inputs_check(runtime: "Runtime") -> Callable[[], Awaitable[Check]]:
    """The counters as a named /health check (details for authenticated callers only)."""

    async def check() -> Check:
        return Check("up", {"triggers": input_counters(runtime)})

    return check


def format_counters(inputs: dict[str, dict[str, Any]]) -> list[str]:
    """Lines for a terminal: one block per input, every counter, zeros included (a zero
    is an answer too: nothing was refused)."""
    if not inputs:
        return ["no inputs configured (triggers: in config.yaml)"]
    lines: list[str] = []
    for name, entry in inputs.items():
        lines.append(f"{name} ({entry.get('type')})")
        counters = entry.get("counters") or {}
        width = max((len(k) for k in counters), default=0)
        lines.extend(f"  {key:<{width}}  {value}" for key, value in counters.items())
        if entry.get("state_write_errors"):
            lines.append(f"  state not saved: {entry['state_write_errors']} failed write(s), see the log")
    return lines
