"""MQTT input: Zigbee/LoRa panic buttons and building-management gateways through a broker.

Subscribes with QoS 1 on a persistent session (fixed client id, clean_session off),
so the broker keeps messages while crisisbot is away. Each message is matched
against the `rules` in order; the first rule whose `match` fields all agree maps
it to site/zone/kind/label, which may quote topic levels and payload fields
(`"{topic[1]}"`, `"{payload[room]}"`). Messages no rule matches (battery reports,
link quality) are only counted.

A message is acknowledged to the broker only once its alarm is stored: aiomqtt
has no manual acknowledgement yet (empicano/aiomqtt#345), so the underlying paho
client's `manual_ack_set`/`ack` are used. If storing fails the session is
reconnected without that PUBACK, and the broker delivers the message again.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
from pathlib import Path
from typing import Any, Literal

import aiomqtt
from pydantic import Field, SecretStr, model_validator

from crisisbot.config.types import Seconds, Strict
from crisisbot.models import Alarm, EventKind, Severity
from triggers.base import Trigger

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

    @model_validator(mode="after")
    def _kinds(self) -> "MqttRule":
        if self.kind_field and not self.kinds:
            raise ValueError("`kind_field` needs a `kinds` table (payload value -> kind)")
        return self

    def accepts(self, topic: aiomqtt.Topic, payload: dict[str, Any]) -> bool:
        if not topic.matches(self.topic):
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


class MqttTrigger(Trigger):
    Config = MqttConfig
    config: MqttConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats: dict[str, int] = dict.fromkeys(
            ("messages", "alarms", "unmatched", "unmapped", "bad_payload", "oversized", "store_errors",
             "connections", "connection_errors"), 0)
        self.subscribed = asyncio.Event()  # set while subscribed (tests and health checks wait on it)
        self._task: asyncio.Task[None] | None = None
        self._handling = asyncio.Lock()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            async with self._handling:  # let the message being stored finish
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _client(self) -> aiomqtt.Client:
        c = self.config
        return aiomqtt.Client(
            c.host, c.port, identifier=c.client_id or f"crisisbot-{self.name}", clean_session=False,
            username=c.username, password=c.password.get_secret_value() if c.password else None,
            tls_context=c.tls.context() if c.tls else None, keepalive=c.keepalive,
        )

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            try:
                async with self._client() as client:
                    client._client.manual_ack_set(True)  # see module docstring
                    for topic in dict.fromkeys(r.topic for r in self.config.rules):
                        await client.subscribe(topic, qos=1)
                    self.stats["connections"] += 1
                    self.subscribed.set()
                    self.log.info("subscribed to %d topic filter(s) on %s:%s", len(self.config.rules),
                                  self.config.host, self.config.port)
                    backoff = 0.0
                    async for message in client.messages:
                        async with self._handling:
                            stored = await self._handle(message)
                        if not stored:
                            break  # reconnect without PUBACK: the broker sends it again
                        client._client.ack(message.mid, message.qos)
            except aiomqtt.MqttError as exc:
                self.stats["connection_errors"] += 1
                self.log.warning("MQTT broker %s:%s: %s", self.config.host, self.config.port, exc)
            except Exception:  # noqa: BLE001 - the input must outlive any one message; reconnect
                self.stats["errors"] = self.stats.get("errors", 0) + 1
                self.log.exception("MQTT input failed; reconnecting")
            self.subscribed.clear()
            backoff = min(max(0.5, backoff * 2), self.config.backoff_max)
            await asyncio.sleep(backoff * random.uniform(0.8, 1.0))

    async def _handle(self, message: aiomqtt.Message) -> bool:
        """Store the message's alarm if a rule maps it; False only if storing failed."""
        self.stats["messages"] += 1
        topic = message.topic.value
        raw = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        if len(raw) > self.config.max_payload:
            self.stats["oversized"] += 1
            self.log.warning("dropped a %d-byte message on %s (max_payload %d)", len(raw), topic,
                             self.config.max_payload)
            return True
        try:
            text = raw.decode("utf-8")
            payload = _parse(text)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            self.stats["bad_payload"] += 1
            self.log.warning("message on %s is neither UTF-8 JSON nor plain text: %s", topic, exc)
            return True
        rule = next((r for r in self.config.rules if r.accepts(message.topic, payload)), None)
        if rule is None:
            self.stats["unmatched"] += 1
            self.log.debug("no rule for message on %s", topic)
            return True
        try:
            alarm = self._alarm(rule, topic, payload, text)
        except _Unmapped as exc:
            self.stats["unmapped"] += 1
            self.log.warning("message on %s matched rule %s but %s", topic, rule.topic, exc)
            return True
        try:
            await self.sink.submit(alarm)
        except Exception:
            self.stats["store_errors"] += 1
            self.log.exception("could not store the alarm from %s; the broker will deliver it again", topic)
            return False
        self.stats["alarms"] += 1
        return True

    def _alarm(self, rule: MqttRule, topic: str, payload: dict[str, Any], text: str) -> Alarm:
        values = {"topic": topic.split("/"), "payload": payload}
        site = _render(rule.site, values)
        if not _IDENTIFIER.match(site):
            raise _Unmapped(f"site {site!r} is not a site id")
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
