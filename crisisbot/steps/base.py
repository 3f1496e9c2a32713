"""What every playbook step shares: its YAML fields and the context it runs in.

A step sees the incident it acts for and a narrow set of services (`StepServices`:
clock, store, notify, connectors and cameras by name, images, personal links,
templates and contacts of the configuration) — never the daemon's runtime, so a
step is tested with exactly what it uses and cannot reach for anything else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, cast

from pydantic import Field

from crisisbot.config.types import Identifier, Seconds, Strict
from crisisbot.models import Alarm, Incident
from crisisbot.errors import StepFailed  # noqa: F401 - re-exported for existing importers

if TYPE_CHECKING:  # the configuration schemas import this module: no services at import time
    from connectors.base import Camera, Connector
    from crisisbot.notify.links import AlertLinks
    from crisisbot.clock import Clock
    from crisisbot.config.bundle import Bundle
    from crisisbot.config.playbook import Playbook
    from crisisbot.config.settings import DaemonConfig, Site
    from crisisbot.executors import Pool
    from crisisbot.lifecycle.timers import TimerService
    from crisisbot.models import Recipient
    from crisisbot.notify import Notify
    from crisisbot.rendering import TemplateSet
    from crisisbot.store.base import Store
    from crisisbot.store.images import ImageStore
    from triggers.base import Trigger


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


@dataclass(frozen=True, slots=True)
class StepServices:
    """What the daemon lends to steps, built in one place (`Runtime.step_services`).

    `bundle` is the configuration the context was made with: a playbook run keeps the
    one it started with (a reload applies to the next incident and lifecycle message).
    `connectors`, `cameras` and `triggers` are the runtime's live tables (a reload
    swaps their entries in place, so a long step always finds the running one).
    `links` is None when no web address answers personal links; `notify`, `images`,
    `rendering` and `timers` are None in dry runs and tests that do without them."""

    bundle: "Bundle"
    clock: "Clock"
    store: "Store"
    connectors: "Mapping[str, Connector]" = field(default_factory=dict)
    cameras: "Mapping[tuple[str, str], Camera]" = field(default_factory=dict)
    links: "AlertLinks | None" = None
    notify: "Notify | None" = None
    images: "ImageStore | None" = None
    rendering: "Pool | None" = None  # the rendering pool (CPU work off the event loop)
    timers: "TimerService | None" = None  # escalation tiers and reminders (None: straight into the store)
    triggers: "Mapping[str, Trigger]" = field(default_factory=dict)  # modbus_write only, until the Modbus hub

    @classmethod
    def dry(cls, bundle: "Bundle", at: datetime) -> "StepServices":
        """For a dry run (`simulate`, `validate`): renders at `at`, sends, stores and links nothing."""
        from crisisbot.clock import ManualClock

        return cls(bundle=bundle, clock=ManualClock(at), store=cast("Store", _NoStore()))


class _NoStore:
    """The store of a dry run: none. A step that tries to store in a dry run is a bug that
    must fail loudly, not a write silently dropped (hence a cast rather than a Store)."""

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"a dry run has no store (store.{name})")


@dataclass
class StepContext:
    """Everything a step may use: the incident it acts for and `services`; the step
    itself does no lookup of globals."""

    services: StepServices
    incident: Incident
    alarm: Alarm
    playbook: "Playbook"
    site: "Site | None"
    outputs: dict[str, Any] = field(default_factory=dict)
    log: logging.LoggerAdapter | logging.Logger = logging.getLogger("crisisbot.step")

    # -- the services, by their names (what a step reads most) ---------------------
    @property
    def store(self) -> "Store":
        return self.services.store

    @property
    def clock(self) -> "Clock":
        return self.services.clock

    @property
    def config(self) -> "DaemonConfig":
        return self.services.bundle.config

    @property
    def templates(self) -> "TemplateSet":
        return self.services.bundle.templates

    def recipients(self, refs: list[str]) -> "list[Recipient]":
        """The enabled people behind contact refs, duty rosters read at the clock's now."""
        return self.services.bundle.recipients(refs, self.services.clock.now())

    def connector(self, name: str) -> "Connector | None":
        return self.services.connectors.get(name)

    def camera(self, name: str) -> "Camera | None":
        """A camera of the alarm's site."""
        return self.services.cameras.get((self.alarm.site, name))

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
            "zone_name": view.zones[alarm.zone].name if view and alarm.zone in view.zones else alarm.zone,
            "site_id": alarm.site,
            "site_name": site.name if site else alarm.site,
            "timezone": site.timezone if site else "UTC",
            "meeting": meeting,
            "join_url": meeting.join_url if meeting else None,
            "organization": self.config.organization.name,
            "drill": self.incident.drill,
        }
