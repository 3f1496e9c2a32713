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
from crisisbot.image_store import ImageStore
from crisisbot.models import Recipient
from crisisbot.rendering import TemplateSet
from crisisbot.store import open_store
from crisisbot.store.base import Store
from crisisbot.web.access import Revocations, json_file

if TYPE_CHECKING:
    from triggers.base import Trigger

log = logging.getLogger(__name__)


def load_or_create_key(data_dir: Path, name: str = "secret.key") -> bytes:
    """A per-installation random key (mode 0600), so there is never a default secret."""
    path = data_dir / name
    if path.is_file():
        return path.read_bytes()
    data_dir.mkdir(parents=True, exist_ok=True)
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

    @property
    def templates(self) -> TemplateSet:
        return self.bundle.templates

    def recipients(self, refs: list[str]) -> list[Recipient]:
        return self.bundle.recipients(refs)

    @classmethod
    async def build(cls, bundle: Bundle) -> "Runtime":
        """Open the store and start every connector and camera of the bundle."""
        data_dir = bundle.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        store = open_store(bundle.config.store.url, data_dir)
        await store.open()
        services = Services(
            data_dir=data_dir,
            root=bundle.root,
            organization=bundle.config.organization.name,
            sender=bundle.config.mail.sender,
            extras={"secret_key": load_or_create_key(data_dir)},
        )
        runtime = cls(bundle, store, services=services)
        runtime.image_store = ImageStore.open(data_dir, retention=bundle.config.incidents.image_retention)
        await runtime.image_store.start()
        load, save = json_file(data_dir / "revoked-links.json")
        runtime.revocations = await Revocations.load(load, save)
        await runtime.start_connectors()
        return runtime

    async def start_connectors(self) -> None:
        assert self.services is not None
        for name, pc in self.bundle.connectors.items():
            connector = pc.cls(name, pc.config, self.services)
            await connector.start()
            self.connectors[name] = connector
        for (site, cam), pc in self.bundle.cameras.items():
            camera = pc.cls(cam, pc.config, self.services)
            await camera.start()
            self.cameras[(site, cam)] = camera

    async def stop_connectors(self) -> None:
        for item in [*self.connectors.values(), *self.cameras.values()]:
            try:
                await item.stop()
            except Exception:  # noqa: BLE001 - shutdown must go on for the others
                log.exception("stopping %s failed", item.name)
        self.connectors.clear()
        self.cameras.clear()

    async def close(self) -> None:
        await self.stop_connectors()
        if self.image_store is not None:
            await self.image_store.stop()
        await self.store.close()
