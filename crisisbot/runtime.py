"""The typed container of everything alive while the daemon runs.

Built once at start-up and torn down at stop; steps and the engine receive it
instead of reaching for module-level state.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.base import Camera, Connector, Services
from crisisbot.config.bundle import Bundle
from crisisbot.executors import Executors
from crisisbot.health import HealthChecks
from crisisbot.image_store import ImageStore
from crisisbot.models import Recipient
from crisisbot.rendering import TemplateSet
from crisisbot.store import open_store
from crisisbot.store.base import Store
from crisisbot.store.files import private_dir, warn_if_open
from crisisbot.store.instance import InstanceLock
from crisisbot.web.access import Revocations, json_file

if TYPE_CHECKING:
    from triggers.base import Trigger

log = logging.getLogger(__name__)


def load_or_create_key(data_dir: Path, name: str = "secret.key") -> bytes:
    """A per-installation random key (mode 0600), so there is never a default secret."""
    path = data_dir / name
    if path.is_file():
        return path.read_bytes()
    private_dir(data_dir)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


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
    instance_lock: InstanceLock | None = None  # this process's claim on the data directory
    executors: Executors = field(default_factory=Executors)  # pools kept apart from the alarm path
    health: HealthChecks = field(default_factory=HealthChecks)  # named checks behind GET /health

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
        try:
            runtime.services = Services(
                data_dir=data_dir,
                root=bundle.root,
                organization=bundle.config.organization.name,
                sender=bundle.config.mail.sender,
                extras={"secret_key": load_or_create_key(data_dir)},
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
        self.connectors, self.cameras = await self._started(self.bundle)

    async def _started(self, bundle: Bundle) -> tuple[dict[str, Connector], dict[tuple[str, str], Camera]]:
        """Start the connectors and cameras of `bundle`; on failure stop those started and raise."""
        assert self.services is not None
        connectors: dict[str, Connector] = {}
        cameras: dict[tuple[str, str], Camera] = {}
        try:
            for name, pc in bundle.connectors.items():
                connectors[name] = pc.cls(name, pc.config, self.services)
                await connectors[name].start()
            for (site, cam), pc in bundle.cameras.items():
                cameras[(site, cam)] = pc.cls(cam, pc.config, self.services)
                await cameras[(site, cam)].start()
        except BaseException:
            await _stop_all([*connectors.values(), *cameras.values()])
            raise
        return connectors, cameras

    async def replace_connectors(self, bundle: Bundle) -> None:
        """Start the new outputs first, then swap: a step running meanwhile always finds one."""
        connectors, cameras = await self._started(bundle)
        old = [*self.connectors.values(), *self.cameras.values()]
        self.connectors, self.cameras = connectors, cameras
        await _stop_all(old)

    async def stop_connectors(self) -> None:
        old = [*self.connectors.values(), *self.cameras.values()]
        self.connectors, self.cameras = {}, {}
        await _stop_all(old)

    async def close(self) -> None:
        """Stop everything; the store is closed and the data directory released whatever
        fails before (a process whose store thread is left running never exits)."""
        try:
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


async def _stop_all(items: list[Connector]) -> None:
    for item in items:
        try:
            await item.stop()
        except Exception:  # noqa: BLE001 - shutdown must go on for the others
            log.exception("stopping %s failed", item.name)
