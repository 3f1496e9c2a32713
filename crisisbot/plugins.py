"""Find trigger and connector classes and playbook steps through entry points.

Built-in and third-party plugins are registered the same way (pyproject entry
points), so a third party needs no change here. Nothing is imported until asked for.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any
from crisisbot.errors import UnknownPlugin  # noqa: F401 - re-exported for existing importers

TRIGGERS = "crisisbot.triggers"
CONNECTORS = "crisisbot.connectors"
STEPS = "crisisbot.steps"
CHECKS = "crisisbot.checks"  # `crisisbot check <service>`


@lru_cache(maxsize=None)
def available(group: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=group)}


@lru_cache(maxsize=None)
def load(group: str, name: str) -> type:
    eps = available(group)
    if name not in eps:
        raise UnknownPlugin(group, name, sorted(eps))
    return eps[name].load()
