"""The typed container of everything alive while the daemon runs.

Built once at start-up and torn down at stop; steps and the engine receive it
instead of reaching for module-level state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connectors.base import Camera, Connector, Services
from crisisbot.config.bundle import Bundle, PluginConfig
from crisisbot.executors import Executors
from crisisbot.health import HealthChecks
from crisisbot.hubs import Hubs
from crisisbot.store.images import ImageStore
from crisisbot.models import Recipient
from crisisbot.notify import Notify
from crisisbot.rendering import TemplateSet
from crisisbot.store import open_store
from crisisbot.store.base import Store
from crisisbot.store.files import load_or_create_key, private_dir, warn_if_open  # noqa: F401 - load_or_create_key re-exported
from crisisbot.store.instance import InstanceLock
from crisisbot.web.access import Revocations, json_file

if TYPE_CHECKING:
    from triggers.base import Trigger

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    bundle: Bundle
    store: Store
    connectors: dict[str, Connector] = field(default_factory=dict)
    cameras: dict[tuple[str, str], Camera] = field(default_factory=dict)
    triggers: dict[str, "Trigger"] = field(default_factory=dict)
    services: Services | None = None
    lifecycle: Any = None  # crisisbot.lifecycle.service.Lifecycle while the daemon runs
    image_store: ImageStore | None = None  # encrypted originals behind the live-view links
    revocations: Revocations | None = None  # revoked personal links
    notify: Notify | None = None  # verdict journal and background retries; retrying starts with the daemon
    instance_lock: InstanceLock | None = None  # this process's claim on the data directory
    executors: Executors = field(default_factory=Executors)  # pools kept apart from the alarm path
    health: HealthChecks = field(default_factory=HealthChecks)  # named checks behind GET /health
    hubs: Hubs = field(default_factory=Hubs)  # device connections triggers and connectors share (Modbus)

    @property
    def templates(self) -> TemplateSet:
        return self.bundle.templates

    def recipients(self, refs: list[str]) -> list[Recipient]:
        return self.bundle.recipients(refs)

    @classmethod
    async def build(cls, bundle: Bundle, *, exclusive: bool = True) -> "Runtime":
        """Claim the data directory (`exclusive`: one daemon per data), open the store and
        start every connector and camera of the bundle. On any failure what was opened
        is closed again before the error propagates, so the process can exit."""
        data_dir = private_dir(bundle.data_dir)
        lock = InstanceLock(data_dir).acquire() if exclusive else None
        warn_if_open(data_dir)
        try:
            store = open_store(bundle.config.store.url, data_dir)
            await store.open()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        runtime = cls(bundle, store, instance_lock=lock)
        runtime.notify = Notify(runtime)
        try:
            runtime.services = Services(
                data_dir=data_dir,
                root=bundle.root,
                organization=bundle.config.organization.name,
                sender=bundle.config.mail.sender,
                extras={"secret_key": load_or_create_key(data_dir)},
                hubs=runtime.hubs,
            )
            runtime.image_store = ImageStore.open(data_dir, retention=bundle.config.incidents.image_retention)
            await runtime.image_store.start()
            load, save = json_file(data_dir / "revoked-links.json")
            runtime.revocations = await Revocations.load(load, save)
            await runtime.start_connectors()
        except BaseException:
            await runtime.close()
            raise
        return runtime

    async def start_connectors(self) -> None:
        self.connectors, self.cameras = self._split(await self._started(bundle_items(self.bundle)))

    async def _started(self, items: dict[Any, PluginConfig]) -> dict[Any, Connector]:
        """Start the connectors and cameras given; on failure stop those started and raise."""
        assert self.services is not None
        started: dict[Any, Connector] = {}
        try:
            for key, pc in items.items():
                name = key[1] if isinstance(key, tuple) else key
                started[key] = pc.cls(name, pc.config, self.services)
                await started[key].start()
        except BaseException:
            await _stop_all(list(started.values()))
            raise
        return started

    def _split(self, started: dict[Any, Connector]) -> tuple[dict[str, Connector], dict[tuple[str, str], Camera]]:
        return ({k: v for k, v in started.items() if not isinstance(k, tuple)},
                {k: v for k, v in started.items() if isinstance(k, tuple)})  # type: ignore[misc]

    async def replace_connectors(self, bundle: Bundle) -> list[str]:
        """Restart only the outputs whose class or validated configuration changed; the new
        ones start before the old ones stop, so a step running meanwhile always finds one.
        Returns the names (re)started or removed (cameras as `site/camera`)."""
        running: dict[Any, Connector] = {**self.connectors, **self.cameras}
        wanted = bundle_items(bundle)
        fresh = {k: pc for k, pc in wanted.items()
                 if k not in running or not same_plugin(pc, type(running[k]), running[k].config)}
        started = await self._started(fresh)
        kept = {k: v for k, v in running.items() if k in wanted and k not in fresh}
        self.connectors, self.cameras = self._split({**kept, **started})
        old = [v for k, v in running.items() if k not in kept]
        await _stop_all(old)
        changed = set(fresh) | {k for k in running if k not in wanted}
        return sorted("/".join(k) if isinstance(k, tuple) else k for k in changed)

    async def stop_connectors(self) -> None:
        old = [*self.connectors.values(), *self.cameras.values()]
        self.connectors, self.cameras = {}, {}
        await _stop_all(old)

    async def close(self) -> None:
        """Stop everything; the store is closed and the data directory released whatever
        fails before (a process whose store thread is left running never exits)."""
        try:
            if self.notify is not None:
                await self.notify.stop()
            await self.stop_connectors()
            if self.image_store is not None:
                await self.image_store.stop()
        finally:
            try:
                await self.store.close()
            finally:
                self.executors.shutdown()
                if self.instance_lock is not None:
                    self.instance_lock.release()


def bundle_items(bundle: Bundle) -> dict[Any, PluginConfig]:
    """Connectors by name and cameras by (site, camera), in start order."""
    return {**bundle.connectors, **bundle.cameras}


def same_plugin(pc: PluginConfig | None, cls: type, config: Any) -> bool:
    """Whether a running plugin is what `pc` asks for: same class, equal validated config
    (compared as models, so a changed secret counts: their JSON dumps are masked)."""
    return pc is not None and pc.cls is cls and type(pc.config) is type(config) and pc.config == config


async def _stop_all(items: list[Connector]) -> None:
    for item in items:
        try:
            await item.stop()
        except Exception:  # noqa: BLE001 - shutdown must go on for the others
            log.exception("stopping %s failed", item.name)
