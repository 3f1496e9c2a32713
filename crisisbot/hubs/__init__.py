"""Device connections shared by the triggers and connectors that talk to one device.

A PLC's Modbus port is read by the `modbus` trigger and written by the `modbus-coil`
connector; both must go through one connection (an RS-485 bus has one master, and a
small PLC takes few TCP clients). Triggers may not import connectors nor the reverse,
so the shared part lives here, and the runtime lends one `Hubs` to both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Protocol, TypeVar

log = logging.getLogger(__name__)


class Hub(Protocol):
    """A connection to one device; closed once its last user lets it go."""

    def close(self) -> None: ...


H = TypeVar("H", bound=Hub)


@dataclass(slots=True)
class _Held:
    hub: Any
    users: int


class Hubs:
    """One hub per device address, counted by user: the first `acquire` opens it, the last
    `release` closes it. Reloading a connector acquires the new one before releasing the
    old one, so the device keeps its connection."""

    def __init__(self) -> None:
        self._held: dict[Hashable, _Held] = {}

    def acquire(self, key: Hashable, make: Callable[[], H]) -> H:
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Held(make(), 0)
        held.users += 1
        return held.hub

    def release(self, key: Hashable) -> None:
        held = self._held.get(key)
        if held is None:
            return
        held.users -= 1
        if held.users <= 0:
            del self._held[key]
            held.hub.close()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._held
