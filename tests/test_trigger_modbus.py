"""Modbus trigger against real pymodbus servers on loopback whose inputs the tests toggle."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from connectors.base import Services
from connectors.modbus_coil import ModbusCoil
from crisisbot.errors import PermanentError
from crisisbot.hubs import Hubs
from crisisbot.models import EventKind
from crisisbot.steps import modbus_write
from crisisbot.steps.base import StepFailed
from triggers.modbus import ModbusConfig, ModbusTrigger
from sinks import RecordingSink

DI, COIL, IR, HR = 2, 1, 4, 3  # function codes addressing each table in the simulator


def sim_device(unit: int = 1, action: Any = None) -> SimDevice:
    bits = lambda: [SimData(0, count=64, values=False, datatype=DataType.BITS)]  # noqa: E731
    regs = lambda: [SimData(0, count=64, values=0, datatype=DataType.REGISTERS)]  # noqa: E731
    return SimDevice(unit, simdata=(bits(), bits(), regs(), regs()), action=action)


class Plc:
    """A pymodbus TCP server standing in for a PLC; `set` toggles an input as wiring would."""

    def __init__(self, devices: list[SimDevice], port: int = 0) -> None:
        self.devices, self.port = devices, port
        self.server: ModbusTcpServer | None = None

    async def start(self) -> "Plc":
        self.server = ModbusTcpServer(self.devices, address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)
        self.port = self.server.transport.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None

    async def set(self, fc: int, address: int, value: int | bool, unit: int = 1) -> None:
        assert self.server is not None
        await self.server.context.async_setValues(unit, fc, address, [value])

    async def get(self, fc: int, address: int, unit: int = 1) -> Any:
        assert self.server is not None
        return (await self.server.context.async_getValues(unit, fc, address, 1))[0]


@pytest.fixture
async def plc() -> AsyncIterator[Plc]:
    server = await Plc([sim_device()]).start()
    yield server
    await server.stop()


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def make_trigger(sink: RecordingSink) -> AsyncIterator[Callable[..., Any]]:
    started: list[ModbusTrigger] = []

    async def make(devices: dict[str, Any]) -> ModbusTrigger:
        trigger = ModbusTrigger("plcs", ModbusConfig.model_validate({"type": "modbus", "devices": devices}), sink)
        await trigger.start()
        started.append(trigger)
        return trigger

    yield make
    for trigger in started:
        await trigger.stop()


def device(port: int, inputs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "site": "paris", "poll": "20ms", "timeout": "300ms",
            "inputs": inputs, **extra}


async def polls(trigger: ModbusTrigger, count: int = 5) -> None:
    """Wait until the trigger has completed `count` more polls (no wall-clock guesswork)."""
    target = trigger.stats["polls"] + count
    async with asyncio.timeout(10):
        while trigger.stats["polls"] < target:
            await asyncio.sleep(0.005)


async def test_press_fires_once_while_held_and_again_after_release(plc: Plc, sink: RecordingSink,
                                                                   make_trigger: Any) -> None:
    trigger = await make_trigger({"hall": device(plc.port, [
        {"name": "btn-reception", "address": 5, "zone": "reception", "label": "Reception panic button"}])})
    await polls(trigger)
    assert sink.alarms == []
    await plc.set(DI, 5, True)
    [alarm] = await sink.wait_for(1)
    assert (alarm.source, alarm.site, alarm.zone, alarm.kind) == ("plcs", "paris", "reception", EventKind.panic)
    assert alarm.input == "hall/btn-reception" and alarm.label == "Reception panic button"
    assert alarm.raw == "hall unit 1 discrete_input 5 = 1 (active high)"
    await polls(trigger, 10)  # held down: no second alarm
    assert len(sink.alarms) == 1
    await plc.set(DI, 5, False)
    await polls(trigger)
    await plc.set(DI, 5, True)
    await sink.wait_for(2)
    assert trigger.stats["alarms"] == 2


async def test_active_low_register_bits_and_coils(plc: Plc, sink: RecordingSink, make_trigger: Any) -> None:
    await plc.set(IR, 3, 0xFFFF)  # NC loop closed: all bits high = quiet
    trigger = await make_trigger({"panel": device(plc.port, [
        {"name": "fire-loop", "table": "input_register", "address": 3, "bit": 2, "active": "low", "kind": "fire"},
        {"name": "door", "table": "holding_register", "address": 10, "bit": 15, "kind": "intrusion"},
        {"name": "siren-fb", "table": "coil", "address": 7, "kind": "technical"},
    ])})
    await polls(trigger)
    assert sink.alarms == []
    await plc.set(IR, 3, 0xFFFF & ~(1 << 2))
    await plc.set(HR, 10, 0x8000)
    await plc.set(COIL, 7, True)
    await sink.wait_for(3)
    assert {a.input: a.kind for a in sink.alarms} == {
        "panel/fire-loop": EventKind.fire, "panel/door": EventKind.intrusion, "panel/siren-fb": EventKind.technical}


async def test_debounce_ignores_a_one_poll_glitch(sink: RecordingSink, make_trigger: Any) -> None:
    script = [0, 0, 1, 0, 0, 1, 0, 1, 1, 1]  # the value register 0 shows on successive reads

    async def scripted(fc: int, start: int, address: int, count: int, registers: list[int], values: Any) -> None:
        if fc == IR:
            registers[0] = script.pop(0) if script else 1

    plc = await Plc([sim_device(action=scripted)]).start()
    try:
        trigger = await make_trigger({"hall": device(plc.port, [
            {"name": "btn", "table": "input_register", "address": 0, "bit": 0, "debounce": 3}])})
        await sink.wait_for(1)
        await polls(trigger, 5)
        assert len(sink.alarms) == 1 and not script  # fired at the 3rd consecutive 1, once
    finally:
        await plc.stop()


async def test_latch_holds_until_reset_input(plc: Plc, sink: RecordingSink, make_trigger: Any) -> None:
    trigger = await make_trigger({"hall": device(plc.port, [
        {"name": "btn", "address": 1, "latch": True},
        {"name": "key-reset", "address": 2, "role": "reset"}])})
    for _ in range(2):
        await plc.set(DI, 1, True)
        await polls(trigger)
        await plc.set(DI, 1, False)
        await polls(trigger)
    assert len(sink.alarms) == 1
    await plc.set(DI, 2, True)  # the key switch
    await polls(trigger)
    await plc.set(DI, 2, False)
    await plc.set(DI, 1, True)
    await sink.wait_for(2)
    assert [a.input for a in sink.alarms] == ["hall/btn", "hall/btn"]


async def test_link_loss_raises_input_fault_and_no_false_alarm_on_return(plc: Plc, sink: RecordingSink,
                                                                        make_trigger: Any) -> None:
    trigger = await make_trigger({"hall": device(plc.port, [
        {"name": "held", "address": 1}, {"name": "pressed-in-outage", "address": 2}],
        offline_after="300ms", backoff_max="200ms")})
    await plc.set(DI, 1, True)
    await sink.wait_for(1)
    port = plc.port
    await plc.stop()
    await sink.wait_for(2)
    fault = sink.alarms[1]
    assert (fault.kind, fault.input, fault.site) == (EventKind.input_fault, "hall", "paris")
    assert trigger.stats["faults"] == 1
    back = await Plc([sim_device()], port=port).start()  # same wiring: button 1 still held
    try:
        await back.set(DI, 1, True)
        await back.set(DI, 2, True)
        await sink.wait_for(4)
        await polls(trigger, 10)
        assert [a.kind for a in sink.alarms] == [EventKind.panic, EventKind.input_fault, EventKind.restore,
                                                 EventKind.panic]
        assert sink.alarms[2].details["restores"] == "input_fault"
        late = sink.alarms[3]
        assert late.input == "hall/pressed-in-outage" and late.details["after_link_loss"] is True
    finally:
        await back.stop()


async def test_devices_polled_concurrently_with_unit_ids_on_one_gateway(sink: RecordingSink,
                                                                        make_trigger: Any) -> None:
    gateway = await Plc([sim_device(1), sim_device(2)]).start()
    other = await Plc([sim_device()]).start()
    try:
        await make_trigger({
            "io-a": device(gateway.port, [{"name": "b", "address": 0}], unit=1),
            "io-b": device(gateway.port, [{"name": "b", "address": 0}], unit=2, site="lyon"),
            "io-c": device(other.port, [{"name": "b", "address": 0}], site="lille"),
        })
        await gateway.set(DI, 0, True, unit=2)
        await other.set(DI, 0, True)
        await sink.wait_for(2)
        assert sorted((a.input, a.site) for a in sink.alarms) == [("io-b/b", "lyon"), ("io-c/b", "lille")]
    finally:
        await gateway.stop()
        await other.stop()


async def test_coil_connector_and_step_share_the_triggers_connection(plc: Plc, sink: RecordingSink,
                                                                     tmp_path: Path) -> None:
    """One connection per device (crisisbot/hubs/modbus.py): the trigger polls and the
    `modbus-coil` connector (or the step's older trigger/device form) writes through it."""
    hubs = Hubs()
    trigger = ModbusTrigger("plcs", ModbusConfig.model_validate(
        {"type": "modbus", "devices": {"hall": device(plc.port, [{"name": "btn", "address": 0}])}}), sink)
    trigger.hubs = hubs
    coil = ModbusCoil("relays", ModbusCoil.Config.model_validate(
        {"type": "modbus-coil", "host": "127.0.0.1", "port": plc.port, "timeout": "300ms"}),
        Services(data_dir=tmp_path, root=tmp_path, hubs=hubs))
    await trigger.start()
    await coil.start()
    link = ("modbus", "tcp", "127.0.0.1", plc.port)
    try:
        await coil.write_coil(12, True)
        assert await plc.get(COIL, 12) is True
        with pytest.raises(PermanentError):
            await coil.write_coil(5000, True)  # beyond the device's coils: exception response
        await polls(trigger)  # still polling, on the same connection
        assert plc.server is not None and len(plc.server.active_connections) == 1

        services = SimpleNamespace(hubs=hubs, bundle=SimpleNamespace(
            triggers={"plcs": SimpleNamespace(config=trigger.config)}))
        ctx = SimpleNamespace(services=services, connector={"relays": coil}.get, log=logging.getLogger("t"))
        spec = modbus_write.ModbusWriteStep(action="modbus_write", connector="relays", address=12, value=False)
        assert (await modbus_write.run(ctx, spec)).attempts == 1  # type: ignore[arg-type]
        assert await plc.get(COIL, 12) is False
        older = modbus_write.ModbusWriteStep(action="modbus_write", trigger="plcs", device="hall", address=12, value=True)
        assert (await modbus_write.run(ctx, older)).attempts == 1  # type: ignore[arg-type]
        assert await plc.get(COIL, 12) is True
        assert len(plc.server.active_connections) == 1
        for wrong, why in [({"connector": "nope"}, "no modbus-coil connector named 'nope'"),
                           ({"connector": None, "trigger": "nope", "device": "hall"}, "no modbus trigger named 'nope'"),
                           ({"connector": None, "trigger": "plcs", "device": "nowhere"}, "has no device 'nowhere'"),
                           ({"address": 5000}, "refused to write coil 5000")]:
            with pytest.raises(StepFailed, match=why):
                await modbus_write.run(ctx, spec.model_copy(update=wrong))  # type: ignore[arg-type]
    finally:
        await coil.stop()
        assert link in hubs  # the trigger still uses it
        await trigger.stop()
    assert link not in hubs  # closed with its last user


def test_the_step_names_a_connector_or_a_trigger_device() -> None:
    with pytest.raises(ValidationError, match="give `connector`"):
        modbus_write.ModbusWriteStep.model_validate({"action": "modbus_write", "address": 1, "value": True})
    with pytest.raises(ValidationError, match="give `connector`"):
        modbus_write.ModbusWriteStep.model_validate(
            {"action": "modbus_write", "connector": "relays", "trigger": "plcs", "device": "hall",
             "address": 1, "value": True})


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is needed to make a virtual serial cable")
@pytest.mark.skipif(importlib.util.find_spec("serial") is None, reason="Modbus RTU needs pyserial (pymodbus[serial])")
async def test_rtu_over_a_virtual_serial_line(tmp_path: Path, sink: RecordingSink, make_trigger: Any) -> None:
    a, b = tmp_path / "plc", tmp_path / "crisisbot"
    cable = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                             stderr=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(5):
            while not (a.exists() and b.exists()):
                await asyncio.sleep(0.02)
        server = ModbusSerialServer([sim_device(3)], port=os.fspath(a), baudrate=115200)
        await server.serve_forever(background=True)
        try:
            await make_trigger({"rs485": {"transport": "rtu", "unit": 3, "site": "paris", "poll": "50ms",
                                          "serial": {"port": os.fspath(b), "baudrate": 115200},
                                          "inputs": [{"name": "btn", "address": 4, "zone": "cellar"}]}})
            await asyncio.sleep(0.3)
            await server.context.async_setValues(3, DI, 4, [True])
            [alarm] = await sink.wait_for(1)
            assert (alarm.zone, alarm.input) == ("cellar", "rs485/btn")
        finally:
            await server.shutdown()
    finally:
        cable.terminate()
        cable.wait()


def test_config_errors_are_explained() -> None:
    def load(inputs: list[dict[str, Any]], **extra: Any) -> None:
        ModbusConfig.model_validate({"type": "modbus", "devices": {"d": device(502, inputs, **extra)}})

    with pytest.raises(ValidationError, match="needs `bit`"):
        load([{"name": "x", "table": "input_register", "address": 1}])
    with pytest.raises(ValidationError, match="registers only"):
        load([{"name": "x", "address": 1, "bit": 3}])
    with pytest.raises(ValidationError, match="unique"):
        load([{"name": "x", "address": 1}, {"name": "x", "address": 2}])
    with pytest.raises(ValidationError, match="needs `serial`"):
        load([], transport="rtu")


async def test_restart_keeps_latches_and_a_reported_fault(plc: Plc, sink: RecordingSink) -> None:
    """What the daemon hands the next incarnation of the input on a reload or a restart."""
    config = ModbusConfig.model_validate({"type": "modbus", "devices": {
        "hall": device(plc.port, [{"name": "btn", "address": 1, "latch": True},
                                  {"name": "key-reset", "address": 2, "role": "reset"}]),
        "cellar": device(free_tcp_port(), [{"name": "b", "address": 0}], offline_after="200ms",
                         backoff_max="100ms")}})
    first = ModbusTrigger("plcs", config, sink)
    await first.start()
    await plc.set(DI, 1, True)
    await sink.wait_for(2)  # the button, and the cellar device that never answers
    await plc.set(DI, 1, False)  # released, but latched
    await polls(first)
    await first.close()

    again = ModbusTrigger("plcs", config, sink, state=first.state)
    await again.start()
    try:
        await plc.set(DI, 1, True)  # pressed again while latched: nothing
        await polls(again, 10)
        assert sorted(a.kind for a in sink.alarms) == sorted([EventKind.panic, EventKind.input_fault])
        assert again.stats["faults"] == 0  # the silent cellar device is not reported twice
        await plc.set(DI, 1, False)
        await plc.set(DI, 2, True)  # the key switch clears the latch kept from the first run
        await polls(again)
        await plc.set(DI, 2, False)
        await plc.set(DI, 1, True)
        await sink.wait_for(3)
    finally:
        await again.stop()
    assert [a.input for a in sink.of(EventKind.panic)] == ["hall/btn", "hall/btn"]


def free_tcp_port() -> int:
    """A port nobody listens on: a device that never answers."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
