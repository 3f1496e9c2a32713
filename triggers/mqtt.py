"""MQTT input: Zigbee/LoRa panic buttons and building-management gateways through a broker.

Subscribes with QoS 1 on a persistent session (fixed client id, clean_session off),
so the broker keeps messages while crisisbot is away. Each message is matched
against the `rules` in order; the first rule whose `match` fields all agree maps
it to site/zone/kind/label, which may quote topic levels and payload fields
(`"{topic[1]}"`, `"{payload[room]}"`). Messages no rule matches (battery reports,
link quality) are only counted.

A message is acknowledged to the broker only once its alarm is stored: aiomqtt
has no manual acknowledgement yet (empicano/aiomqtt#345), so the underlying paho
client's `manual_ack_set`/`ack` are used. Group commit: the messages that arrived
while the previous batch was being stored (up to `max_inflight`) are stored together
(one transaction, one WAL sync), then their PUBACKs go out in the order the messages
came, as MQTT 3.1.1 §4.6 requires. If storing fails the session is reconnected
without that PUBACK (nor any later one), and the broker delivers the message again;
later messages that were stored but not acknowledged are recognized when they come
again and only acknowledged.

A site computed from the message (`site: "{payload[building]}"`) that config.yaml
does not define is refused, logged and counted (`unknown_site`): an incident for a
site nobody configured would reach nobody who knows the place.

Supervision: a rule with `offline_after` treats each topic it matches as a device;
a device silent longer than that raises one `input_fault` alarm, and a `restore`
when it speaks again, as Modbus devices and DC-09 panels do. A device is supervised
from its first message on; silence is counted only while subscribed (a broker
outage is the input's own failure, logged and counted, not every device's); devices and reported faults are kept across reloads and
restarts in the trigger's `state` (triggers/state.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Coroutine, Literal

import aiomqtt
from pydantic import Field, SecretStr, model_validator

from crisisbot.config.types import Seconds, Strict
from crisisbot.models import Alarm, EventKind, Severity
from crisisbot.retry import RetryPolicy
from triggers.base import Trigger
from triggers.state import monotonic_from_wall, wall_from_monotonic

_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
Scalar = str | int | float | bool | None


class MqttTls(Strict):
    ca_file: Path | None = Field(None, description="CA bundle of the broker (default: the system's)")
    cert_file: Path | None = Field(None, description="client certificate, if the broker asks for one")
    key_file: Path | None = None
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.check_hostname = self.check_hostname
        return ctx


class MqttRule(Strict):
    topic: str = Field(description="MQTT filter, e.g. zigbee2mqtt/+ or bms/#")
    match: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict, description="payload field (a.b for nested) -> value, or list of accepted values")
    site: str = Field(description="site id, or a template such as '{payload[building]}'")
    zone: str | None = Field(None, description="e.g. '{topic[1]}' (the 2nd topic level) or '{payload[room]}'")
    label: str = ""
    kind: EventKind = Field(EventKind.panic, description="the kind, or the fallback when `kinds` lacks the value")
    kind_field: str | None = Field(None, description="payload field whose value picks the kind through `kinds`")
    kinds: dict[str, EventKind] = Field(default_factory=dict)
    severity: Severity = Severity.critical
    offline_after: Seconds | None = Field(
        None, gt=0, description="each topic this rule matches is a device: silent longer than this "
        "(any message counts, matched or not) raises input_fault; supervised from its first message")

    @model_validator(mode="after")
    def _kinds(self) -> "MqttRule":
        if self.kind_field and not self.kinds:
            raise ValueError("`kind_field` needs a `kinds` table (payload value -> kind)")
        return self

    @cached_property
    def wildcard(self) -> aiomqtt.Wildcard:
        """The filter, parsed once (`Topic.matches(str)` parses and validates it per message)."""
        return aiomqtt.Wildcard(self.topic)

    def accepts(self, topic: aiomqtt.Topic, payload: dict[str, Any]) -> bool:
        if not topic.matches(self.wildcard):
            return False
        for path, expected in self.match.items():
            value = field(payload, path)
            if not any(_same(value, e) for e in (expected if isinstance(expected, list) else [expected])):
                return False
        return True


class MqttConfig(Strict):
    type: Literal["mqtt"]
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535, description="1883 plain, 8883 TLS")
    username: str | None = None
    password: SecretStr | None = Field(None, description="e.g. ${MQTT_PASSWORD}")
    tls: MqttTls | None = None
    client_id: str | None = Field(None, description="fixed id for the persistent session (default: crisisbot-<name>)")
    keepalive: int = Field(30, ge=5, le=3600)
    max_payload: int = Field(65536, ge=64, description="larger messages are dropped and counted")
    max_inflight: int = Field(
        100, ge=1, le=65535, description="messages being stored at once (committed together, acknowledged in order)")
    backoff_max: Seconds = Field(30.0, gt=0)
    rules: list[MqttRule] = Field(min_length=1)


def field(payload: dict[str, Any], path: str) -> Any:
    """`a.b.c` in nested objects; None if absent."""
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _same(value: Any, expected: Scalar) -> bool:
    if isinstance(value, bool) or isinstance(expected, bool) or value is None or expected is None:
        return value is expected
    return str(value) == str(expected)


class _Unmapped(ValueError):
    """A matching rule could not build an alarm from this message (missing field, bad site)."""


class _UnknownSite(_Unmapped):
    """The message names a site config.yaml does not define."""


class _StoreFailed(Exception):
    """A message could not be stored: reconnect without its PUBACK so the broker sends it again."""


@dataclass(slots=True)
class _Device:
    """A supervised topic: where it is, when it last spoke, whether it is reported silent."""

    topic: str
    rule: MqttRule
    site: str
    zone: str | None
    last_seen: float  # the trigger's monotonic clock
    faulted: bool = False


class MqttTrigger(Trigger):
    Config = MqttConfig
    config: MqttConfig

    def __init__(self, *args: Any, clock: Any = time.monotonic, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.stats: dict[str, int] = dict.fromkeys(
            ("messages", "alarms", "unmatched", "unmapped", "unknown_site", "bad_payload", "oversized",
             "store_errors", "redelivered", "faults", "restores", "connections", "connection_errors"), 0)
        self.subscribed = asyncio.Event()  # set while subscribed (tests and health checks wait on it)
        self._task: asyncio.Task[None] | None = None
        self._storing = False  # a batch is being stored: `stop` waits for its PUBACKs
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._devices: dict[str, _Device] = {}
        self._stored_unacked: Counter[tuple[str, bytes]] = Counter()  # stored, PUBACK withheld
        self._listening_since: float | None = None  # devices cannot be heard while we are not subscribed
        self._supervised = any(r.offline_after for r in self.config.rules)

    async def start(self) -> None:
        self._stopping = False
        self._restore_devices()
        self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.name}")
        if any(r.offline_after for r in self.config.rules):
            self._supervisor = asyncio.create_task(self._supervise(), name=f"mqtt-supervision-{self.name}")

    async def stop(self) -> None:
        """Stop receiving; messages being stored finish and are acknowledged, then disconnect."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        if self._task is not None:
            if self._storing:  # the session returns after this batch's PUBACKs
                await asyncio.wait({self._task}, timeout=5.0)
            self._task.cancel()  # waiting for a message, (re)connecting, or the store hangs
        await asyncio.gather(*(t for t in (self._task, self._supervisor) if t), return_exceptions=True)

    def _client(self) -> aiomqtt.Client:
        c = self.config
        return aiomqtt.Client(
            c.host, c.port, identifier=c.client_id or f"crisisbot-{self.name}", clean_session=False,
            username=c.username, password=c.password.get_secret_value() if c.password else None,
            tls_context=c.tls.context() if c.tls else None, keepalive=c.keepalive,
        )

    async def _run(self) -> None:
        # spread out: after a broker restart, every client must not come back at once
        reconnect, failures = RetryPolicy(first=0.5, cap=self.config.backoff_max, jitter=0.2), 0
        while not self._stopping:
            try:
                async with self._client() as client:
                    client._client.manual_ack_set(True)  # see module docstring
                    for topic in dict.fromkeys(r.topic for r in self.config.rules):
                        await client.subscribe(topic, qos=1)
                    self.stats["connections"] += 1
                    self._listening_since = self.clock()
                    self.subscribed.set()
                    self.log.info("subscribed to %d topic filter(s) on %s:%s", len(self.config.rules),
                                  self.config.host, self.config.port)
                    failures = 0
                    await self._session(client)
            except aiomqtt.MqttError as exc:
                self.stats["connection_errors"] += 1
                self.log.warning("MQTT broker %s:%s: %s", self.config.host, self.config.port, exc)
            except _StoreFailed:
                pass  # logged where it happened; reconnecting makes the broker send it again
            except Exception:  # noqa: BLE001 - the input must outlive any one message; reconnect
                self.stats["errors"] = self.stats.get("errors", 0) + 1
                self.log.exception("MQTT input failed; reconnecting")
            self.subscribed.clear()
            self._listening_since = None
            if self._stopping:
                return
            failures += 1
            await asyncio.sleep(reconnect.pause(failures))

    # -- one session: take what arrived, store it in one go, acknowledge in order --------
    async def _session(self, client: aiomqtt.Client) -> None:
        """Group commit: every message that has arrived (up to `max_inflight`) is one batch,
        whose alarms the store commits together (one transaction, one WAL sync); then each
        message gets its PUBACK, in order. Messages arriving meanwhile wait in aiomqtt's
        queue and make the next batch. Why: messages trickling in one by one were each
        committed and synced alone (~0.5 ms of CPU per message, more than all the rest);
        a batch shares that cost, and grows by itself when the store falls behind.

        Returns when `stop` asks (after the batch's PUBACKs); raises `_StoreFailed` or the
        connection's error otherwise."""
        messages = client.messages
        # aiomqtt's incoming queue, drained without a task per message (its iterator makes one)
        ready: asyncio.Queue[aiomqtt.Message] = client._queue  # noqa: SLF001
        while not self._stopping:
            # `stop` cancels the wait for a message (nothing taken, nothing owed); one already
            # waiting is taken at once (aiomqtt's iterator makes a task and a wait per call)
            batch = [ready.get_nowait() if not ready.empty() else await anext(messages)]
            while len(batch) < self.config.max_inflight and not ready.empty():
                batch.append(ready.get_nowait())
            self._storing = True  # `stop` now lets the batch finish and be acknowledged
            try:
                stored = await self._store(batch)
            finally:
                self._storing = False
            self._acknowledge(client, batch, stored)

    def _acknowledge(self, client: aiomqtt.Client, batch: list[aiomqtt.Message], stored: list[bool]) -> None:
        """PUBACK in order up to the first message not stored, then raise `_StoreFailed`
        (the reconnection makes the broker send it and the later ones again). A later
        message that was stored, or any message when the link has dropped, has its PUBACK
        withheld: remembered, so that its repeat is only acknowledged, not stored twice."""
        failed = False
        for message, ok in zip(batch, stored):
            failed = failed or not ok
            if failed or not client._client.is_connected():
                if ok:
                    self._stored_unacked[(message.topic.value, _raw(message))] += 1
                continue
            client._client.ack(message.mid, message.qos)
        if len(self._stored_unacked) > 10_000:  # a broker that never sends them again
            self._stored_unacked.clear()
        if failed:
            raise _StoreFailed

    async def _store(self, batch: list[aiomqtt.Message]) -> list[bool]:
        """Whether each message is safely handled: its alarms stored, or none to store.
        The alarms of the batch are submitted together, so the store commits them as one."""
        stored = [True] * len(batch)
        pending: list[tuple[int, Coroutine[Any, Any, bool]]] = []
        for index, message in enumerate(batch):
            work = self._examine(message)
            if work is not None:
                pending.append((index, work))
        if len(pending) == 1:  # no task needed for a message that came alone
            index, work = pending[0]
            stored[index] = await work
        elif pending:
            for (index, _), ok in zip(pending, await asyncio.gather(*(work for _, work in pending))):
                stored[index] = ok
        return stored

    # -- one message ---------------------------------------------------------------
    def _examine(self, message: aiomqtt.Message) -> Coroutine[Any, Any, bool] | None:
        """Count, parse and map the message; the storing it needs (a device's restore, its
        alarm), or None if there is nothing to store (acknowledged as is)."""
        topic = message.topic.value
        raw = _raw(message)
        if self._stored_unacked and self._stored_unacked[(topic, raw)] > 0:  # stored, then sent again
            self._stored_unacked[(topic, raw)] -= 1
            if not self._stored_unacked[(topic, raw)]:
                del self._stored_unacked[(topic, raw)]
            self.stats["redelivered"] += 1
            return None
        self.stats["messages"] += 1
        if len(raw) > self.config.max_payload:
            self.stats["oversized"] += 1
            self.log.warning("dropped a %d-byte message on %s (max_payload %d)", len(raw), topic,
                             self.config.max_payload)
            return self._then(self._heard(message.topic, None), None)
        try:
            text = raw.decode("utf-8")
            payload = _parse(text)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            self.stats["bad_payload"] += 1
            self.log.warning("message on %s is neither UTF-8 JSON nor plain text: %s", topic, exc)
            return self._then(self._heard(message.topic, None), None)
        restore = self._heard(message.topic, payload)
        rule = next((r for r in self.config.rules if r.accepts(message.topic, payload)), None)
        if rule is None:
            self.stats["unmatched"] += 1
            self.log.debug("no rule for message on %s", topic)
            return self._then(restore, None)
        try:
            alarm = self._alarm(rule, topic, payload, text)
        except _UnknownSite as exc:
            self.stats["unknown_site"] += 1
            self.log.warning("refused the message on %s (rule %s): %s", topic, rule.topic, exc)
            return self._then(restore, None)
        except _Unmapped as exc:
            self.stats["unmapped"] += 1
            self.log.warning("message on %s matched rule %s but %s", topic, rule.topic, exc)
            return self._then(restore, None)
        return self._then(restore, alarm)

    def _then(self, restore: _Device | None, alarm: Alarm | None) -> Coroutine[Any, Any, bool] | None:
        if restore is not None:
            return self._restore_then_submit(restore, alarm)
        return None if alarm is None else self._submit(alarm)

    async def _restore_then_submit(self, device: _Device, alarm: Alarm | None) -> bool:
        """A device heard again: its restore first; without it stored, nor the message's alarm
        (False: the message comes again, and the device is still seen as faulted)."""
        if not await self._device_alarm(device, EventKind.restore):
            device.faulted = True
            return False
        self._note(device)
        return True if alarm is None else await self._submit(alarm)

    async def _submit(self, alarm: Alarm) -> bool:
        """Store the alarm; False (logged, counted) if the store failed."""
        try:
            await self.sink.submit(alarm)
        except Exception:
            self.stats["store_errors"] += 1
            self.log.exception("could not store the alarm from %s; the broker will deliver it again", alarm.input)
            return False
        self.stats["alarms"] += 1
        return True

    def _site(self, rule: MqttRule, values: dict[str, Any]) -> str:
        site = _render(rule.site, values)
        if not _IDENTIFIER.match(site):
            raise _Unmapped(f"site {site!r} is not a site id")
        if not self.sink.known_site(site):
            raise _UnknownSite(f"site {site!r} is not defined under `sites:` in config.yaml")
        return site

    def _alarm(self, rule: MqttRule, topic: str, payload: dict[str, Any], text: str) -> Alarm:
        values = {"topic": topic.split("/"), "payload": payload}
        site = self._site(rule, values)
        kind = rule.kind
        if rule.kind_field:
            value = field(payload, rule.kind_field)
            kind = rule.kinds.get(str(value), rule.kind)
            if str(value) not in rule.kinds:
                self.log.warning("%s=%r on %s is not in `kinds`: raising %s", rule.kind_field, value, topic, kind.value)
        zone = label = None
        try:  # an alarm without zone or with a plain label is better than no alarm
            zone = _render(rule.zone, values) if rule.zone else None
            label = _render(rule.label, values) if rule.label else None
        except _Unmapped as exc:
            self.log.warning("message on %s: %s", topic, exc)
        return Alarm(
            source=self.name, site=site, zone=zone, input=topic, kind=kind, severity=rule.severity,
            label=label or topic, details={"topic": topic, "rule": rule.topic, "payload": payload}, raw=text,
        )

    # -- device supervision ----------------------------------------------------------
    def _heard(self, topic: aiomqtt.Topic, payload: dict[str, Any] | None) -> _Device | None:
        """Restart the device's silence timer; the device if it was reported silent (its
        restore is then stored before the message is acknowledged)."""
        if not self._supervised:
            return None
        device = self._devices.get(topic.value)
        if device is None:
            rule = next((r for r in self.config.rules if r.offline_after and topic.matches(r.wildcard)), None)
            if rule is None or payload is None:
                return None
            values = {"topic": topic.value.split("/"), "payload": payload}
            try:
                site = self._site(rule, values)
                zone = _render(rule.zone, values) if rule.zone else None
            except _Unmapped as exc:
                self.log.warning("device %s is not supervised: %s", topic.value, exc)
                return None
            device = self._devices[topic.value] = _Device(topic.value, rule, site, zone, self.clock())
            self.log.info("supervising device %s (silent after %.0f s: input_fault)", topic.value, rule.offline_after)
        device.last_seen = self.clock()
        if device.faulted:
            device.faulted = False  # now: a second message must not restore it again
            return device
        self._note(device)
        return None

    async def _supervise(self) -> None:
        periods = [r.offline_after for r in self.config.rules if r.offline_after]
        tick = min(max(min(periods) / 10, 0.05), 5.0)
        while True:
            await asyncio.sleep(tick)
            now, since = self.clock(), self._listening_since
            if since is None:  # the broker link is down (logged, counted): no device can be heard
                continue
            for device in list(self._devices.values()):
                limit = device.rule.offline_after or 0
                if device.faulted or now - max(device.last_seen, since) <= limit:
                    continue
                self.log.warning("device %s silent for %.0f s: raising input_fault", device.topic,
                                 now - device.last_seen)
                device.faulted = True
                if await self._device_alarm(device, EventKind.input_fault):
                    self._note(device)
                else:
                    device.faulted = False  # tried again at the next tick

    async def _device_alarm(self, device: _Device, kind: EventKind) -> bool:
        silent = kind is EventKind.input_fault
        return await self.submit_link_alarm(
            kind, site=device.site, zone=device.zone, input=device.topic, what=f"device {device.topic}",
            errors="store_errors", counted="faults" if silent else "restores",
            label=f"MQTT device {device.topic} {'silent' if silent else 'reporting again'}",
            details={"topic": device.topic, "rule": device.rule.topic, "offline_after": device.rule.offline_after},
            raw=f"supervision: {device.topic} {'silent' if silent else 'heard'}")

    def _note(self, device: _Device) -> None:
        """Save the device (its silence timer to the second: few writes, whatever the traffic)."""
        self.state.put(f"device:{device.topic}", {
            "rule": device.rule.topic, "site": device.site, "zone": device.zone, "faulted": device.faulted,
            "last_seen": int(wall_from_monotonic(device.last_seen, self.clock))})

    def _restore_devices(self) -> None:
        """Devices supervised before this reload or restart, with their deadlines and faults;
        a deadline that passed while the daemon was down restarts from now (the device could
        not be heard meanwhile)."""
        now = self.clock()
        self._devices = {}
        for key, saved in self.state.items("device:"):
            topic = key[len("device:"):]
            rule = next((r for r in self.config.rules if r.offline_after and r.topic == saved.get("rule")
                         and aiomqtt.Topic(topic).matches(r.wildcard)), None)
            if rule is None or not rule.offline_after:
                self.state.put(key, None)  # no longer supervised
                continue
            last = min(now, monotonic_from_wall(saved.get("last_seen", 0), self.clock))
            self._devices[topic] = _Device(topic, rule, saved["site"], saved.get("zone"),
                                           last if now - last < rule.offline_after else now,
                                           bool(saved.get("faulted")))


def _raw(message: aiomqtt.Message) -> bytes:
    return message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()


def _parse(text: str) -> dict[str, Any]:
    """A JSON object as is; other JSON values and plain text (`ON`, `1`) as {"value": ...}."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        payload = json.loads(stripped)  # looks like JSON: broken JSON is an error, not text
    else:
        try:
            payload = json.loads(stripped)
        except json.JSONDecodeError:
            payload = stripped
    return payload if isinstance(payload, dict) else {"value": payload}


def _render(template: str, values: dict[str, Any]) -> str:
    try:
        return template.format(**values)
    except Exception as exc:  # noqa: BLE001 - any payload shape a template does not fit is "unmapped"
        raise _Unmapped(f"{template!r} cannot be filled: {exc!r}") from None
