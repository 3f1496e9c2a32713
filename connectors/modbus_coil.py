"""Switch coils of a Modbus device: the 'help is coming' lamp, a siren, a door strike.

The `modbus_write` step writes through this connector. The connection is the device's
shared hub (crisisbot/hubs/modbus.py): when a `modbus` trigger polls the same gateway or
serial bus, both take turns on one connection instead of opening two.

    connectors:
      hall-relays:
        type: modbus-coil
        host: 10.0.0.5        # or transport: rtu with serial: {port: /dev/ttyUSB0}
        unit: 1
"""

from __future__ import annotations

from typing import Literal

from connectors.base import Connector
from crisisbot.errors import PermanentError
from crisisbot.hubs.modbus import ModbusHub, ModbusLink, acquire


class ModbusCoilConfig(ModbusLink):
    type: Literal["modbus-coil"]


class ModbusCoil(Connector):
    kind = "coil"
    Config = ModbusCoilConfig
    config: ModbusCoilConfig

    _hub: ModbusHub | None = None

    async def start(self) -> None:
        self._hub = acquire(self.services.hubs, self.config)

    async def stop(self) -> None:
        if self._hub is not None:
            self._hub = None
            self.services.hubs.release(self.config.link_key())

    async def write_coil(self, address: int, value: bool) -> None:
        """Switch one coil (0-based address); raises TransientError (link down: retry may
        help) or PermanentError (the device refused it)."""
        hub = self._hub
        if hub is None:
            raise PermanentError(f"connector {self.name} is not started")
        await hub.write_coil(self.config.unit, address, value)
        self.log.info("coil %s of unit %s at %s set to %s", address, self.config.unit, hub.where, value)
