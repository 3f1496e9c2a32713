"""What every playbook step shares: its YAML fields, the context it runs in, and the
`StepType` a step module registers under the `crisisbot.steps` entry-point group.

A step sees the incident it acts for and a narrow set of services (`StepServices`:
clock, store, notify, connectors and cameras by name, images, personal links,
templates and contacts of the configuration) — never the daemon's runtime, so a
step is tested with exactly what it uses and cannot reach for anything else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, Generic, Iterable, Protocol, TypeVar, runtime_checkable

from pydantic import Field, TypeAdapter

from crisisbot.config.types import Identifier, Seconds, Strict
from crisisbot.models import Alarm, Incident, Meeting
from crisisbot.errors import StepFailed  # noqa: F401 - re-exported for existing importers
from crisisbot.services import StepServices  # noqa: F401 - re-exported: a step's services come with its context

if TYPE_CHECKING:
    from connectors.base import Camera, Connector
    from crisisbot.clock import Clock
    from crisisbot.config.playbook import Playbook
    from crisisbot.config.settings import DaemonConfig, Site
    from crisisbot.models import Recipient
    from crisisbot.rendering import TemplateSet
    from crisisbot.store.base import Store


class StepSpec(Strict):
    """Fields common to all steps; each action adds its own."""

    produces: ClassVar[bool] = False  # outputs (meeting, snapshots) later steps wait for
    opens_meeting: ClassVar[bool] = False  # its output is the join link messages carry
    consumes: ClassVar[bool] = False  # messages: by default wait for the earlier producers
    urgent: ClassVar[bool] = False  # part of the dispatch: the web server holds back strangers meanwhile
    notifies: ClassVar[bool] = False  # reaches people: reaching fewer than required fails the playbook

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
        meeting = next((o for o in self.outputs.values() if isinstance(o, Meeting)), None)
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
            "organization": self.config.organization.name,
            "drill": self.incident.drill,
        }


@runtime_checkable
class TemplateExtras(Protocol):
    """A context whose templates also see variables of its caller (the lifecycle's tier,
    outcome, reason…): a step adds its own to `extra` for them."""

    extra: dict[str, Any]


C = TypeVar("C", bound=StepSpec)
O = TypeVar("O")


@dataclass(frozen=True)
class StepType(Generic[C, O]):
    """One playbook action as a plugin, e.g. in pyproject.toml:

        [project.entry-points."crisisbot.steps"]
        meeting = "crisisbot.steps.meeting:STEP"

    `Config` is its YAML schema (a StepSpec whose `action: Literal["meeting"]` equals the
    entry-point name), `run(ctx, config)` does the work and returns an `Output` (a pydantic
    model or a dataclass). The output is written to the step journal as JSON and read back
    after a restart, so a done step is not run again (a meeting is not opened twice);
    `journal=False` for outputs too big to keep (images): a producer step is then run again
    when a step that needs it has yet to run.

    For `crisisbot simulate` (a dry run: nothing sent, nothing stored), a step may say what
    it would do: `describe(ctx, config, bodies)` yields the lines shown under the step
    (`bodies`: whether to show message bodies), and `placeholder(ctx, config)` gives the
    output later steps see in its stead (the meeting's "<meeting link>"). Without
    `describe`, simulate shows the step's fields."""

    Config: type[C]
    run: Callable[[StepContext, C], Awaitable[O]]
    Output: type[O]
    journal: bool = True
    describe: Callable[[StepContext, C, bool], Iterable[str]] | None = None
    placeholder: Callable[[StepContext, C], O] | None = None

    @property
    def action(self) -> str:
        return self.Config.model_fields["action"].annotation.__args__[0]  # type: ignore[union-attr]

    @cached_property
    def _adapter(self) -> TypeAdapter[O]:
        return TypeAdapter(self.Output)

    def dump(self, output: O) -> dict[str, Any] | None:
        """The output as stored in the journal (JSON types), or None when not journaled."""
        if not self.journal or output is None:
            return None
        return self._adapter.dump_python(output, mode="json")

    def load(self, stored: Any) -> O:
        """A journaled output back as its type; raises pydantic's ValidationError on a row
        this version cannot read (the caller then treats the output as not kept)."""
        return self._adapter.validate_python(stored)
