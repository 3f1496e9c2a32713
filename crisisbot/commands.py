"""Every operation a person (or another instance) can ask of crisisbot, as typed data.

One class per operation, defined once: the CLI, the control socket, the web console,
the JSON API and the personal links all build these and hand them to the one handler
(`crisisbot.command_bus.CommandBus`). A command is plain, frozen, serialisable data
(pydantic), so it can cross a socket — today the local control socket, later another
instance of a cluster — and carries what the audit log and a retry need: who asked
(`actor`), through which front door (`via`), and an id that makes a resent command
return the first answer instead of acting twice (`command_id`).

Adding an operation = one `Command` subclass here (with its `Result`) + one handler
entry in `command_bus.HANDLERS`. The wire format is `encode`/`decode` below.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crisisbot.errors import CommandInvalid
from crisisbot.models import Alarm, IncidentStatus, new_id

PROTOCOL = 1  # the control socket's message shape; a peer speaking another one is refused clearly


class Result(BaseModel):
    """What a command answers; frozen data, like the command."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Command(BaseModel):
    """Base of every operation. `name` is its wire name (also the CLI's word for it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ClassVar[str]
    result: ClassVar[type[Result]]
    # why it cannot run without the daemon (None: the CLI may carry it out in-process)
    needs_daemon: ClassVar[str | None] = None

    actor: str = "cli"  # who asked: an operator's name, a contact id, "cli"
    via: str = "cli"  # the front door: cli, console, api, link, web, input
    command_id: str = Field(default_factory=new_id)  # idempotency key: resending returns the first result

    def __init__(self, **fields: Any) -> None:
        """A front door builds commands from what a person typed: bad fields are a
        `CommandInvalid` naming each field, not pydantic's report."""
        try:
            super().__init__(**fields)
        except ValidationError as exc:
            raise CommandInvalid(f"bad fields for command '{self.name}': {_problems(exc)}") from None


# -- alarms and the daemon -----------------------------------------------------------------------

class AlarmTaken(Result):
    alarm_id: str
    incident_id: str | None  # None: no playbook matched


class TriggerAlarm(Command):
    """The panic button from a terminal: store the alarm, let the engine match it."""

    name = "trigger"
    result = AlarmTaken
    alarm: Alarm


class Reloaded(Result):
    ok: bool  # False: the new files were refused, the last good configuration runs on


class Reload(Command):
    name = "reload"
    result = Reloaded
    needs_daemon = "reloading needs the running daemon (crisisbot run)"


class DaemonStatus(Result):
    digest: str
    inputs: dict[str, Any]


class Status(Command):
    name = "status"
    result = DaemonStatus
    needs_daemon = "the status is the running daemon's"


# -- incident lifecycle ----------------------------------------------------------------------------

class Acknowledged(Result):
    incident_id: str
    person: str
    new: bool  # False: this person had already acknowledged
    satisfied: bool  # the playbook's acknowledgement rule is met
    person_name: str


class Acknowledge(Command):
    name = "acknowledge"
    result = Acknowledged
    incident_id: str
    person: str
    response: Literal["on_it", "joining"] = "on_it"


class StoodDown(Result):
    incident_id: str
    outcome: str
    notified: int
    sent: int
    meeting: str  # ended, left open, none


class StandDown(Command):
    """End an incident; the outcome and reason are checked by the stand-down itself,
    whose refusals are worded for the person at the front door."""

    name = "stand-down"
    result = StoodDown
    incident_id: str
    outcome: IncidentStatus
    reason: str


class Cancelled(Result):
    incident_id: str


class Cancel(Command):
    name = "cancel"
    result = Cancelled
    needs_daemon = "cancelling needs the running daemon (the cancel window only lasts seconds)"
    incident_id: str


class SilenceAdded(Result):
    silence_id: str
    ends_at: datetime


class SilenceAdd(Command):
    """A maintenance window; `starts_at` is absolute (the front door resolves local times)."""

    name = "silence-add"
    result = SilenceAdded
    site: str
    duration: float  # seconds
    reason: str
    input: str | None = None
    playbook: str | None = None
    starts_at: datetime | None = None


class SilenceEnded(Result):
    ended: bool  # False: no such active silence


class SilenceEnd(Command):
    name = "silence-end"
    result = SilenceEnded
    silence_id: str


class DrillStarted(Result):
    drill: str
    alarm_id: str


class RunDrill(Command):
    name = "drill-run"
    result = DrillStarted
    needs_daemon = "running a drill needs the running daemon (crisisbot run)"
    drill: str


# -- console sessions and personal links ------------------------------------------------------------

class SessionsListed(Result):
    sessions: list[dict[str, Any]]


class ListSessions(Command):
    name = "sessions-list"
    result = SessionsListed


class SessionsRevoked(Result):
    revoked: int


class RevokeSessions(Command):
    """One session by id, or every session of a console user."""

    name = "sessions-revoke"
    result = SessionsRevoked
    session_id: str | None = None
    user: str | None = None


class LinksRevoked(Result):
    incident_id: str
    person: str
    scope: Literal["link", "person"]


class RevokeLinks(Command):
    """One leaked link (URL or token), or every link of a person for an incident."""

    name = "links-revoke"
    result = LinksRevoked
    link: str | None = None
    incident_id: str | None = None
    person: str | None = None
    reason: str = ""


# -- the web console's process (crisisbot/web/remote.py) ----------------------------------------------
# The web child never writes the store (its write lock, held at nice 19, would stall the
# alarm's commits): it sends its audit entries here and asks the daemon for its health.

WEB_AUDIT_KINDS = ("console.login", "console.logout", "link.", "liveview.")  # prefixes the web may write
MAX_AUDIT_DATA = 16 * 1024  # bytes of JSON: the web's entries are a few hundred; a bigger one is a bug or abuse


def web_audit_refusal(kind: str, data: dict[str, Any]) -> str | None:
    """Why the web may not write this entry (None: it may). Checked on both ends: the
    daemon decodes every request with the same model."""
    if not kind.startswith(WEB_AUDIT_KINDS):
        return (f"audit kind {kind[:80]!r} is not one the web console writes; allowed: kinds starting with "
                f"{', '.join(WEB_AUDIT_KINDS)}")
    size = len(json.dumps(data, default=str).encode())
    if size > MAX_AUDIT_DATA:
        return f"audit data of {size} bytes is over the {MAX_AUDIT_DATA} bytes a web entry may hold"
    return None


class AuditRecorded(Result):
    seq: int
    at: datetime
    prev_hash: str
    hash: str


class RecordAudit(Command):
    """An audit entry the web console writes (logins, link and live-view refusal counts,
    views), appended by the daemon to its hash chain. `hold`: wait while an alarm is
    dispatched first (refusal counts, which nobody waits for)."""

    name = "audit-record"
    result = AuditRecorded
    kind: str = Field(max_length=64)
    incident_id: str | None = Field(default=None, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)
    hold: bool = False

    @model_validator(mode="after")
    def _allowed(self) -> "RecordAudit":
        refusal = web_audit_refusal(self.kind, self.data)
        if refusal:
            raise ValueError(refusal)
        return self


class AuditItem(BaseModel):
    """One entry of a `RecordAudits` batch, checked as a `RecordAudit` is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(max_length=64)
    incident_id: str | None = Field(default=None, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _allowed(self) -> "AuditItem":
        refusal = web_audit_refusal(self.kind, self.data)
        if refusal:
            raise ValueError(refusal)
        return self


MAX_AUDIT_BATCH = 500  # entries of one RecordAudits (a window's refusal counts are split in such batches)


class AuditsRecorded(Result):
    count: int


class RecordAudits(Command):
    """Several web audit entries in one command and one store transaction: the refusal
    counts a window ends with (one per client address and kind, a few hundred under a
    login flood) were as many commands and commits, all within a second."""

    name = "audit-records"
    result = AuditsRecorded
    entries: list[AuditItem] = Field(max_length=MAX_AUDIT_BATCH)
    hold: bool = False


class HealthReport(Result):
    status: Literal["up", "degraded", "down"]
    checks: dict[str, dict[str, Any]]


class Health(Command):
    """The daemon's health verdict and checks (runtime.health), for the web child's /health."""

    name = "health"
    result = HealthReport
    needs_daemon = "the health is the running daemon's"


COMMANDS: dict[str, type[Command]] = {c.name: c for c in (
    TriggerAlarm, Reload, Status, Acknowledge, StandDown, Cancel, SilenceAdd, SilenceEnd, RunDrill,
    ListSessions, RevokeSessions, RevokeLinks, RecordAudit, RecordAudits, Health)}


# -- wire format ---------------------------------------------------------------------------------

def encode(command: Command) -> dict[str, Any]:
    """`{"v": 1, "command": name, "fields": {...}}` — JSON-ready."""
    return {"v": PROTOCOL, "command": command.name, "fields": command.model_dump(mode="json")}


def decode(message: Any) -> Command:
    """The command a peer sent; `CommandInvalid` says in words what is wrong with it."""
    if not isinstance(message, dict):
        raise CommandInvalid("a control request is a JSON object")
    if "op" in message and "command" not in message:
        raise CommandInvalid(f"this daemon speaks control protocol v{PROTOCOL}; the request (op "
                             f"{message.get('op')!r}) comes from an older crisisbot: run the same version")
    if message.get("v") != PROTOCOL:
        raise CommandInvalid(f"control protocol v{message.get('v')!r} is not spoken here (v{PROTOCOL}); "
                             "run the same crisisbot version on both ends")
    cls = COMMANDS.get(str(message.get("command")))
    if cls is None:
        raise CommandInvalid(f"unknown command {message.get('command')!r}; known: {', '.join(sorted(COMMANDS))}")
    return _validated(cls, message.get("fields", {}), f"command '{cls.name}'")


def encode_result(result: Result) -> dict[str, Any]:
    return {"v": PROTOCOL, "ok": True, "result": result.model_dump(mode="json")}


def encode_error(error: BaseException) -> dict[str, Any]:
    """A refusal as data: the error class name (for the client to re-raise) and its message."""
    return {"v": PROTOCOL, "ok": False, "error": {"type": type(error).__name__, "message": str(error)}}


def decode_result(cls: type[Command], reply: dict[str, Any]) -> Result:
    """The typed result of `cls` from a reply that said ok."""
    return _validated(cls.result, reply.get("result"), f"the daemon's answer to '{cls.name}'")


def _validated(model: Any, data: Any, what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CommandInvalid(f"bad fields for {what}: {_problems(exc)}") from None


def _problems(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'fields'}: {e['msg']}" for e in error.errors())
