"""One Modbus connection per link (TCP host:port, or serial port), shared by reading and writing.

Home Assistant's `ModbusHub` pattern: the client and a lock that serializes requests (one
RS-485 bus answers one request at a time; a TCP gateway mixes up interleaved units), and
a reconnect on the next request after a failure. The `modbus` trigger polls through it,
the `modbus-coil` connector writes coils through it: a coil write never reaches through a
running input. pymodbus's own background reconnect is off (`reconnect_delay=0`): the
trigger's backoff is the only one.

pymodbus is imported when a hub opens, not with this module: the `modbus_write` step and
`validate` use the models and Protocols below on an install without the Modbus extra.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Literal, Mapping, Protocol, runtime_checkable

from pydantic import Field, model_validator

from crisisbot.config.types import Seconds, Strict
from crisisbot.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

    Client = AsyncModbusTcpClient | AsyncModbusSerialClient

log = logging.getLogger(__name__)

LinkKey = tuple[Any, ...]


def failures() -> tuple[type[BaseException], ...]:
    """What means the link is broken (drop it, reconnect on the next request)."""
    from pymodbus.exceptions import ModbusException

    return (ModbusException, OSError, asyncio.TimeoutError)


class SerialSettings(Strict):
    port: str = Field(description="e.g. /dev/ttyUSB0")
    baudrate: int = 19200
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


class ModbusLink(Strict):
    """Where a Modbus device answers; devices behind one gateway or on one bus share it."""

    transport: Literal["tcp", "rtu"] = "tcp"
    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    serial: SerialSettings | None = None
    unit: int = Field(1, ge=0, le=247, description="Modbus unit / device id")
    timeout: Seconds = Field(1.0, gt=0, description="answer timeout of one request")

    @model_validator(mode="after")
    def _link(self) -> "ModbusLink":
        if self.transport == "tcp" and not self.host:
            raise ValueError("a tcp device needs `host`")
        if self.transport == "rtu" and self.serial is None:
            raise ValueError("an rtu device needs `serial` settings")
        return self

    def link_key(self) -> LinkKey:
        """Devices behind one gateway or on one RS-485 bus share a connection."""
        if self.transport == "rtu":
            assert self.serial is not None
            return ("modbus", "rtu", self.serial.port)
        return ("modbus", "tcp", self.host, self.port)

    def where(self) -> str:
        return self.serial.port if self.transport == "rtu" and self.serial else f"{self.host}:{self.port}"


def client_for(link: ModbusLink) -> "Client":
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

    if link.transport == "rtu":
        s = link.serial
        assert s is not None
        return AsyncModbusSerialClient(s.port, baudrate=s.baudrate, bytesize=s.bytesize, parity=s.parity,
                                       stopbits=s.stopbits, timeout=link.timeout, retries=0, reconnect_delay=0)
    assert link.host is not None
    return AsyncModbusTcpClient(link.host, port=link.port, timeout=link.timeout, retries=0, reconnect_delay=0)


class ModbusHub:
    """The client of one link and the lock its requests take turns on."""

    def __init__(self, link: ModbusLink) -> None:
        self.where = link.where()
        self.client: "Client" = client_for(link)
        self.failures = failures()
        self.lock = asyncio.Lock()

    async def connected(self) -> bool:
        """Connect if needed (hold `lock`); False when the device does not take the connection."""
        return bool(self.client.connected or await self.client.connect())

    def drop(self) -> None:
        """Forget a broken connection; the next request connects again."""
        self.client.close()

    def close(self) -> None:
        self.client.close()

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        """Switch one coil; TransientError when the link failed (retrying may help),
        PermanentError when the device answered with an exception (it will not)."""
        async with self.lock:
            try:
                if not await self.connected():
                    raise TransientError(f"Modbus device at {self.where} is unreachable")
                reply = await self.client.write_coil(address, value, device_id=unit)
            except self.failures as exc:
                self.drop()
                raise TransientError(f"writing coil {address} at {self.where} failed: {exc}") from exc
        if reply.isError():
            raise PermanentError(f"the device at {self.where} (unit {unit}) refused to write coil {address}: {reply}")


@runtime_checkable
class CoilWriter(Protocol):
    """What the `modbus_write` step needs of a connector (connectors/modbus_coil.py)."""

    async def write_coil(self, address: int, value: bool) -> None: ...


@runtime_checkable
class ModbusDevices(Protocol):
    """A configuration naming Modbus devices (the `modbus` trigger's `devices:`)."""

    devices: Mapping[str, ModbusLink]


def acquire(hubs: Any, link: ModbusLink) -> ModbusHub:
    """The hub of this link from `hubs` (crisisbot.hubs.Hubs), opened on first use."""
    return hubs.acquire(link.link_key(), lambda: ModbusHub(link))
