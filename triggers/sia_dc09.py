"""SIA DC-09 receiver: alarm panels report over TCP or UDP as to an alarm receiving centre.

Each frame is checked (length, CRC), decrypted with its account's AES key, its
timestamp checked against the account's window (NAK with our time if outside),
decoded (SIA DCS or Ademco Contact ID) and every event in it stored through the
sink; only then is it ACKed, so a panel never deletes an event we do not hold.
Unknown accounts and undecodable messages get DUH; garbled frames get no reply
(the panel repeats them). A repeat of the same account+sequence is ACKed without
firing again, and alarm ids are derived from the frame, so a repeat after a restart
is not stored twice either (frames without timestamp are remembered in the trigger's
`state`, with silence deadlines and reported faults, across reloads and restarts). An account silent for longer than its `supervision`
interval raises an `input_fault` alarm, and a `restore` when it speaks again.

pysiaalarm's server loop is not used: it ACKs before the event is handled and
assumes one frame per read. Its event tables are, through `dc09_codec`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from crisisbot.config.types import Identifier, Reference, Seconds, Strict
from crisisbot.errors import InputRejected
from crisisbot.listeners import ACCEPT_BACKLOG, BurstLog, ConnectionGate, Deadline, ListenerLimits
from crisisbot.models import Alarm, EventKind, Severity, utcnow
from triggers import dc09_codec as codec
from triggers.base import Trigger
from triggers.state import monotonic_from_wall, wall_from_monotonic

SEVERITY = {
    EventKind.panic: Severity.critical, EventKind.fire: Severity.critical, EventKind.intrusion: Severity.critical,
    EventKind.tamper: Severity.major, EventKind.input_fault: Severity.major, EventKind.trouble: Severity.minor,
    EventKind.technical: Severity.major, EventKind.restore: Severity.info, EventKind.test: Severity.info,
}
UDP_IN_FLIGHT = 1024  # UDP frames being stored at once; more are dropped unanswered (the panel repeats)
RECENT_MAX = 20000  # per account: 2 sequence cycles; beyond that the oldest is forgotten early
PROTOCOLS = {"SIA-DCS": codec.decode_sia, "ADM-CID": codec.decode_cid}


class Dc09Account(Strict):
    account: str = Field(pattern=r"^[0-9A-Fa-f]{3,16}$", description="account number the panel sends (#acct)")
    site: Annotated[Identifier, Reference("sites")]
    key: SecretStr | None = Field(None, description="AES-128/192/256 key, e.g. ${PANEL_PARIS_KEY}; none: plain text")
    key_format: Literal["hex", "ascii"] | None = Field(
        None, description="required with a key (a 32-character key reads both ways): hex = 32/48/64 hex "
        "digits; ascii = the 16/24/32 characters themselves are the key bytes, as pysiaalarm reads them")
    past: Seconds = Field(40.0, description="accepted age of a message timestamp (standard: 40 s)")
    future: Seconds = Field(20.0, description="accepted lead of a message timestamp (standard: 20 s)")
    supervision: Seconds | None = Field(
        None, description="raise input_fault when the panel is silent longer than this (NULL interval + margin)")
    zones: dict[str, str] = Field(default_factory=dict, description="zone number -> label, e.g. '3': Reception")

    @field_validator("account")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _key_length(self) -> "Dc09Account":
        self.key_bytes()
        return self

    def key_bytes(self) -> bytes | None:
        if self.key is None:
            return None
        text = self.key.get_secret_value()
        if self.key_format is None:
            raise ValueError("say how the key is written: key_format: hex or key_format: ascii")
        if self.key_format == "hex":
            try:
                key = bytes.fromhex(text)
            except ValueError:
                raise ValueError("key is not hexadecimal (set key_format: ascii for a text key)") from None
        else:
            key = text.encode("ascii", "strict")
        if len(key) not in (16, 24, 32):
            raise ValueError(f"AES key must be 16, 24 or 32 bytes; got {len(key)} ({self.key_format})")
        return key


class SiaDc09Config(Strict):
    type: Literal["sia-dc09"]
    host: str = "0.0.0.0"
    port: int = Field(12000, ge=0, le=65535, description="TCP and UDP port (0: any free port)")
    tcp: bool = True
    udp: bool = True
    accounts: list[Dc09Account] = Field(min_length=1)
    max_frame: int = Field(1024, ge=64, le=65535, description="larger frames are dropped as garbage")
    duplicate_window: Seconds = Field(600.0, description="a repeated account+sequence within this is not re-fired")
    submit_tests: bool = Field(True, description="store periodic test reports (RP, 602) as kind=test alarms")
    limits: ListenerLimits = Field(
        default_factory=lambda: ListenerLimits(max_connections=512, max_per_peer=64, idle_timeout=600.0),
        description="TCP connection caps and timeouts (idle: panels may hold a connection between events)")

    @model_validator(mode="after")
    def _unique(self) -> "SiaDc09Config":
        seen = [a.account for a in self.accounts]
        dupes = sorted({a for a in seen if seen.count(a) > 1})
        if dupes:
            raise ValueError(f"account listed twice: {', '.join(dupes)}")
        return self


def _aes_key(account: Dc09Account) -> codec.AesKey | None:
    key = account.key_bytes()
    return codec.AesKey(key) if key is not None else None


def _recent_key(account: str, seq: str, data: str) -> str:
    """The trigger-state key of one remembered frame without timestamp (triggers/state.py)."""
    return f"recent:{account}:{seq}:{hashlib.blake2b(data.encode(), digest_size=8).hexdigest()}"


def _alarm_id(identity: str, at: datetime) -> str:
    """32 hex digits: the event's second, then a digest of the frame's identity.

    Derived from the frame, so a repeat (after a restart too) is the same alarm; led by
    its time so that consecutive alarms sit side by side in the store's primary-key
    index: a random key dirties one index page per alarm, written to the WAL at each
    commit and read back on a large store (SQLite CPU 10 vs 16 us an alarm, measured)."""
    return f"{int(at.timestamp()):09x}{hashlib.sha256(identity.encode()).hexdigest()[:23]}"


@dataclass(slots=True)
class _Panel:
    """Runtime state of one account: its key, when it last spoke, whether it is reported silent."""

    config: Dc09Account
    key: codec.AesKey | None
    last_seen: float
    faulted: bool = False
    recent: dict[tuple[str, str], float] = field(default_factory=dict)  # (sequence, data) -> monotonic expiry
    noted: tuple[int, bool] | None = None  # (last_seen second, faulted) last saved to the trigger's state
    past: timedelta = timedelta(0)  # the account's timestamp window, built once rather than per frame
    future: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        self.past, self.future = timedelta(seconds=self.config.past), timedelta(seconds=self.config.future)


class SiaDc09Trigger(Trigger):
    Config = SiaDc09Config
    config: SiaDc09Config
    deferred_imports = ("pysiaalarm.data.data",)  # the event code tables (triggers/dc09_codec.py)

    def __init__(self, *args: Any, clock: Any = time.monotonic, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.stats: dict[str, int] = dict.fromkeys(
            ("frames", "acked", "alarms", "duplicates", "null", "bad_frame", "garbage_bytes", "oversized",
             "unknown_account", "decrypt_errors", "undecodable", "stale", "store_errors", "faults", "timeouts", "udp_overload"), 0)
        self.port: int | None = None
        self.udp_port: int | None = None
        self._panels: dict[str, _Panel] = {}
        # frames being stored; a future only once the same frame arrives again meanwhile
        self._inflight: dict[tuple[str, str], asyncio.Future[bool] | None] = {}
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[_TcpConnection] = set()
        self.gate: ConnectionGate | None = None  # built at start: it registers in the process's fd budget
        self._garbage_log = BurstLog(self.log, "skipped garbage bytes")
        self._bursts: dict[str, BurstLog] = {}
        self._supervisor: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        saved_recent: dict[str, list[tuple[str, list[Any]]]] = {}
        for key, value in self.state.items("recent:"):  # one pass, not one per account
            saved_recent.setdefault(key.split(":")[1], []).append((key, value))
        self._panels = {a.account: self._restored(a, saved_recent.get(a.account, [])) for a in self.config.accounts}
        loop = asyncio.get_running_loop()
        port = self.config.port
        if self.config.tcp:
            self.gate = ConnectionGate(f"DC-09 {self.name}", self.config.limits, self.log)
            self._server = await loop.create_server(lambda: _TcpConnection(self), self.config.host, port,
                                                   backlog=ACCEPT_BACKLOG)
            self.port = port = self._server.sockets[0].getsockname()[1]
        if self.config.udp:
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.config.host, port))
            self.udp_port = self._udp.get_extra_info("sockname")[1]
        if any(p.config.supervision for p in self._panels.values()):
            self._supervisor = asyncio.create_task(self._supervise(), name=f"dc09-supervision-{self.name}")
        self.log.info("SIA DC-09 receiver listening on %s (tcp %s, udp %s), %d account(s)",
                      self.config.host, self.port, self.udp_port, len(self._panels))

    def _restored(self, account: Dc09Account, saved_frames: list[tuple[str, list[Any]]]) -> _Panel:
        """The account's runtime state, with what the previous run knew (triggers/state.py):
        its silence deadline, whether it is already reported silent, frames seen lately."""
        now = self.clock()
        panel = _Panel(account, _aes_key(account), now)
        saved = self.state.get(f"account:{account.account}") or {}
        if "last_seen" in saved:
            last = min(now, monotonic_from_wall(saved["last_seen"], self.clock))
            # a deadline that passed while the receiver was down says nothing about the panel
            # (it could not reach us): it then gets one full period from now
            if account.supervision is None or now - last < account.supervision:
                panel.last_seen = last
        panel.faulted = bool(saved.get("faulted"))
        wall = time.time()
        saved_recent: list[tuple[float, str, str]] = []
        for key, value in saved_frames:
            if key == f"recent:{account.account}":  # the single list of earlier versions: one row per frame now
                self.state.put(key, None)
                for seq, data, expiry in value:
                    if expiry > wall:
                        saved_recent.append((expiry, seq, data))
                        self.state.put(_recent_key(account.account, seq, data), [seq, data, expiry])
            elif value[2] > wall:
                saved_recent.append((value[2], value[0], value[1]))
            else:
                self.state.put(key, None)  # expired while the receiver was down
        for expiry, seq, data in sorted(saved_recent):  # the dict is kept in expiry order
            panel.recent[(seq, data)] = now + (expiry - wall)
        return panel

    def _note(self, panel: _Panel) -> None:
        """Save the silence timer (to the second: a handful of writes, whatever the traffic;
        a frame within the second saved last costs a comparison, not a dict)."""
        noted = (int(wall_from_monotonic(panel.last_seen, self.clock)), panel.faulted)
        if noted != panel.noted:
            panel.noted = noted
            self.state.put(f"account:{panel.config.account}", {"last_seen": noted[0], "faulted": noted[1]})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()
        if self._supervisor is not None:
            self._supervisor.cancel()
        for conn in list(self._connections):
            conn.close_if_waiting()  # one storing a frame finishes; its ACK may still reach the panel
        pending = [t for t in (*self._tasks, *(c.worker for c in self._connections if c.worker)) if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=5.0)
            for task in late:
                task.cancel()
        await asyncio.gather(*pending, *(t for t in [self._supervisor] if t), return_exceptions=True)
        for conn in list(self._connections):
            conn.transport.abort()
        if self.gate is not None:
            self.gate.close()
        for burst in (self._garbage_log, *self._bursts.values()):
            burst.close()

    # -- transports ------------------------------------------------------------
    def _split(self, splitter: codec.FrameSplitter, data: bytes, peer: Any) -> list[bytes]:
        before = splitter.garbage
        frames = splitter.feed(data)
        if splitter.garbage > before:
            self.stats["garbage_bytes"] += splitter.garbage - before
            self._garbage_log.note(f"{splitter.garbage - before} byte(s) from {peer}")
        return frames

    def _datagram(self, data: bytes, addr: Any) -> None:
        if len(data) > self.config.max_frame:
            self._refused("oversized", f"dropped a {len(data)}-byte datagram from {addr} "
                                       f"(max_frame {self.config.max_frame})")
            return
        for raw in self._split(codec.FrameSplitter(self.config.max_frame), data, addr):
            if len(self._tasks) >= UDP_IN_FLIGHT:  # a datagram flood must not grow memory without end
                self._refused("udp_overload", f"dropped a frame from {addr}: {UDP_IN_FLIGHT} UDP frames "
                                              "already in hand (the panel repeats it)")
                continue
            task = asyncio.create_task(self._answer_udp(raw, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer_udp(self, raw: bytes, addr: Any) -> None:
        reply = await self.handle(raw, addr)
        if reply and self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(reply, addr)

    # -- one frame -------------------------------------------------------------
    async def handle(self, raw: bytes, peer: Any = None) -> bytes | None:
        """The reply to one frame (None: no reply), after its events are stored."""
        self.stats["frames"] += 1
        now = utcnow()
        try:
            frame = codec.parse_frame(raw)
        except codec.Undecodable as exc:
            if exc.frame is None:  # no envelope to answer: treated as garbled
                self._refused("bad_frame", f"dropped frame from {peer}: {exc}")
                return None
            self._refused("undecodable", f"DUH to {peer}, account {exc.frame.account}: {exc}")
            return codec.duh(exc.frame)
        except InputRejected as exc:  # garbled in transit: silence makes the panel repeat
            self._refused("bad_frame", f"dropped frame from {peer}: {exc}")
            return None
        panel = self._panels.get(frame.account)
        if panel is None:
            self._refused("unknown_account", f"DUH to {peer}: unknown account {frame.account}")
            return codec.duh(frame)
        try:
            text = self._plaintext(frame, panel)
        except codec.Undecodable as exc:
            self._refused("decrypt_errors", f"DUH to {peer}, account {frame.account}: {exc}")
            return codec.duh(frame)
        try:
            content = codec.parse_content(text)
            if frame.encrypted and content.sent_at is None:
                raise codec.Undecodable("encrypted message without timestamp")
            if content.account and content.account != frame.account:
                # the clear envelope was rewritten: the encrypted body names another account
                raise codec.Undecodable(f"account {content.account} inside does not match {frame.account} outside")
            events = [] if frame.id == "NULL" else self._decoder(frame.id)(content.data)
        except codec.Undecodable as exc:
            self._refused("undecodable", f"DUH to {peer}, account {frame.account}: {exc}")
            return codec.duh(frame)
        if content.sent_at is not None and not (now - panel.past <= content.sent_at <= now + panel.future):
            self._refused("stale", f"NAK to {peer}, account {frame.account}: timestamp "
                                   f"{content.sent_at.isoformat()} outside the window (receiver time {now.isoformat()})")
            return codec.nak(now)
        if panel.faulted:
            if not await self._heard(panel):
                return None
        else:  # the common case without a coroutine: `_heard` minus the end of a fault
            panel.last_seen = self.clock()
            self._note(panel)
        if not await self._store_once(frame, panel, content, events, now):
            return None
        self.stats["acked"] += 1
        return codec.ack(frame, panel.key, now)

    def _refused(self, kind: str, message: str) -> None:
        """Count a refused frame and log it, once per burst of its kind: a flood of bad
        frames must not flood the log (the counters keep the exact numbers)."""
        self.stats[kind] += 1
        burst = self._bursts.get(kind)
        if burst is None:
            burst = self._bursts[kind] = BurstLog(self.log, f"refused ({kind})")
        burst.note(message)

    def _plaintext(self, frame: codec.Frame, panel: _Panel) -> str:
        if panel.key is None:
            if frame.encrypted:
                raise codec.Undecodable("encrypted message for an account configured without key")
            return frame.rest
        if not frame.encrypted:  # otherwise anyone could inject plain-text alarms for this account
            raise codec.Undecodable("plain-text message for an account that has a key")
        return codec.decrypt(panel.key, frame.rest)

    @staticmethod
    def _decoder(message_id: str) -> Any:
        try:
            return PROTOCOLS[message_id]
        except KeyError:
            raise codec.Undecodable(f"unsupported message type {message_id!r}") from None

    async def _store_once(self, frame: codec.Frame, panel: _Panel, content: codec.Content,
                          events: list[codec.Event], now: datetime) -> bool:
        """Submit the frame's alarms unless this account+sequence was already stored; True if safe."""
        key = (frame.account, frame.seq)
        mono = self.clock()
        expiry = panel.recent.get((frame.seq, content.data))  # same number *and* content: a repeat
        if expiry is not None and expiry > mono:
            self.stats["duplicates"] += 1
            self.log.info("account %s repeated sequence %s: ACK without firing again", frame.account, frame.seq)
            return True
        if key in self._inflight:  # the same frame arrived twice at once (e.g. TCP and UDP)
            self.stats["duplicates"] += 1
            first = self._inflight[key]
            if first is None:
                first = self._inflight[key] = asyncio.get_running_loop().create_future()
            return await asyncio.shield(first)
        self._inflight[key] = None
        outcome: bool | None = None  # stays None if cancelled (at shutdown)
        try:
            if frame.id == "NULL":
                self.stats["null"] += 1
            for index, event in enumerate(events):
                if event.kind is EventKind.test and not self.config.submit_tests:
                    continue
                await self.sink.submit(self._alarm(frame, panel, content, event, index, now))
                self.stats["alarms"] += 1
            outcome = True
        except Exception:
            self.stats["store_errors"] += 1
            self.log.exception("could not store alarm from account %s seq %s; no ACK, the panel will repeat",
                               frame.account, frame.seq)
            outcome = False
            return False
        finally:
            waiting = self._inflight.pop(key)
            if waiting is not None and not waiting.done():
                if outcome is None:
                    waiting.cancel()
                else:
                    waiting.set_result(outcome)
        recent = panel.recent
        recent.pop((frame.seq, content.data), None)  # re-inserted last: the dict stays in expiry order
        recent[(frame.seq, content.data)] = mono + self.config.duplicate_window
        while len(recent) > 64:  # expire from the oldest end: O(1) a frame, not a rebuild
            oldest = next(iter(recent))
            if recent[oldest] > mono and len(recent) <= RECENT_MAX:
                break
            del recent[oldest]
            self.state.put(_recent_key(frame.account, *oldest), None)  # a no-op unless it was saved
        if content.sent_at is None and events:  # a timestamped repeat has the same alarm id: the store ignores it
            # one row per frame: saving is O(1) a frame, whatever the size of the memory
            self.state.put(_recent_key(frame.account, frame.seq, content.data),
                           [frame.seq, content.data, time.time() + self.config.duplicate_window])
        return True

    def _alarm(self, frame: codec.Frame, panel: _Panel, content: codec.Content, event: codec.Event,
               index: int, now: datetime) -> Alarm:
        # a frame without timestamp cannot be told from a later identical event (a panel that
        # rebooted and counts from 0001 again): give it a fresh identity rather than drop it
        sent = content.sent_at if content.sent_at is not None else f"received {now.isoformat()}"
        identity = f"{self.name}|{frame.account}|{frame.seq}|{sent}|{content.data}|{index}"
        details: dict[str, Any] = {
            "protocol": frame.id, "account": frame.account, "sequence": frame.seq, "receiver": frame.receiver,
            "prefix": frame.prefix, "code": event.code, "partition": event.partition,
            "encrypted": frame.encrypted,
        }
        if event.qualifier:
            details["qualifier"] = event.qualifier
        if event.sia_code:
            details["sia_code"] = event.sia_code
        description = event.description  # a table look-up and a format: once, not three times
        if description:
            details["description"] = description
        if event.user:
            details["user"] = event.user
        if event.restores:
            details["restores"] = event.restores.value
        if frame.encrypted:
            details["content"] = content.data
        label = panel.config.zones.get(event.zone or "", "") or description or event.code
        return Alarm(
            id=_alarm_id(identity, content.sent_at or now), source=self.name, site=panel.config.site,
            zone=event.zone, input=frame.account, kind=event.kind, severity=SEVERITY.get(event.kind, Severity.minor),
            label=label, occurred_at=content.sent_at or now, received_at=now, details=details,
            raw=frame.raw.decode("ascii", "replace").strip(),
        )

    # -- link supervision ------------------------------------------------------
    async def _heard(self, panel: _Panel) -> bool:
        """Restart the panel's silence timer; report the end of a fault first. False: store failed."""
        panel.last_seen = self.clock()
        if panel.faulted:
            if not await self._link_alarm(panel, EventKind.restore):
                return False
            panel.faulted = False
        self._note(panel)
        return True

    async def _supervise(self) -> None:
        periods = [p.config.supervision for p in self._panels.values() if p.config.supervision]
        tick = min(max(min(periods) / 10, 0.05), 5.0)
        while True:
            await asyncio.sleep(tick)
            now = self.clock()
            for panel in self._panels.values():
                limit = panel.config.supervision
                if limit and not panel.faulted and now - panel.last_seen > limit:
                    self.log.warning("account %s silent for %.0f s: raising input_fault",
                                     panel.config.account, now - panel.last_seen)
                    if await self._link_alarm(panel, EventKind.input_fault):
                        panel.faulted = True
                        self._note(panel)
                        self.stats["faults"] += 1
                        if panel.last_seen > now:  # heard while the fault was being stored: it speaks again
                            await self._heard(panel)

    async def _link_alarm(self, panel: _Panel, kind: EventKind) -> bool:
        account = panel.config.account
        silent = kind is EventKind.input_fault
        return await self.submit_link_alarm(
            kind, site=panel.config.site, input=account, what=f"account {account}", errors="store_errors",
            counted="alarms", label=f"Panel {account} {'silent' if silent else 'reporting again'}",
            details={"account": account, "supervision": panel.config.supervision},
            raw=f"supervision: account {account} {'silent' if silent else 'heard'}")


class _Udp(asyncio.DatagramProtocol):
    """One datagram = one frame (or a few); replies go back to the sender's address."""

    def __init__(self, trigger: SiaDc09Trigger) -> None:
        self.trigger = trigger

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.trigger._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.trigger.log.warning("UDP error: %r", exc)


class _TcpConnection(asyncio.Protocol):
    """One panel's TCP connection: frames are handled in order, each ACKed after storage.

    A protocol rather than a stream reader: no task and no timeout object per read, and
    the gate's caps and timers act on the transport directly. Idle: `idle_timeout`; a
    frame begun and not complete within `header_timeout`: closed.
    """

    def __init__(self, trigger: SiaDc09Trigger) -> None:
        self.trigger = trigger
        self.busy = False
        self.worker: asyncio.Task[None] | None = None
        self._queue: deque[bytes] = deque()
        self._splitter = codec.FrameSplitter(trigger.config.max_frame)
        self._closed = False
        self._paused = False
        self.peer: Any = None
        self.gate: ConnectionGate  # the started trigger's, set in connection_made

    # -- asyncio.Protocol -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.deadline = Deadline(asyncio.get_running_loop(), self._expired)
        gate = self.trigger.gate
        assert gate is not None  # connections arrive only once start() built it
        self.gate = gate
        if not self.gate.admit(self, str(self.peer[0]) if self.peer else "?"):
            self._closed = True
            transport.abort()
            return
        self.trigger._connections.add(self)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        trigger = self.trigger
        self.gate.touch(self)
        frames = trigger._split(self._splitter, data, self.peer)
        if frames:
            self._queue.extend(frames)
            if self.worker is None:
                self.busy = True
                self.worker = asyncio.create_task(self._work())
            if len(self._queue) > 64 and not self._paused:  # a sender far ahead of its ACKs waits
                self._paused = True
                self.transport.pause_reading()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.deadline.cancel()
        self.gate.release(self)
        self.trigger._connections.discard(self)
        if exc is not None:
            self.trigger.log.debug("connection from %s ended: %r", self.peer, exc)

    # -- the gate's and the trigger's side ----------------------------------------
    def evict(self) -> None:
        self.trigger.log.debug("closing idle connection from %s to make room", self.peer)
        self._close()

    def close_if_waiting(self) -> None:
        if self.worker is None:
            self._close()

    def _close(self) -> None:
        self._closed = True
        self.deadline.cancel()
        self.transport.close()

    def _arm(self) -> None:
        if self.worker is not None:
            self.deadline.cancel()  # handling a frame: bounded by the store, not by us
        elif self._splitter.buffer:
            if self.deadline.reason != "frame":  # from the first byte of the frame, not the last
                self.deadline.arm(self.trigger.config.limits.header_timeout, "frame")
        else:
            self.deadline.arm(self.trigger.config.limits.idle_timeout, "idle")

    def _expired(self) -> None:
        self.trigger.stats["timeouts"] += 1
        self.trigger.log.debug("closing connection from %s: %s timeout", self.peer, self.deadline.reason)
        self._close()

    async def _work(self) -> None:
        try:
            while self._queue:
                reply = await self.trigger.handle(self._queue.popleft(), self.peer)
                if reply and not self.transport.is_closing():
                    self.transport.write(reply)
        finally:
            self.worker = None
            self.busy = False
            self.deadline.reason = ""
            if self._paused and not self._closed:
                self._paused = False
                self.transport.resume_reading()
            if not self._closed:
                self._arm()
