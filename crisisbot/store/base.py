"""The store interface: alarms, incidents, step journal, deliveries, audit chain.

SQLite implements it today; a PostgreSQL backend implements the same methods.
Every write that precedes an acknowledgement or a send is committed durably
before the method returns: callers rely on that for "nothing is lost, nothing twice".
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from crisisbot.errors import Replayed  # noqa: F401 - re-exported for existing importers
from crisisbot.store.records import AckRecord, SilenceRecord, TimerRecord
from crisisbot.models import Alarm, DeliveryStatus, Incident, IncidentStatus, PlaybookOutcome

GENESIS = "0" * 64


@dataclass(slots=True)
class StepRecord:
    incident_id: str
    step_id: str
    status: str  # running | done | failed | skipped
    output: dict[str, Any] | None = None
    detail: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(slots=True)
class DeliveryRecord:
    key: str
    incident_id: str
    step_id: str
    person_id: str
    address: str
    status: DeliveryStatus
    detail: str = ""
    transport: str = ""
    attempts: int = 0
    updated_at: datetime | None = None


@dataclass(slots=True)
class SpooledMessage:
    """A message the playbook stopped waiting for: everything needed to resend it
    byte for byte (see crisisbot.outgoing), kept until a verdict is final."""

    key: str  # the delivery's idempotency key
    incident_id: str
    step_id: str
    sender: str
    channels: list[str]  # connector names, tried in order
    message: str  # crisisbot.outgoing.encode(...)


SPOOL_DONE = (DeliveryStatus.sent, DeliveryStatus.rejected, DeliveryStatus.failed)


@dataclass(slots=True)
class AuditEntry:
    seq: int
    at: datetime
    kind: str
    incident_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str = ""


@dataclass(slots=True)
class AuditReport:
    ok: bool
    entries: int
    head: str
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Nonce:
    """A replay-protection token (e.g. a webhook signature), stored with its alarm."""

    scope: str
    value: str
    ttl: float  # seconds it is remembered


def entry_hash(prev_hash: str, seq: int, at: str, kind: str, incident_id: str | None, data: str) -> str:
    """Chain link: any change to an entry, or a removed entry, breaks every later hash.

    The material is `json.dumps([prev_hash, seq, at, kind, incident_id, data],
    separators=(",", ":"))`, written out with json's own string escaper: one hash per
    stored alarm, and building a JSONEncoder per call cost 3 of its 4 us
    (tests/unit/test_audit_hash.py holds the two equal)."""
    incident = "null" if incident_id is None else _quote(incident_id)
    material = f"[{_quote(prev_hash)},{int(seq)},{_quote(at)},{_quote(kind)},{incident},{_quote(data)}]"
    return hashlib.sha256(material.encode()).hexdigest()


@runtime_checkable
class BacksUp(Protocol):
    """A store with a built-in online backup (SQLite's backup API); a store without one is
    backed up with its database's own tools."""

    async def backup(self, target: Path) -> None: ...


class Store(ABC):
    # Seconds a write failing for a transient reason (a lock held by another process,
    # a full disk) is tried again before the error reaches the caller. Commands fail
    # fast (0); the running daemon waits (inf) rather than lose a step's record.
    retry_transient_for: float = 0.0
    problem: str | None = None  # why writes are failing right now, for /health

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    # alarms ---------------------------------------------------------------
    @abstractmethod
    async def add_alarm(self, alarm: Alarm, nonce: Nonce | None = None,
                        on_commit: Callable[[], None] | None = None) -> bool:
        """Durably record the alarm (and its audit entry); False if the id was already stored.

        `on_commit()` is called once a new alarm is committed (crash-safe), possibly before
        it is power-cut safe; the return waits for the latter.

        With a `nonce`, the nonce is recorded in the same transaction, so an alarm the
        store failed to record never burns its nonce (the sender's retry gets in);
        raises `Replayed` if the nonce was already recorded and has not expired."""

    @abstractmethod
    async def pending_alarms(self) -> list[Alarm]: ...

    @abstractmethod
    async def mark_alarm(self, alarm_id: str, status: str, incident_id: str | None) -> None: ...

    @abstractmethod
    async def incident_alarms(self, incident_id: str) -> list[Alarm]: ...

    # incidents ------------------------------------------------------------
    @abstractmethod
    async def find_open_incident(
        self, site: str, playbook: str | None, since: datetime, dedup_key: str | None, drill: bool | None = None
    ) -> Incident | None:
        """The active incident with this dedup key, else (if `playbook`) the latest one of
        this site and playbook that received an alarm since `since`; `drill` keeps
        drills and real incidents apart."""

    @abstractmethod
    async def active_incidents(self, site: str | None = None, drill: bool | None = None) -> list[Incident]:
        """Incidents still open or acknowledged (of one site; only drills or only real
        ones with `drill`), oldest first."""

    @abstractmethod
    async def create_incident(self, incident: Incident, alarm: Alarm) -> None: ...

    @abstractmethod
    async def join_incident(self, incident_id: str, alarm: Alarm) -> None: ...

    @abstractmethod
    async def set_incident_status(self, incident_id: str, status: IncidentStatus, reason: str = "",
                                  only_from: IncidentStatus | None = None) -> bool:
        """Change the state (only from `only_from` when given); True if it changed."""

    @abstractmethod
    async def finish_playbook(self, incident_id: str, outcome: PlaybookOutcome, reason: str) -> bool:
        """Record the playbook's outcome, once (only while it is `running`); True if it changed.
        Independent of the incident's state: an operator may have stood it down meanwhile."""

    @abstractmethod
    async def update_incident_data(self, incident_id: str, data: dict[str, Any]) -> None: ...

    @abstractmethod
    async def get_incident(self, incident_id: str) -> Incident | None: ...

    @abstractmethod
    async def list_incidents(self, limit: int = 50, status: IncidentStatus | None = None) -> list[Incident]: ...

    # step journal ---------------------------------------------------------
    @abstractmethod
    async def get_steps(self, incident_id: str) -> dict[str, StepRecord]: ...

    @abstractmethod
    async def save_step(self, record: StepRecord) -> None: ...

    @abstractmethod
    async def get_deliveries(self, incident_id: str, step_id: str | None = None) -> dict[str, DeliveryRecord]: ...

    @abstractmethod
    async def save_deliveries(self, records: list[DeliveryRecord], audit: bool = True) -> None:
        """Upsert delivery states in one durable transaction (with audit entries if asked);
        a record whose status is in SPOOL_DONE also leaves the outgoing spool."""

    # outgoing spool (messages retried in the background) ----------------------
    # Concrete (not abstract) so other backends keep working until they add them.
    async def spool(self, messages: list[SpooledMessage], records: list[DeliveryRecord]) -> None:
        """Keep `messages` for background retries and save their delivery states, in one transaction."""
        raise NotImplementedError(f"{type(self).__name__} does not support the outgoing spool")

    async def spooled(self) -> list[SpooledMessage]:
        """Every message still waiting in the spool, oldest first."""
        raise NotImplementedError(f"{type(self).__name__} does not support the outgoing spool")

    # audit ----------------------------------------------------------------
    @abstractmethod
    async def audit(self, kind: str, incident_id: str | None, data: dict[str, Any]) -> AuditEntry: ...

    async def audit_many(self, entries: list[tuple[str, str | None, dict[str, Any]]]) -> int:
        """Append several entries (a window's refusal counts); returns how many. Backends
        should make it one transaction; this default appends them one by one."""
        for kind, incident_id, data in entries:
            await self.audit(kind, incident_id, data)
        return len(entries)

    @abstractmethod
    async def audit_entries(self, incident_id: str | None = None, limit: int | None = None) -> list[AuditEntry]: ...

    @abstractmethod
    async def verify_audit(self) -> AuditReport: ...

    # lifecycle: timers, acknowledgements, silences -----------------------------
    # Concrete (not abstract) so other backends keep working until they add them.
    async def add_timers(self, timers: list["TimerRecord"]) -> int:
        """Insert timers whose id is new; returns how many were new (scheduling is idempotent)."""
        raise NotImplementedError(f"{type(self).__name__} does not support timers")

    async def recover_timers(self) -> int:
        """After a restart: timers caught firing are due again (their handlers are idempotent)."""
        raise NotImplementedError(f"{type(self).__name__} does not support timers")

    async def due_timers(self, now: datetime) -> list["TimerRecord"]:
        raise NotImplementedError(f"{type(self).__name__} does not support timers")

    async def claim_timer(self, timer_id: str) -> bool:
        """pending -> firing, atomically: only one caller ever gets True."""
        raise NotImplementedError(f"{type(self).__name__} does not support timers")

    async def finish_timer(self, timer_id: str, status: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support timers")

    async def reschedule_timer(self, timer_id: str, due_at: datetime) -> None:
        """Put a claimed timer back to pending, due again at `due_at` (a retry)."""
        raise NotImplementedError(f"{type(self).__name__} does not support timers")

    async def shift_timers(self, delta: timedelta, keep: tuple[str, ...] = ()) -> int:
        """Move every pending timer, except those of the kinds in `keep`, by `delta`
        (after a step of the system clock); returns how many moved."""
        raise NotImplementedError(f"{type(self).__name__} does not support timers")

    async def cancel_timers(self, incident_id: str, kind_prefix: str = "") -> int:
        raise NotImplementedError(f"{type(self).__name__} does not support timers")

    async def list_timers(self, incident_id: str | None = None, status: str | None = "pending") -> list["TimerRecord"]:
        raise NotImplementedError(f"{type(self).__name__} does not support timers")

    async def add_ack(self, ack: "AckRecord", audit: dict[str, Any]) -> bool:
        """Record a person's acknowledgement once (with its audit entry); False if already there."""
        raise NotImplementedError(f"{type(self).__name__} does not support acknowledgements")

    async def get_acks(self, incident_id: str) -> list["AckRecord"]:
        raise NotImplementedError(f"{type(self).__name__} does not support acknowledgements")

    async def add_silence(self, silence: "SilenceRecord") -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support silences")

    async def end_silence(self, silence_id: str, at: datetime, kind: str, reason: str) -> bool:
        raise NotImplementedError(f"{type(self).__name__} does not support silences")

    async def list_silences(self, active_at: datetime | None = None) -> list["SilenceRecord"]:
        raise NotImplementedError(f"{type(self).__name__} does not support silences")

    async def last_alarm_at(self) -> datetime | None:
        raise NotImplementedError(f"{type(self).__name__} does not support supervision")

    # inputs: what a trigger remembers across restarts (triggers/state.py) ----------
    async def load_trigger_state(self, trigger: str) -> dict[str, Any]:
        """Every key -> JSON value the trigger saved."""
        raise NotImplementedError(f"{type(self).__name__} does not keep trigger state")

    async def save_trigger_state(self, trigger: str, changes: dict[str, Any]) -> None:
        """Upsert the changed keys (None deletes one) in one transaction; crash-safe, no fsync needed."""
        raise NotImplementedError(f"{type(self).__name__} does not keep trigger state")
