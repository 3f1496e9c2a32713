"""What every playbook step shares: its YAML fields and the context it runs in."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from crisisbot.config.types import Identifier, Seconds, Strict
from crisisbot.models import Alarm, Incident
from crisisbot.errors import StepFailed  # noqa: F401 - re-exported for existing importers

if TYPE_CHECKING:
    from crisisbot.config.settings import Site
    from crisisbot.config.playbook import Playbook
    from crisisbot.runtime import Runtime


class StepSpec(Strict):
    """Fields common to all steps; each action adds its own."""

    produces: ClassVar[bool] = False  # outputs (meeting, snapshots) later steps wait for
    consumes: ClassVar[bool] = False  # messages: by default wait for the earlier producers

    action: str
    id: Identifier | None = Field(None, description="default: '<position>-<action>'")
    needs: list[Identifier] | None = Field(
        None,
        description="step ids to wait for; default: the earlier meeting/snapshot steps "
        "for a message step, nothing for the others",
    )
    timeout: Seconds | None = Field(None, description="deadline of the step (default from config)")
    continue_on_error: bool = Field(
        True, description="false: a failure of this step stops the steps that follow it"
    )


@dataclass
class StepContext:
    """Everything a step may use; the step itself does no lookup of globals."""

    runtime: "Runtime"
    incident: Incident
    alarm: Alarm
    playbook: "Playbook"
    site: "Site | None"
    outputs: dict[str, Any] = field(default_factory=dict)
    log: logging.LoggerAdapter | logging.Logger = logging.getLogger("crisisbot.step")

    def template_context(self) -> dict[str, Any]:
        """The variables every template sees: read-only views, nothing with credentials."""
        from crisisbot.rendering import clean_alarm, site_view

        site = self.site
        alarm = clean_alarm(self.alarm)
        meeting = next((o for o in self.outputs.values() if hasattr(o, "join_url")), None)
        view = site_view(alarm.site, site)
        return {
            "incident": self.incident,
            "alarm": alarm,
            "site": view,
            "zone_name": view.zones[alarm.zone].name if view and alarm.zone is not None and alarm.zone in view.zones
            else alarm.zone,
            "site_id": alarm.site,
            "site_name": site.name if site else alarm.site,
            "timezone": site.timezone if site else "UTC",
            "meeting": meeting,
            "join_url": meeting.join_url if meeting else None,
            "organization": self.runtime.bundle.config.organization.name,
            "drill": self.incident.drill,
        }
