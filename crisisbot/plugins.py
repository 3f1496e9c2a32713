"""Find trigger and connector classes and playbook steps through entry points.

Built-in and third-party plugins are registered the same way (pyproject entry
points), so a third party needs no change here. Nothing is imported until asked for,
and a built-in plugin whose optional packages are missing says which extra installs them:
its entry point names the extra (`teams = "connectors.teams:TeamsMeetings [teams]"`).
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import ClassVar, Protocol

from pydantic import BaseModel

from crisisbot.errors import MissingExtra, UnknownPlugin  # noqa: F401 - re-exported for existing importers
from crisisbot.extras import extra_of, require

TRIGGERS = "crisisbot.triggers"
CONNECTORS = "crisisbot.connectors"
STEPS = "crisisbot.steps"
CHECKS = "crisisbot.checks"  # `crisisbot check <service>`
KINDS = {TRIGGERS: "trigger", CONNECTORS: "connector", STEPS: "step", CHECKS: "check"}  # for messages


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
    ep, what = eps[name], f"{KINDS.get(group, 'plugin')} '{name}'"
    ours = getattr(ep.dist, "name", None) == "crisisbot"  # a third party's extras are its own to name
    for needed in ep.extras if ours else ():
        require(needed, what)  # before importing: some import their heavy packages only once started
    try:
        loaded: type[Plugin] = ep.load()
    except ModuleNotFoundError as exc:
        if not ours or (extra := extra_of(exc)) is None:
            raise
        raise MissingExtra(what, extra, exc.name) from exc
    return loaded
