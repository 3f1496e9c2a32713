"""The daemon's services, built once at start-up in one fixed order and torn down at stop.

Each service is a typed field, set when the runtime is built and never after:

    clock        the one clock (engine join windows, duty rosters, timers, links, images)
    store        the incidents, alarms, deliveries and audit chain (stamped by the clock)
    signer       personal links, keyed by the installation's secret (var/secret.key)
    services     what connectors get (data directory, sender, the secret key)
    image_store  encrypted originals behind the live-view links (retention by the clock)
    revocations  revoked personal links
    hubs         device connections (Modbus) shared by triggers and connectors
    timers       persistent one-shot timers (escalation, drills, silences); the lifecycle
                 registers their handlers and runs them
    executors    pools kept apart from the alarm path
    health       named checks behind GET /health
    runs         the playbooks running, by incident (the engine starts, a stand-down interrupts)
    notify       verdict journal and background retries (made from the runtime: issue 13 item 1)
    connectors, cameras   started last; a reload swaps their entries in place

Parts receive the services they use, not the runtime: steps get `step_services()`,
the web routes their signer, store and clock (docs/architecture.md).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, TypeVar, Union, cast

from pydantic import BaseModel

from connectors.base import Camera, Connector, Services
from crisisbot.notify.links import AlertLinks
from crisisbot.clock import Clock, SystemClock
from crisisbot.config.bundle import Bundle, PluginConfig
from crisisbot.executors import Executors
from crisisbot.health import HealthChecks
from crisisbot.lifecycle.timers import TimerService
from crisisbot.links import Signer
from crisisbot.hubs import Hubs
from crisisbot.store.images import ImageStore
from crisisbot.models import Recipient
from crisisbot.notify import Notify
from crisisbot.rendering import TemplateSet
from crisisbot.runs import PlaybookRuns
from crisisbot.services import StepServices
from crisisbot.store import open_store
from crisisbot.store.base import Store
from crisisbot.store.files import load_or_create_key, private_dir, warn_if_open  # noqa: F401 - load_or_create_key re-exported
from crisisbot.store.instance import InstanceLock
from crisisbot.web.access import Revocations

if TYPE_CHECKING:
    from triggers.base import Trigger

log = logging.getLogger(__name__)

OutputKey = Union[str, tuple[str, str]]  # a connector's name, or a camera's (site, camera)
T = TypeVar("T")


@dataclass
class Runtime:
    bundle: Bundle
    clock: Clock
    store: Store
    signer: Signer
    services: Services
    image_store: ImageStore
    revocations: Revocations
    timers: TimerService
    instance_lock: InstanceLock | None = None  # this process's claim on the data directory
    executors: Executors = field(default_factory=Executors)
    health: HealthChecks = field(default_factory=HealthChecks)
    runs: PlaybookRuns = field(default_factory=PlaybookRuns)  # the playbooks running, by incident
    connectors: dict[str, Connector] = field(default_factory=dict)
    cameras: dict[tuple[str, str], Camera] = field(default_factory=dict)
    triggers: dict[str, "Trigger"] = field(default_factory=dict)
    hubs: Hubs = field(default_factory=Hubs)  # device connections triggers and connectors share (Modbus)
    notify: Notify = field(init=False)  # retrying starts with the daemon (Notify.start)

    def __post_init__(self) -> None:
        self.notify = Notify(self)

    @property
    def templates(self) -> TemplateSet:
        return self.bundle.templates

    def recipients(self, refs: list[str]) -> list[Recipient]:
        """The enabled people behind contact refs; duty rosters read at the clock's now."""
        return self.bundle.recipients(refs, self.clock.now())

    def step_services(self) -> StepServices:
        """What a step may use, on the configuration in place now."""
        return StepServices(
            bundle=self.bundle, clock=self.clock, store=self.store, connectors=self.connectors,
            cameras=self.cameras, links=AlertLinks.of(self.signer, self.bundle.config), notify=self.notify,
            images=self.image_store, rendering=self.executors.rendering, timers=self.timers, hubs=self.hubs,
        )

    @classmethod
    async def build(cls, bundle: Bundle, *, clock: Clock | None = None, exclusive: bool = True) -> "Runtime":
        """Claim the data directory (`exclusive`: one daemon per data), open the store and
        start every connector and camera of the bundle. On any failure what was opened
        is closed again before the error propagates, so the process can exit."""
        clock = clock or SystemClock()
        data_dir = private_dir(bundle.data_dir)
        async with AsyncExitStack() as undo:  # unwinds what was opened if a later part fails
            lock = InstanceLock(data_dir).acquire() if exclusive else None
            if lock is not None:
                undo.callback(lock.release)
            warn_if_open(data_dir)
            store = open_store(bundle.config.store.url, data_dir, now=clock.now)
            await store.open()
            undo.push_async_callback(store.close)
            key = load_or_create_key(data_dir)
            hubs = Hubs()  # device connections (Modbus) the triggers and connectors share
            services = Services(data_dir=data_dir, root=bundle.root, organization=bundle.config.organization.name,
                                sender=bundle.config.mail.sender, secret_key=key, hubs=hubs)
            image_store = ImageStore.open(data_dir, retention=bundle.config.incidents.image_retention,
                                          clock=clock.now)
            await image_store.start()
            undo.push_async_callback(image_store.stop)
            revocations = await Revocations.from_file(data_dir / "revoked-links.json", clock=clock.now)
            timers = TimerService(store, clock, poll=bundle.config.lifecycle.timer_poll)  # started by the lifecycle
            runtime = cls(bundle, clock, store, Signer(key, clock.now), services, image_store, revocations, timers,
                          instance_lock=lock, hubs=hubs)
            undo.pop_all()  # from here on, runtime.close() undoes it all
        try:
            await runtime.start_connectors()
        except BaseException:
            await runtime.close()
            raise
        return runtime

    async def start_connectors(self) -> None:
        self._install(await self._started(bundle_items(self.bundle)))

    def _install(self, started: dict[OutputKey, Connector]) -> None:
        """Swap the running connectors and cameras in place: the tables lent to steps stay live."""
        connectors, cameras = self._split(started)
        self.connectors.clear()
        self.connectors.update(connectors)
        self.cameras.clear()
        self.cameras.update(cameras)

    async def _started(self, items: dict[OutputKey, PluginConfig]) -> dict[OutputKey, Connector]:
        """Start the connectors and cameras given; on failure stop those started and raise."""
        started: dict[OutputKey, Connector] = {}
        try:
            for key, pc in items.items():
                name = key[1] if isinstance(key, tuple) else key
                started[key] = pc.cls(name, pc.config, self.services)
                await started[key].start()
        except BaseException:
            await _stop_all(list(started.values()))
            raise
        return started

    def _split(self, started: dict[OutputKey, Connector]) -> tuple[dict[str, Connector], dict[tuple[str, str], Camera]]:
        connectors = {k: v for k, v in started.items() if isinstance(k, str)}
        # entries under a site's `cameras:` are Camera plugins (config validation loads them as such)
        cameras = {k: cast(Camera, v) for k, v in started.items() if isinstance(k, tuple)}
        return connectors, cameras

    async def replace_connectors(self, bundle: Bundle) -> list[str]:
        """Restart only the outputs whose class or validated configuration changed; the new
        ones start before the old ones stop, so a step running meanwhile always finds one.
        Returns the names (re)started or removed (cameras as `site/camera`)."""
        running = outputs(self.connectors, self.cameras)
        wanted = bundle_items(bundle)
        fresh = {k: pc for k, pc in wanted.items()
                 if k not in running or not same_plugin(pc, type(running[k]), running[k].config)}
        started = await self._started(fresh)
        kept = {k: v for k, v in running.items() if k in wanted and k not in fresh}
        self._install({**kept, **started})
        old = [v for k, v in running.items() if k not in kept]
        await _stop_all(old)
        changed = set(fresh) | {k for k in running if k not in wanted}
        return sorted("/".join(k) if isinstance(k, tuple) else k for k in changed)

    async def stop_connectors(self) -> None:
        old = [*self.connectors.values(), *self.cameras.values()]
        self._install({})
        await _stop_all(old)

    async def close(self) -> None:
        """Stop everything; the store is closed and the data directory released whatever
        fails before (a process whose store thread is left running never exits)."""
        try:
            await self.notify.stop()
            await self.stop_connectors()
            await self.image_store.stop()
        finally:
            try:
                await self.store.close()
            finally:
                self.executors.shutdown()
                if self.instance_lock is not None:
                    self.instance_lock.release()


def outputs(by_name: Mapping[str, T], by_camera: Mapping[tuple[str, str], T]) -> dict[OutputKey, T]:
    """Connectors by name, then cameras by (site, camera), in one table (start order)."""
    table: dict[OutputKey, T] = {}
    table.update((name, item) for name, item in by_name.items())
    table.update((key, item) for key, item in by_camera.items())
    return table


def bundle_items(bundle: Bundle) -> dict[OutputKey, PluginConfig]:
    """Connectors by name and cameras by (site, camera), in start order."""
    return outputs(bundle.connectors, bundle.cameras)


def same_plugin(pc: PluginConfig | None, cls: type, config: BaseModel) -> bool:
    """Whether a running plugin is what `pc` asks for: same class, equal validated config
    (compared as models, so a changed secret counts: their JSON dumps are masked)."""
    return pc is not None and pc.cls is cls and type(pc.config) is type(config) and pc.config == config


async def _stop_all(items: list[Connector]) -> None:
    for item in items:
        try:
            await item.stop()
        except Exception:  # noqa: BLE001 - shutdown must go on for the others
            log.exception("stopping %s failed", item.name)
