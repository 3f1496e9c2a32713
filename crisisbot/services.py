"""The services the daemon lends to a playbook step and to the messages it sends.

Steps (crisisbot.steps) and the notify service (crisisbot.notify) both work through
these — never through the daemon's runtime — so each is tested with exactly what it
uses. The runtime builds them (`Runtime.step_services`); `StepServices.dry` serves
`simulate` and `validate`. Kept below steps, notify and the lifecycle: each may
import it, it imports none of them at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping, Protocol, cast

from crisisbot.hubs import Hubs

if TYPE_CHECKING:  # the configuration schemas import the step base, which imports this
    from connectors.base import Camera, Connector
    from crisisbot.clock import Clock
    from crisisbot.config.bundle import Bundle
    from crisisbot.executors import Pool
    from crisisbot.notify import Notify
    from crisisbot.notify.links import AlertLinks
    from crisisbot.store.base import Store
    from crisisbot.store.images import ImageStore
    from crisisbot.store.records import TimerRecord


class Scheduler(Protocol):
    """Persistent timers (the lifecycle's TimerService): what the escalate step plans."""

    async def schedule(self, timers: "list[TimerRecord]") -> int:
        """Add timers not already there; returns how many were added."""
        ...


@dataclass(frozen=True, slots=True)
class StepServices:
    """What the daemon lends to steps, built in one place (`Runtime.step_services`).

    `bundle` is the configuration the context was made with: a playbook run keeps the
    one it started with (a reload applies to the next incident and lifecycle message).
    `connectors` and `cameras` are the runtime's live tables (a reload
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
    timers: "Scheduler | None" = None  # escalation tiers and reminders (None: straight into the store)
    hubs: Hubs = field(default_factory=Hubs)  # device connections shared with triggers (Modbus)

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
