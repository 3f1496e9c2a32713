"""The one handler of every command (crisisbot/commands.py), whatever the front door.

The daemon builds one `CommandBus` over its running parts; the control socket, the
console, the JSON API and the personal links hand it commands. Without a daemon, the
CLI builds one in this process with `in_process(bundle)` — the same handlers, so an
operation cannot behave (or audit) differently depending on where it was carried out.
A command whose `needs_daemon` says why is refused in-process.

A command resent with the same `command_id` (a client that timed out, a peer instance
retrying) gets the first answer back instead of acting twice, for as long as this
process remembers it (the last REMEMBERED commands). Beyond that memory — another
process, a restart — the handlers are idempotent where the operation is: an
acknowledgement is recorded once, a stand-down sends only what is missing, a cancelled
incident stays cancelled, and a silence or a drill run takes an id derived from the
command's, so the store refuses the second one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable

from crisisbot.commands import (
    Acknowledge, Acknowledged, AlarmTaken, AuditRecorded, AuditsRecorded, Cancel, Cancelled, Command, DaemonStatus,
    DrillStarted, Health, HealthReport, LinksRevoked, ListSessions, RecordAudit, RecordAudits, Reload, Reloaded,
    Result, RevokeLinks, RevokeSessions, RunDrill, SessionsListed, SessionsRevoked, SilenceAdd, SilenceAdded,
    SilenceEnd, SilenceEnded, StandDown, Status, StoodDown, TriggerAlarm, web_audit_refusal,
)
from crisisbot.errors import CommandInvalid, DaemonRequired

if TYPE_CHECKING:
    from crisisbot.config.bundle import Bundle
    from crisisbot.engine import Engine
    from crisisbot.lifecycle.service import Lifecycle
    from crisisbot.runtime import Runtime
    from crisisbot.web.sessions import Sessions

REMEMBERED = 1000  # answers kept for resent commands


class CommandBus:
    """`dispatch(command) -> result`: the operations of crisisbot against its running parts.

    `reload` is the daemon's (absent in-process); `sessions` the web console's, else the
    sessions file, opened when first needed."""

    def __init__(self, runtime: "Runtime", engine: "Engine", lifecycle: "Lifecycle", *, in_process: bool = False,
                 reload: Callable[[], Awaitable[bool]] | None = None, sessions: "Sessions | None" = None) -> None:
        self.runtime = runtime
        self.engine = engine
        self.lifecycle = lifecycle
        self.in_process = in_process
        self.reload = reload
        self.sessions = sessions
        self._answers: OrderedDict[str, tuple[Command, asyncio.Future[Result]]] = OrderedDict()

    async def dispatch(self, command: Command) -> Result:
        handler = HANDLERS.get(type(command))
        if handler is None:
            raise CommandInvalid(f"no handler for command '{command.name}'")
        if self.in_process and command.needs_daemon:
            raise DaemonRequired(command.needs_daemon)
        earlier = self._answers.get(command.command_id)
        if earlier is not None:
            if earlier[0] != command:
                raise CommandInvalid(f"command id {command.command_id} was already used for another command")
            return await asyncio.shield(earlier[1])
        answer: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._answers[command.command_id] = (command, answer)
        while len(self._answers) > REMEMBERED:
            self._answers.popitem(last=False)
        try:
            result = await handler(self, command)
        except BaseException as exc:
            self._answers.pop(command.command_id, None)  # a refusal or failure may be tried again
            answer.set_exception(exc)
            answer.exception()  # retrieved here: a resend waiting on it gets it too
            raise
        answer.set_result(result)
        return result

    async def _sessions(self) -> "Sessions":
        if self.sessions is None:  # no console in this process: the file the console keeps
            from crisisbot.web.admin import offline_sessions

            sessions = offline_sessions(self.runtime.bundle)
            await sessions.load()
            self.sessions = sessions
        return self.sessions


@asynccontextmanager
async def in_process(bundle: "Bundle") -> AsyncIterator[CommandBus]:
    """A bus for the CLI when no daemon runs: its own runtime (claiming the data
    directory, so it is refused while a daemon holds it), an engine and the lifecycle
    parts, none of them started (no timers fire, nothing resumes)."""
    from crisisbot.engine import Engine
    from crisisbot.lifecycle.service import Lifecycle
    from crisisbot.runtime import Runtime

    runtime = await Runtime.build(bundle)
    try:
        engine = Engine(runtime)
        yield CommandBus(runtime, engine, Lifecycle(runtime, engine), in_process=True)
    finally:
        await runtime.close()


# -- handlers: one per command ----------------------------------------------------------------------

async def _trigger(bus: CommandBus, command: TriggerAlarm) -> AlarmTaken:
    alarm = command.alarm
    if bus.in_process:  # no engine worker here: process it now and wait for its playbook
        await bus.runtime.store.add_alarm(alarm)
        incident = await bus.engine.process(alarm)
        await bus.engine.idle()
    else:
        await bus.engine.submit(alarm)
        incident = await bus.engine.wait_processed(alarm.id)
    return AlarmTaken(alarm_id=alarm.id, incident_id=incident.id if incident else None)


async def _reload(bus: CommandBus, command: Reload) -> Reloaded:
    if bus.reload is None:
        raise DaemonRequired(Reload.needs_daemon or "")
    return Reloaded(ok=await bus.reload())


async def _status(bus: CommandBus, command: Status) -> DaemonStatus:
    from crisisbot.inputs_status import input_counters

    return DaemonStatus(digest=bus.runtime.bundle.digest, inputs=input_counters(bus.runtime))


async def _acknowledge(bus: CommandBus, command: Acknowledge) -> Acknowledged:
    from crisisbot.lifecycle.acks import acknowledge

    outcome = await acknowledge(bus.runtime, command.incident_id, command.person, command.response, command.via)
    return Acknowledged(incident_id=command.incident_id, person=command.person, new=outcome.new,
                        satisfied=outcome.satisfied, person_name=outcome.person_name)


async def _stand_down(bus: CommandBus, command: StandDown) -> StoodDown:
    from crisisbot.lifecycle.standdown import stand_down

    done = await stand_down(bus.runtime, command.incident_id, command.outcome, command.reason, command.actor,
                            command.via)
    return StoodDown(incident_id=done.incident_id, outcome=done.outcome, notified=done.notified, sent=done.sent,
                     meeting=done.meeting)


async def _cancel(bus: CommandBus, command: Cancel) -> Cancelled:
    from crisisbot.models import IncidentStatus

    done = await bus.runtime.store.get_incident(command.incident_id)
    if done is not None and done.status is IncidentStatus.cancelled:  # asked again: what was wanted is done
        return Cancelled(incident_id=done.id)
    incident = await bus.lifecycle.cancel_windows.cancel(command.incident_id, command.actor, command.via)
    return Cancelled(incident_id=incident.id)


async def _silence_add(bus: CommandBus, command: SilenceAdd) -> SilenceAdded:
    silence_id = _derived_id("silence", command)
    silence = next((s for s in await bus.runtime.store.list_silences() if s.id == silence_id), None)
    if silence is None:
        silence = await bus.lifecycle.maintenance.add(command.site, command.duration, command.reason, command.actor,
                                                      input=command.input, playbook=command.playbook,
                                                      starts_at=command.starts_at, silence_id=silence_id)
    return SilenceAdded(silence_id=silence.id, ends_at=silence.ends_at)


async def _silence_end(bus: CommandBus, command: SilenceEnd) -> SilenceEnded:
    return SilenceEnded(ended=await bus.lifecycle.maintenance.end(command.silence_id, command.actor))


async def _run_drill(bus: CommandBus, command: RunDrill) -> DrillStarted:
    drills = bus.runtime.bundle.config.lifecycle.drills
    if command.drill not in drills:
        raise CommandInvalid(f"unknown drill '{command.drill}'; known: {', '.join(drills) or 'none'}")
    run_key = f"command:{command.command_id}"  # the alarm id derives from it: a resent run is refused by the store
    return DrillStarted(drill=command.drill, alarm_id=await bus.lifecycle.drills.run_now(command.drill, run_key))


async def _list_sessions(bus: CommandBus, command: ListSessions) -> SessionsListed:
    return SessionsListed(sessions=[s.public() for s in (await bus._sessions()).list()])


async def _revoke_sessions(bus: CommandBus, command: RevokeSessions) -> SessionsRevoked:
    if not command.session_id and not command.user:
        raise CommandInvalid("give a session id (from `crisisbot sessions`) or a console user")
    gone = await (await bus._sessions()).revoke(command.session_id, command.user)
    for session in gone:
        await bus.runtime.store.audit("console.session_revoked", None, {
            "session": session.id, "user": session.user, "by": command.actor, "via": command.via})
    return SessionsRevoked(revoked=len(gone))


async def _revoke_links(bus: CommandBus, command: RevokeLinks) -> LinksRevoked:
    from crisisbot.web.admin import revoke_links

    done = await revoke_links(bus.runtime.revocations, bus.runtime.signer, {
        "link": command.link, "incident_id": command.incident_id, "person": command.person,
        "reason": command.reason, "by": command.actor})
    await bus.runtime.store.audit("links.revoked", done["incident_id"], {
        "person": done["person"], "scope": done["scope"], "by": command.actor, "via": command.via})
    return LinksRevoked(incident_id=done["incident_id"], person=done["person"], scope=done["scope"])


async def _record_audit(bus: CommandBus, command: RecordAudit) -> AuditRecorded:
    refusal = web_audit_refusal(command.kind, command.data)  # the model checked it; a handler never trusts that
    if refusal:
        raise CommandInvalid(refusal)
    if command.hold:  # a refusal count: the alarm being dispatched goes first (HOLD s at most)
        await bus.runtime.executors.priority.wait_quiet()
    entry = await bus.runtime.store.audit(command.kind, command.incident_id, command.data)
    return AuditRecorded(seq=entry.seq, at=entry.at, prev_hash=entry.prev_hash, hash=entry.hash)


async def _record_audits(bus: CommandBus, command: RecordAudits) -> AuditsRecorded:
    entries = [(item.kind, item.incident_id, item.data) for item in command.entries]
    for kind, _, data in entries:
        refusal = web_audit_refusal(kind, data)
        if refusal:
            raise CommandInvalid(refusal)
    if command.hold:
        await bus.runtime.executors.priority.wait_quiet()
    return AuditsRecorded(count=await bus.runtime.store.audit_many(entries))


async def _health(bus: CommandBus, command: Health) -> HealthReport:
    status, checks = await bus.runtime.health.gather()  # the daemon registered its checks at start
    # a check may put any object in its details: the answer must cross the socket as JSON
    return HealthReport(status=status, checks=json.loads(json.dumps(checks, default=str)))


def _derived_id(kind: str, command: Command) -> str:
    """A record id that is the same each time this command is carried out."""
    return hashlib.sha256(f"{kind}:{command.command_id}".encode()).hexdigest()[:12]


HANDLERS: dict[type[Command], Callable[[CommandBus, Any], Awaitable[Result]]] = {
    TriggerAlarm: _trigger,
    Reload: _reload,
    Status: _status,
    Acknowledge: _acknowledge,
    StandDown: _stand_down,
    Cancel: _cancel,
    SilenceAdd: _silence_add,
    SilenceEnd: _silence_end,
    RunDrill: _run_drill,
    ListSessions: _list_sessions,
    RevokeSessions: _revoke_sessions,
    RevokeLinks: _revoke_links,
    RecordAudit: _record_audit,
    RecordAudits: _record_audits,
    Health: _health,
}
