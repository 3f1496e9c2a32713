"""Schema of `playbooks/*.yaml`: when a playbook applies (`match`) and what it does (`steps`)."""

from __future__ import annotations

from datetime import time
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from crisisbot.config.types import Identifier, Language, PlainText, Seconds, Strict
from crisisbot.lifecycle.schema import PlaybookLifecycle
from crisisbot.models import EventKind, Severity
from crisisbot.steps import step_specs
from crisisbot.steps.base import StepSpec

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Window(Strict):
    """A weekly time window in the site's time zone; `end` before `start` spans midnight."""

    days: list[Day] = Field(default_factory=lambda: list(DAYS))
    start: time = time(0, 0)
    end: time = time(23, 59, 59)


class Match(Strict):
    """Every listed criterion must hold; an omitted criterion matches anything."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)  # the sets below stay true

    sources: list[str] | None = None
    sites: list[str] | None = None
    zones: list[str] | None = None
    inputs: list[str] | None = None
    kinds: list[EventKind] | None = None
    min_severity: Severity | None = None
    windows: list[Window] | None = Field(None, description="local time windows of the site")
    drill: bool | None = Field(None, description="true: only drills; false: never drills")

    # the lists as sets, for matching: a playbook may list thousands of sites
    _sets: dict[str, frozenset[object]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _as_sets(self) -> "Match":
        self._sets = {name: frozenset(values) for name in ("sources", "sites", "zones", "inputs", "kinds")
                      if (values := getattr(self, name)) is not None}
        return self

    def criteria(self) -> dict[str, frozenset[object]]:
        """The listed criteria as sets (read without pydantic's slower attribute path)."""
        return self.__pydantic_private__["_sets"]  # type: ignore[index]


if TYPE_CHECKING:
    Step = StepSpec  # the checker sees the base every action's model extends
else:  # every installed step's Config, told apart by `action` (entry points: crisisbot/steps/__init__.py)
    Step = Annotated[Union[tuple(step_specs().values())], Field(discriminator="action")]


class Playbook(Strict):
    id: Identifier
    name: PlainText
    description: str = ""
    priority: int = Field(
        0, description="when several playbooks match, the highest priority runs; ties: file order"
    )
    enabled: bool = True
    language: Language | None = Field(None, description="default: the site's language")
    join_window: Seconds | None = Field(
        None, description="alarms within this delay join the open incident (default from config)"
    )
    match: Match = Field(default_factory=Match)
    steps: list[Step] = Field(min_length=1)
    lifecycle: PlaybookLifecycle = Field(default_factory=PlaybookLifecycle, description="cancel window, restores, stand-down")

    @model_validator(mode="after")
    def _name_steps(self) -> "Playbook":
        for index, step in enumerate(self.steps):
            if step.id is None:
                step.id = f"{index + 1}-{step.action}"
        return self
