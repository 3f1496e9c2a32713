"""YAML schema of the lifecycle options: playbook `lifecycle:`, the escalation rule,
duty schedules on contact groups and the `lifecycle:` section of config.yaml.

Kept apart from the core schemas (which only reference these models) so that the
core files need one-line additions only.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Literal, Protocol, runtime_checkable

from pydantic import Field, model_validator

from crisisbot.config.types import Identifier, Seconds, Strict
from crisisbot.models import EventKind, Severity

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Panels and I/O modules report events (and repeat them); only people press buttons.
# The real trigger types come first: `sia-dc09` (SIA and Contact ID over IP) and
# `modbus` (panel outputs and contacts wired to I/O modules).
PANEL_TRIGGER_TYPES = ["sia-dc09", "modbus", "sia", "contact-id", "contactid", "ajax", "panel", "modbus-panel"]


# -- acknowledgement rule -------------------------------------------------------
class AckRule(Strict):
    """Satisfied when at least `count` people acknowledged, including `roles[r]` of role r."""

    count: int = Field(1, ge=1, description="distinct people who must acknowledge")
    roles: dict[str, int] = Field(
        default_factory=dict, description="e.g. {manager: 1}: at least one of them is a manager"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "AckRule":
        if sum(self.roles.values()) > self.count:
            self.count = sum(self.roles.values())
        return self


@runtime_checkable
class StopsOnAcks(Protocol):
    """A step whose `until` rule says when enough people acknowledged (escalate's): the
    incident's acknowledgement rule is that of its playbook's first such step."""

    until: AckRule


# -- playbook `lifecycle:` ---------------------------------------------------------
class CancelWindow(Strict):
    """Accidental presses: the playbook waits `duration`; pressing again or the console cancels.

    Never for panel-class inputs unless `panels: true`; even then only the console or
    `crisisbot cancel` cancels them, since a panel repeating an event is not a person
    pressing again."""

    duration: Seconds = Field(5.0, description="e.g. 5s")
    panels: bool = Field(False, description="also for alarm panels and Modbus inputs (normally never)")
    panel_types: list[str] = Field(
        default_factory=lambda: list(PANEL_TRIGGER_TYPES),
        description="trigger types whose alarms count as panel alarms",
    )


class StandDownOptions(Strict):
    template: Identifier = "stand_down"
    meeting: Literal["end", "leave"] = Field(
        "leave", description="end: close the meeting when the provider can; leave: keep it open"
    )


class PlaybookLifecycle(Strict):
    cancel_window: CancelWindow | None = None
    on_restore: Literal["close", "annotate"] = Field(
        "annotate", description="panel restore event: close the incident as resolved, or only note it"
    )
    stand_down: StandDownOptions = Field(default_factory=StandDownOptions)


# -- duty schedules on groups ----------------------------------------------------
class DutyWindow(Strict):
    """Weekly window in the group's site time zone; `end` before `start` spans midnight."""

    days: list[Day] = Field(default_factory=lambda: list(ALL_DAYS))
    start: time = time(0, 0)
    end: time = time(23, 59, 59)


class Rota(Strict):
    """Explicit on-call rotation: shift k covers [start + k*every, start + (k+1)*every)."""

    start: datetime = Field(description="local start of the first shift, e.g. 2025-01-06T09:00")
    every: Seconds = Field(7 * 86400.0, description="shift length, e.g. 7d")
    shifts: list[list[Identifier]] = Field(min_length=1, description="people (or groups) per shift, in turn")


class DutySlot(Strict):
    """Who is on duty when `windows` (and the holiday condition) hold; the first slot that holds wins."""

    name: str = ""
    windows: list[DutyWindow] | None = Field(None, description="default: at any time")
    holidays: bool | None = Field(
        None, description="true: only on public holidays; false: never on them; omitted: either"
    )
    members: list[Identifier] | None = None
    rota: Rota | None = None

    @model_validator(mode="after")
    def _who(self) -> "DutySlot":
        if (self.members is None) == (self.rota is None):
            raise ValueError("a duty slot names either `members` or a `rota`")
        return self


# -- config.yaml `lifecycle:` --------------------------------------------------------
class DrillSpec(Strict):
    """A scheduled exercise: a drill alarm raised on a cron schedule in the site's time zone."""

    cron: str = Field(description="crontab expression, e.g. '0 10 * * 2' (Tuesdays at 10:00)")
    site: Identifier
    zone: Identifier | None = None
    input: str | None = None
    kind: EventKind = EventKind.panic
    severity: Severity = Severity.critical
    label: str = "Exercice"
    playbook: Identifier | None = Field(None, description="default: whichever playbook matches")
    enabled: bool = True


class Supervision(Strict):
    deadman_url: str | None = Field(None, description="pinged with GET on every `deadman_every`")
    deadman_every: Seconds = 60.0
    deadman_timeout: Seconds = 5.0


class LifecycleConfig(Strict):
    ack_link_ttl: Seconds = Field(24 * 3600.0, description="validity of acknowledgement links")
    timer_poll: Seconds = Field(1.0, description="how often due timers are looked for")
    maintenance_playbook: Identifier | None = Field(
        None, description="reduced playbook for silenced alarms when a silence names none"
    )
    drills: dict[Identifier, DrillSpec] = Field(default_factory=dict)
    supervision: Supervision = Field(default_factory=Supervision)
    stand_down_roles: list[str] = Field(
        default_factory=lambda: ["manager"], description="roles that receive a stand-down link"
    )

