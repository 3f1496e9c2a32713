"""Schema of `config.yaml`: sites, inputs, outputs, store, logging, defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr

from crisisbot.config.types import Identifier, Language, PlainText, Seconds, Strict, TimeZoneName
from crisisbot.lifecycle.schema import LifecycleConfig
from crisisbot.listeners import ListenerLimits

PluginSpec = dict[str, Any]  # `type:` plus that plugin's own Config fields, checked by the plugin


class Organization(Strict):
    name: PlainText = "crisisbot"
    domains: list[str] = Field(
        default_factory=list,
        description="email domains of the organization; other addresses count as external",
    )
    language: Language = "fr"


class Zone(Strict):
    name: PlainText = ""
    cameras: list[Identifier] = Field(default_factory=list)


class Site(Strict):
    name: PlainText
    timezone: TimeZoneName = "Europe/Paris"
    language: Language | None = None
    country: str | None = Field(None, description="ISO country code, for public holidays")
    address: PlainText = ""
    cameras: dict[Identifier, PluginSpec] = Field(default_factory=dict)
    zones: dict[Identifier, Zone] = Field(default_factory=dict)
    dynamic_zones: bool = Field(
        False, description="true: inputs name zones at run time (e.g. MQTT topic templates), so playbooks "
        "may match zones not listed under `zones`",
    )


class Paths(Strict):
    playbooks: str = "playbooks"
    contacts: str = "contacts"
    templates: str = "templates"
    data: str = Field("var", description="store, outbox, snapshots, keys")


class StoreConfig(Strict):
    url: str = Field(
        "sqlite:///{data}/crisisbot.db",
        description="sqlite:///path (default) or postgresql://user@host/db",
    )


class IncidentDefaults(Strict):
    join_window: Seconds = Field(600.0, description="alarms within this delay join the open incident")
    step_timeout: Seconds = 30.0
    meeting_timeout: Seconds = 10.0
    image_retention: Seconds = Field(
        2592000.0, description="camera images are purged this long after capture (default 30 days)"
    )


class MailFallback(Strict):
    """Who learns at once that the committee could not be reached, and through which path."""

    to: list[Identifier] = Field(min_length=1, description="contact groups or people")
    via: list[Identifier] = Field(min_length=1, description="mail connectors, in order (e.g. outbox, a second relay)")


class MailConfig(Strict):
    sender: str = Field("crisisbot <crisisbot@localhost>", alias="from")
    via: list[Identifier] = Field(
        default_factory=lambda: ["outbox"],
        description="mail connectors tried in order; later ones are fallbacks",
    )
    retries: int = Field(2, ge=0, le=10, description="attempts per connector after the first")
    backoff: Seconds = 0.5
    retry_cap: Seconds = Field(
        300.0, description="longest pause between background retries of a message the step stopped waiting for"
    )
    fallback: MailFallback | None = Field(
        None, description="meta-alert when a message step reaches fewer people than its `require` rule"
    )



class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class ControlConfig(Strict):
    socket: str = Field("{data}/crisisbot.sock", description="local control socket (mode 0600)")


class WebUser(Strict):
    password_hash: SecretStr = Field(
        description="from `crisisbot hash-password`; keep it in a secret file: ${file:secrets/NAME.hash}"
    )
    role: Literal["operator", "viewer", "admin"] = Field(
        "operator", description="viewers see incidents; operators also acknowledge, stand down and revoke "
        "links; admins also list and revoke console sessions"
    )
    person: Identifier | None = Field(None, description="contact id this user acknowledges as")


class WebConfig(Strict):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8440, ge=0, le=65535)
    public_url: str | None = Field(
        None, description="base URL people's browsers reach (links in emails); default http://host:port"
    )
    users: dict[Identifier, WebUser] = Field(
        default_factory=dict, description="console accounts; none: the console refuses every login"
    )
    session_ttl: Seconds = Field(43200.0, description="console sessions expire after this delay")
    session_idle: Seconds = Field(3600.0, description="console sessions unused this long are ended")
    health_token: SecretStr | None = Field(
        None, description="bearer token that unlocks /health details; without it /health says up/degraded/down"
    )
    liveview_grace: Seconds = Field(
        900.0, description="live-view links keep working this long after an incident is stood down or cancelled"
    )
    limits: ListenerLimits = Field(default_factory=ListenerLimits,
                                   description="connection caps and timeouts of the console's listener")
    isolation: Literal["process", "inline"] = Field(
        "process",
        description="process (recommended): the web console, its JSON API, the personal links and /health run in "
                    "a separate process at the lowest CPU priority, which can read the incident store but not write "
                    "it (every change goes to the daemon as a command), so a flood of web requests cannot slow an "
                    "alarm and a crash of the web process leaves the alarm path running (it is restarted). inline: "
                    "in the daemon's own process, as before (for tests and systems without process support)")


class DaemonConfig(Strict):
    organization: Organization = Field(default_factory=Organization)
    sites: dict[Identifier, Site] = Field(default_factory=dict)
    triggers: dict[Identifier, PluginSpec] = Field(default_factory=dict)
    connectors: dict[Identifier, PluginSpec] = Field(default_factory=dict)
    mail: MailConfig = Field(default_factory=MailConfig)
    incidents: IncidentDefaults = Field(default_factory=IncidentDefaults)
    store: StoreConfig = Field(default_factory=StoreConfig)
    paths: Paths = Field(default_factory=Paths)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
