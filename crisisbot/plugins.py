"""Find trigger and connector classes and playbook steps through entry points.

Built-in and third-party plugins are registered the same way (pyproject entry
points), so a third party needs no change here. Nothing is imported until asked for.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import ClassVar, Protocol

from pydantic import BaseModel

from crisisbot.errors import UnknownPlugin  # noqa: F401 - re-exported for existing importers

TRIGGERS = "crisisbot.triggers"
CONNECTORS = "crisisbot.connectors"
STEPS = "crisisbot.steps"
CHECKS = "crisisbot.checks"  # `crisisbot check <service>`


class Plugin(Protocol):
    """What every trigger, connector and step class offers: the model of its own YAML options."""

    Config: ClassVar[type[BaseModel]]


@lru_cache(maxsize=None)
def available(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


@lru_cache(maxsize=None)
def load(group: str, name: str) -> type[Plugin]:
    eps = available(group)
    if name not in eps:
        raise UnknownPlugin(group, name, sorted(eps))
    loaded: type[Plugin] = eps[name].load()
    return loaded
