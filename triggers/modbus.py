"""Modbus input: poll panic buttons and dry contacts on PLCs and I/O modules (TCP or RTU).

Every device is polled in its own task at its own interval; each table an input
lives in (discrete inputs, coils, input/holding register bits) is read in one
request per poll. An input fires on its debounced rising edge, once however long
the button is held, and with `latch: true` not again until a `role: reset` input
(e.g. the key switch) is operated or `reset_latches()` is called.

Link supervision: a device that has not answered for `offline_after` raises one
`input_fault` alarm, is reconnected with exponential backoff, and raises a
`restore` when it answers again. Failed reads never change an input's state, and
the state from before the outage is kept, so a button held through the outage does
not fire again; a button first seen pressed after it does (it is real), flagged
`after_link_loss`. The connection is the device's shared hub (crisisbot/hubs/modbus.py),
through which the `modbus-coil` connector writes coils too.

Input states (held, latched) and reported faults live in the trigger's `state`, so
a reload or a restart of the daemon neither fires a held button again nor reports a
silent device twice (triggers/state.py).

Modbus frames are binary PDUs: `alarm.raw` holds the value read (device, table,
address, bit, value) rather than bytes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from crisisbot.config.types import Identifier, Reference, Seconds, Strict
from crisisbot.hubs.modbus import ModbusHub, ModbusLink, SerialSettings, acquire
from crisisbot.models import Alarm, EventKind, Severity
from crisisbot.retry import RetryPolicy
from triggers.base import Trigger

Table = Literal["discrete_input", "coil", "input_register", "holding_register"]
BIT_TABLES = {"discrete_input", "coil"}
MAX_COUNT = {"discrete_input": 2000, "coil": 2000, "input_register": 125, "holding_register": 125}
READ = {"discrete_input": "read_discrete_inputs", "coil": "read_coils",
        "input_register": "read_input_registers", "holding_register": "read_holding_registers"}


class ModbusInput(Strict):
    name: Identifier = Field(description="unique on its device, e.g. btn-reception")
    table: Table = "discrete_input"
    address: int = Field(ge=0, le=65535, description="0-based wire address")
    bit: int | None = Field(None, ge=0, le=15, description="bit of the register (registers only; 0 = LSB)")
    active: Literal["high", "low"] = Field("high", description="low: the contact opens on alarm (NC wiring)")
    debounce: int = Field(2, ge=1, le=100, description="consecutive identical reads before a change counts")
    role: Literal["alarm", "reset"] = Field("alarm", description="reset: operating it clears the device's latches")
    latch: bool = Field(False, description="after firing, stay in alarm until reset")
    site: Annotated[Identifier | None, Reference("sites")] = Field(None, description="default: the device's site")
    zone: str | None = None
    label: str = ""
    kind: EventKind = EventKind.panic
    severity: Severity = Severity.critical

    @model_validator(mode="after")
    def _bit(self) -> "ModbusInput":
        if self.table in BIT_TABLES and self.bit is not None:
            raise ValueError(f"`bit` applies to registers only, not to a {self.table}")
        if self.table not in BIT_TABLES and self.bit is None:
            raise ValueError(f"an input in a {self.table} needs `bit` (0-15)")
        return self


__all__ = ["ModbusConfig", "ModbusDevice", "ModbusInput", "ModbusTrigger", "SerialSettings"]


class ModbusDevice(ModbusLink):
    """A polled device: where it answers (transport, host/serial, unit, timeout) and its inputs."""

    site: Annotated[Identifier, Reference("sites")]
    poll: Seconds = Field(0.2, ge=0.01, description="poll interval")
    offline_after: Seconds = Field(3.0, gt=0, description="no answer for this long raises input_fault")
    backoff_max: Seconds = Field(30.0, gt=0, description="longest wait between reconnection attempts")
    inputs: list[ModbusInput] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_inputs(self) -> "ModbusDevice":
        names = [i.name for i in self.inputs]
        if len(names) != len(set(names)):
            raise ValueError("input names must be unique on a device")
        return self


class ModbusConfig(Strict):
    type: Literal["modbus"]
    devices: dict[Identifier, ModbusDevice] = Field(min_length=1)


@dataclass(slots=True)
class _InputState:
    config: ModbusInput
    stable: bool = False  # debounced state; inactive until proven otherwise
    candidate: bool = False
    count: int = 0
    latched: bool = False


@dataclass(slots=True)
class _Block:
    table: str
    start: int
    count: int
    inputs: list[_InputState]


@dataclass(slots=True)
class _Device:
    name: str
    config: ModbusDevice
    link: ModbusHub
    blocks: list[_Block]
    inputs: list[_InputState]
    last_ok: float
    faulted: bool = False
    since_fault: int | None = None  # good polls since the link came back
    last_error: str = ""


def _input_key(device: str, config: ModbusInput) -> str:
    return f"input:{device}/{config.name}"


def _wiring(config: ModbusInput) -> list[Any]:
    """What a saved state belongs to: the same name on another address is another input."""
    return [config.table, config.address, config.bit, config.active]


def _blocks(states: list[_InputState]) -> list[_Block]:
    """Group inputs into as few reads as the protocol's per-request limits allow."""
    blocks: list[_Block] = []
    for table in READ:
        chosen = sorted((s for s in states if s.config.table == table), key=lambda s: s.config.address)
        for state in chosen:
            last = blocks[-1] if blocks and blocks[-1].table == table else None
            if last and state.config.address - last.start < MAX_COUNT[table]:
                last.count = state.config.address - last.start + 1
                last.inputs.append(state)
            else:
                blocks.append(_Block(table, state.config.address, 1, [state]))
    return blocks


class ModbusTrigger(Trigger):
    Config = ModbusConfig
    config: ModbusConfig

    def __init__(self, *args: Any, clock: Any = time.monotonic, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.stats: dict[str, int] = dict.fromkeys(
            ("polls", "read_errors", "connect_errors", "alarms", "faults", "restores", "submit_errors"), 0)
        self._devices: dict[str, _Device] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._held: list[tuple[Any, ...]] = []  # hub keys this trigger uses
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        now = self.clock()
        for name, dc in self.config.devices.items():
            states = [_InputState(i) for i in dc.inputs]
            hub = acquire(self.hubs, dc)  # one user per device, released in stop()
            self._held.append(dc.link_key())
            self._devices[name] = dev = _Device(name, dc, hub, _blocks(states), states, now)
            self._restore(dev)
        self._tasks = [asyncio.create_task(self._run(d), name=f"modbus-{self.name}-{d.name}")
                       for d in self._devices.values()]
        self.log.info("polling %d Modbus device(s), %d input(s)", len(self._devices),
                      sum(len(d.inputs) for d in self._devices.values()))

    def _restore(self, dev: _Device) -> None:
        """Take back what the previous run knew: a button held through a reload or restart does
        not fire again, a device already reported silent is not reported twice."""
        for state in dev.inputs:
            saved = self.state.get(_input_key(dev.name, state.config))
            if saved and saved.get("wiring") == _wiring(state.config):  # rewired inputs start afresh
                state.stable = state.candidate = bool(saved.get("active"))
                state.latched = bool(saved.get("latched"))
        if self.state.get(f"device:{dev.name}"):
            dev.faulted, dev.since_fault = True, 0

    def _remember(self, dev: _Device, state: _InputState) -> None:
        value = ({"wiring": _wiring(state.config), "active": state.stable, "latched": state.latched}
                 if state.stable or state.latched else None)
        self.state.put(_input_key(dev.name, state.config), value)

    def _set_faulted(self, dev: _Device, faulted: bool) -> None:
        dev.faulted = faulted
        self.state.put(f"device:{dev.name}", {"faulted": True} if faulted else None)

    async def stop(self) -> None:
        # pymodbus can turn a cancellation that lands in a request into a failed read and
        # carry on (asyncio.wait_for in its transaction): the flag ends the poll loop then,
        # and the cancellation is repeated until every task has ended
        self._stopping = True
        pending = {t for t in self._tasks if not t.done()}
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        while self._held:  # once per device acquired, however often stop() is called
            self.hubs.release(self._held.pop())

    def reset_latches(self, device: str) -> None:
        dev = self._devices[device]
        for state in dev.inputs:
            state.latched = False
            self._remember(dev, state)

    # -- polling -----------------------------------------------------------------
    async def _run(self, dev: _Device) -> None:
        # a device that stops answering is polled less and less often, spread out in time
        reconnect, failures = RetryPolicy(first=dev.config.poll, cap=dev.config.backoff_max, jitter=0.2), 0
        while not self._stopping:
            started = self.clock()
            values = await self._read(dev)
            if self._stopping:
                return
            if values is not None:
                answered_before = dev.last_ok
                try:
                    failures = 0
                    dev.last_ok = self.clock()
                    if not dev.faulted or await self._link_alarm(dev, EventKind.restore):
                        if dev.faulted:
                            self._set_faulted(dev, False)
                        await self._evaluate(dev, values)
                    await asyncio.sleep(max(0.0, dev.config.poll - (self.clock() - started)))
                    continue
                except Exception:  # noqa: BLE001 - e.g. a short answer: treat as a failed read, keep supervising
                    self.stats["errors"] = self.stats.get("errors", 0) + 1
                    self.log.exception("device %s: unexpected answer; treated as a failed read", dev.name)
                    dev.last_ok = answered_before
            if not dev.faulted and self.clock() - dev.last_ok >= dev.config.offline_after:
                if await self._link_alarm(dev, EventKind.input_fault):
                    self._set_faulted(dev, True)
                    dev.since_fault = 0
                    for state in dev.inputs:  # debounce afresh once it answers again
                        state.candidate, state.count = state.stable, 0
            failures += 1
            await asyncio.sleep(reconnect.pause(failures))

    async def _read(self, dev: _Device) -> list[list[int] | list[bool]] | None:
        """One value list per block, or None if the device did not answer properly."""
        hub = dev.link
        client = hub.client
        async with hub.lock:
            try:
                if not await hub.connected():
                    self.stats["connect_errors"] += 1
                    dev.last_error = "connection refused or timed out"
                    return None
                values: list[list[int] | list[bool]] = []
                for block in dev.blocks:
                    reply = await getattr(client, READ[block.table])(
                        block.start, count=block.count, device_id=dev.config.unit)
                    if reply.isError():
                        self.stats["read_errors"] += 1
                        dev.last_error = f"exception response reading {block.table} {block.start}: {reply}"
                        return None
                    values.append(reply.bits if block.table in BIT_TABLES else reply.registers)
            except hub.failures as exc:
                self.stats["read_errors"] += 1
                dev.last_error = str(exc) or type(exc).__name__
                hub.drop()
                return None
        self.stats["polls"] += 1
        return values

    async def _evaluate(self, dev: _Device, values: list[list[int] | list[bool]]) -> None:
        if dev.since_fault is not None:
            dev.since_fault += 1
        for block, data in zip(dev.blocks, values):
            for state in block.inputs:
                c = state.config
                word = int(data[c.address - block.start])
                level = bool(word >> c.bit & 1) if c.bit is not None else bool(word)
                active = level if c.active == "high" else not level
                if active != state.candidate:
                    state.candidate, state.count = active, 0
                state.count += 1
                if state.count < c.debounce or active == state.stable:
                    continue
                if active and c.role == "reset":
                    self.reset_latches(dev.name)
                    self.log.info("latches of %s reset by %s", dev.name, c.name)
                elif active and not state.latched and not await self._fire(dev, state, word):
                    continue  # not stored: stay inactive so the next poll tries again
                state.stable = active
                if active and c.latch and c.role == "alarm":
                    state.latched = True
                self._remember(dev, state)
        if dev.since_fault is not None and dev.since_fault > max((s.config.debounce for s in dev.inputs), default=1):
            dev.since_fault = None

    async def _fire(self, dev: _Device, state: _InputState, word: int) -> bool:
        c, dc = state.config, dev.config
        where = f"{c.table} {c.address}" + (f" bit {c.bit}" if c.bit is not None else "")
        alarm = Alarm(
            source=self.name, site=c.site or dc.site, zone=c.zone, input=f"{dev.name}/{c.name}", kind=c.kind,
            severity=c.severity, label=c.label or c.name,
            details={"device": dev.name, "unit": dc.unit, "table": c.table, "address": c.address, "bit": c.bit,
                     "active": c.active, "after_link_loss": dev.since_fault is not None},
            raw=f"{dev.name} unit {dc.unit} {where} = {word} (active {c.active})",
        )
        try:
            await self.sink.submit(alarm)
        except Exception:
            self.stats["submit_errors"] += 1
            self.log.exception("could not store the alarm of %s/%s; retrying on the next poll", dev.name, c.name)
            return False
        self.stats["alarms"] += 1
        self.log.warning("input %s/%s active: alarm %s", dev.name, c.name, alarm.id)
        return True

    async def _link_alarm(self, dev: _Device, kind: EventKind) -> bool:
        faulted = kind is EventKind.input_fault
        target = dev.config.host if dev.config.transport == "tcp" else dev.config.serial.port  # type: ignore[union-attr]
        details: dict[str, Any] = {"device": dev.name, "unit": dev.config.unit, "address": target}
        if faulted:
            details["error"] = dev.last_error
        if not await self.submit_link_alarm(
                kind, site=dev.config.site, input=dev.name, what=dev.name, errors="submit_errors",
                counted="faults" if faulted else "restores", details=details,
                label=f"Modbus device {dev.name} {'not answering' if faulted else 'answering again'}",
                raw=f"{dev.name}: {dev.last_error if faulted else 'answered'}"):
            return False
        self.log.warning("Modbus device %s %s", dev.name, "stopped answering" if faulted else "answers again")
        return True
