"""SIA DC-09 receiver against the panel simulator in tests/dc09_panel.py, over real loopback
sockets, and the same frames against pysiaalarm's receiver as an independent peer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pysiaalarm import SIAAccount
from pysiaalarm.aio import CommunicationsProtocol, SIAClient

from crisisbot.models import Alarm, EventKind
from crisisbot.store.sqlite import SqliteStore
from dc09_panel import LEGAL_PAD, PadSource, TcpPanel, UdpPanel, check, decrypt_reply, message, stamp, wrap
from sinks import RecordingSink
from triggers.sia_dc09 import SiaDc09Config, SiaDc09Trigger

KEY_HEX = "00112233445566778899AABBCCDDEEFF"
KEY_ASCII = "Lille-panel-key/32-characters!!!"  # AES-256 given as 32 ASCII characters
# pysiaalarm reads a key as the ASCII bytes of a 16/24/32-character hex string
PEER_KEYS = {16: "0123456789ABCDEF", 24: "0123456789ABCDEF01234567", 32: "0123456789ABCDEF" * 2}


# -- fixtures -----------------------------------------------------------------------------

def make_config(**overrides: Any) -> SiaDc09Config:
    data: dict[str, Any] = {
        "type": "sia-dc09", "host": "127.0.0.1", "port": 0,
        "accounts": [
            {"account": "1234", "site": "paris", "zones": {"3": "Reception panic button"}},
            {"account": "AB12", "site": "lyon", "key": KEY_HEX, "key_format": "hex"},
            {"account": "C0FFEE", "site": "lille", "key": KEY_ASCII, "key_format": "ascii"},
        ],
    }
    data.update(overrides)
    return SiaDc09Config.model_validate(data)


@pytest.fixture
async def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def receiver(sink: RecordingSink):
    trigger = SiaDc09Trigger("arc", make_config(), sink)
    await trigger.start()
    yield trigger
    await trigger.stop()


@pytest.fixture
async def panel(receiver: SiaDc09Trigger):
    conn = TcpPanel(*await asyncio.open_connection("127.0.0.1", receiver.port))
    yield conn
    await conn.close()


async def udp_panel(receiver: SiaDc09Trigger) -> tuple[asyncio.DatagramTransport, UdpPanel]:
    assert receiver.udp_port is not None
    return await UdpPanel.open(receiver.udp_port)


# -- tests ----------------------------------------------------------------------------------

async def test_plain_sia_burglary_is_stored_then_acked(panel: TcpPanel, sink: RecordingSink) -> None:
    frame = message(7, "Nri2/BA03")
    await panel.send(frame)
    assert await panel.reply() == '"ACK"0007R1L0#1234[]'
    [alarm] = sink.alarms
    assert (alarm.source, alarm.site, alarm.zone, alarm.kind) == ("arc", "paris", "3", EventKind.intrusion)
    assert alarm.label == "Reception panic button"
    assert alarm.details["partition"] == "2" and alarm.details["code"] == "BA"
    assert alarm.raw == frame.decode().strip()


async def test_merged_and_split_frames_over_tcp(panel: TcpPanel, sink: RecordingSink,
                                                receiver: SiaDc09Trigger) -> None:
    await panel.send(message(1, "Nri1/PA01") + message(2, "Nri1/FA02") + message(3, "Nri1/TA04"))
    assert [await panel.reply() for _ in range(3)] == [f'"ACK"000{i}R1L0#1234[]' for i in (1, 2, 3)]
    split = message(4, "Nri1/HA05") + message(5, "Nri1/BR01")
    for i in range(0, len(split), 7):  # cut mid-header, mid-body and across the two frames
        await panel.send(split[i:i + 7])
        await asyncio.sleep(0.005)
    assert [await panel.reply() for _ in range(2)] == ['"ACK"0004R1L0#1234[]', '"ACK"0005R1L0#1234[]']
    assert [a.kind for a in sink.alarms] == [EventKind.panic, EventKind.fire, EventKind.tamper,
                                             EventKind.panic, EventKind.restore]
    assert sink.alarms[-1].details["restores"] == "intrusion"
    assert receiver.stats["garbage_bytes"] == 0 and receiver.stats["acked"] == 5


async def test_encrypted_aes128_hex_key_over_tcp(panel: TcpPanel, sink: RecordingSink) -> None:
    key = bytes.fromhex(KEY_HEX)
    await panel.send(message(12, "Nri1/PA07", account="AB12", key=key))
    body = await panel.reply()
    assert body.startswith('"*ACK"0012R1L0#AB12[')
    assert decrypt_reply(body, key).startswith("]_")  # pad|]_HH:MM:SS,MM-DD-YYYY
    [alarm] = sink.alarms
    assert (alarm.site, alarm.zone, alarm.kind) == ("lyon", "7", EventKind.panic)
    assert alarm.details["encrypted"] is True and alarm.details["content"] == "Nri1/PA07"


async def test_encrypted_aes256_ascii_key_contact_id_over_udp(receiver: SiaDc09Trigger,
                                                              sink: RecordingSink) -> None:
    key = KEY_ASCII.encode()
    transport, proto = await udp_panel(receiver)
    try:
        transport.sendto(message(3, "1121 02 015", account="C0FFEE", mid="ADM-CID", key=key))
        body = check(await asyncio.wait_for(proto.replies.get(), 5))
    finally:
        transport.close()
    assert body.startswith('"*ACK"0003R1L0#C0FFEE[')
    assert decrypt_reply(body, key).startswith("]_")
    [alarm] = sink.alarms
    assert (alarm.site, alarm.zone, alarm.kind) == ("lille", "15", EventKind.panic)
    assert alarm.details | {"partition": "2", "code": "121", "qualifier": "1"} == alarm.details


async def test_contact_id_restore_test_and_null(panel: TcpPanel, sink: RecordingSink,
                                                receiver: SiaDc09Trigger) -> None:
    await panel.send(message(20, "3130 01 004", mid="ADM-CID"))
    await panel.send(message(21, "1602 00 000", mid="ADM-CID"))
    await panel.send(wrap(f'"NULL"0022R1L0#1234[]{stamp()}'))
    assert [await panel.reply() for _ in range(3)] == [f'"ACK"00{n}R1L0#1234[]' for n in (20, 21, 22)]
    restore, test = sink.alarms
    assert (restore.kind, restore.zone, restore.details["restores"]) == (EventKind.restore, "4", "intrusion")
    assert test.kind is EventKind.test
    assert receiver.stats["null"] == 1


async def test_duplicate_sequence_is_acked_but_not_refired(panel: TcpPanel, sink: RecordingSink,
                                                           receiver: SiaDc09Trigger) -> None:
    frame = message(42, "Nri1/PA01")
    await panel.send(frame)
    await panel.send(frame)
    assert [await panel.reply() for _ in range(2)] == ['"ACK"0042R1L0#1234[]'] * 2
    assert len(sink.alarms) == 1 and receiver.stats["duplicates"] == 1


async def test_unknown_account_gets_duh(panel: TcpPanel, sink: RecordingSink, receiver: SiaDc09Trigger) -> None:
    await panel.send(message(5, "Nri1/PA01", account="9999"))
    assert await panel.reply() == '"DUH"0005R1L0#9999[]'
    assert sink.alarms == [] and receiver.stats["unknown_account"] == 1


async def test_wrong_key_gets_duh_and_is_counted(panel: TcpPanel, sink: RecordingSink,
                                                 receiver: SiaDc09Trigger) -> None:
    await panel.send(message(6, "Nri1/PA01", account="AB12", key=os.urandom(16)))
    assert await panel.reply() == '"DUH"0006R1L0#AB12[]'
    await panel.send(message(7, "Nri1/PA01", account="AB12"))  # plain text for a keyed account
    assert await panel.reply() == '"DUH"0007R1L0#AB12[]'
    assert sink.alarms == [] and receiver.stats["decrypt_errors"] == 2


async def test_stale_timestamp_gets_nak_with_receiver_time(panel: TcpPanel, sink: RecordingSink,
                                                           receiver: SiaDc09Trigger) -> None:
    await panel.send(message(8, "Nri1/PA01", offset=-120))
    body = await panel.reply()
    assert body.startswith('"NAK"0000R0L0A0[]_')
    sent = datetime.strptime(body.split("]_")[1], "%H:%M:%S,%m-%d-%Y").replace(tzinfo=timezone.utc)
    assert abs((sent - datetime.now(timezone.utc)).total_seconds()) < 5
    await panel.send(message(9, "Nri1/PA01", offset=15))  # within the 20 s lead the standard allows
    assert await panel.reply() == '"ACK"0009R1L0#1234[]'
    assert len(sink.alarms) == 1 and receiver.stats["stale"] == 1


async def test_bad_crc_and_garbage_get_no_reply_and_do_not_block(panel: TcpPanel, sink: RecordingSink,
                                                                 receiver: SiaDc09Trigger) -> None:
    good = message(10, "Nri1/PA01")
    corrupt = good[:5] + good[5:].replace(b"PA01", b"PA02")  # CRC no longer matches
    await panel.send(b"\x00\xffGARBAGE\r\n" + corrupt + os.urandom(64).replace(b"\n", b"") + good)
    assert await panel.reply() == '"ACK"0010R1L0#1234[]'
    assert [a.zone for a in sink.alarms] == ["1"]
    assert receiver.stats["bad_frame"] == 1 and receiver.stats["garbage_bytes"] >= 11


async def test_oversized_datagram_and_undecodable_payload(receiver: SiaDc09Trigger, sink: RecordingSink) -> None:
    transport, proto = await udp_panel(receiver)
    try:
        transport.sendto(b"\n" + b"A" * 5000 + b"\r")
        transport.sendto(message(11, "hello world", mid="ADM-CID"))
        assert check(await asyncio.wait_for(proto.replies.get(), 5)) == '"DUH"0011R1L0#1234[]'
    finally:
        transport.close()
    assert receiver.stats["oversized"] == 1 and receiver.stats["undecodable"] == 1 and sink.alarms == []


async def test_ack_only_after_the_alarm_is_stored(panel: TcpPanel, sink: RecordingSink,
                                                  receiver: SiaDc09Trigger) -> None:
    sink.gate = asyncio.Event()
    await panel.send(message(30, "Nri1/PA01"))
    with pytest.raises(asyncio.TimeoutError):
        await panel.reply(timeout=0.3)
    sink.gate.set()
    assert await panel.reply() == '"ACK"0030R1L0#1234[]'
    sink.fail = 1  # storage fails: no ACK; the panel's repeat is stored and ACKed
    await panel.send(message(31, "Nri1/PA02"))
    with pytest.raises(asyncio.TimeoutError):
        await panel.reply(timeout=0.3)
    await panel.send(message(31, "Nri1/PA02"))
    assert await panel.reply() == '"ACK"0031R1L0#1234[]'
    assert [a.zone for a in sink.alarms] == ["1", "2"] and receiver.stats["store_errors"] == 1


async def test_the_same_frame_over_tcp_and_udp_at_once_is_stored_once(panel: TcpPanel, sink: RecordingSink,
                                                                      receiver: SiaDc09Trigger) -> None:
    """The second copy waits for the first one's storage: both ACKed once it is stored, neither
    if it fails (then the panel's repeat is stored)."""
    transport, udp = await udp_panel(receiver)
    try:
        for seq, fail in ((40, 0), (41, 1)):
            sink.gate, sink.fail = asyncio.Event(), fail
            frame = message(seq, f"Nri1/PA{seq}")
            await panel.send(frame)
            while not receiver._inflight:  # the TCP copy is being stored
                await asyncio.sleep(0.01)
            transport.sendto(frame)
            while receiver.stats["duplicates"] < seq - 39:
                await asyncio.sleep(0.01)
            sink.gate.set()
            if fail:
                with pytest.raises(asyncio.TimeoutError):
                    await panel.reply(timeout=0.3)
                with pytest.raises(asyncio.TimeoutError):
                    await udp.reply(timeout=0.3)
            else:
                assert await panel.reply() == await udp.reply() == f'"ACK"00{seq}R1L0#1234[]'
        await panel.send(message(41, "Nri1/PA41"))
        assert await panel.reply() == '"ACK"0041R1L0#1234[]'
    finally:
        transport.close()
    assert [a.zone for a in sink.alarms] == ["40", "41"] and receiver.stats["store_errors"] == 1
    assert not receiver._inflight


async def test_silent_panel_raises_input_fault_then_restore(sink: RecordingSink) -> None:
    config = make_config(accounts=[{"account": "1234", "site": "paris", "supervision": "300ms"}])
    trigger = SiaDc09Trigger("arc", config, sink)
    await trigger.start()
    try:
        for _ in range(100):
            if sink.alarms:
                break
            await asyncio.sleep(0.05)
        [fault] = sink.alarms
        assert (fault.kind, fault.site, fault.input) == (EventKind.input_fault, "paris", "1234")
        conn = TcpPanel(*await asyncio.open_connection("127.0.0.1", trigger.port))
        await conn.send(wrap(f'"NULL"0001R1L0#1234[]{stamp()}'))
        assert await conn.reply() == '"ACK"0001R1L0#1234[]'
        await conn.close()
        assert sink.alarms[1].kind is EventKind.restore
        assert sink.alarms[1].details["restores"] == "input_fault"
        assert trigger.stats["faults"] == 1
    finally:
        await trigger.stop()


async def test_alarm_is_durable_in_the_sqlite_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "alarms.db")
    await store.open()

    class StoreSink(RecordingSink):
        async def submit(self, alarm: Alarm) -> str:
            await store.add_alarm(alarm)
            return alarm.id

    trigger = SiaDc09Trigger("arc", make_config(), StoreSink())
    await trigger.start()
    try:
        conn = TcpPanel(*await asyncio.open_connection("127.0.0.1", trigger.port))
        await conn.send(message(1, "Nri1/FA09"))
        assert await conn.reply() == '"ACK"0001R1L0#1234[]'
        await conn.close()
        [stored] = await store.pending_alarms()
        assert (stored.site, stored.zone, stored.kind) == ("paris", "9", EventKind.fire)
    finally:
        await trigger.stop()
        await store.close()


def test_config_rejects_bad_keys_and_duplicate_accounts() -> None:
    with pytest.raises(ValidationError, match="16, 24 or 32 bytes"):
        make_config(accounts=[{"account": "1234", "site": "paris", "key": "00112233", "key_format": "hex"}])
    with pytest.raises(ValidationError, match="not hexadecimal"):
        make_config(accounts=[{"account": "1234", "site": "paris", "key": KEY_ASCII, "key_format": "hex"}])
    with pytest.raises(ValidationError, match="key_format: hex or key_format: ascii"):
        make_config(accounts=[{"account": "1234", "site": "paris", "key": KEY_HEX}])
    with pytest.raises(ValidationError, match="listed twice"):
        make_config(accounts=[{"account": "1234", "site": "a"}, {"account": "1234", "site": "b"}])
    with pytest.raises(ValidationError):
        make_config(colour="red")


# -- AES pads over the full legal range (DC-09-2013 §5.4.4.2) --------------------------------

FRAMES_PER_RUN = 40  # ~8 pad bytes each: every one of the 253 legal values is used


def keyed_config(port: int = 0) -> SiaDc09Config:
    return make_config(port=port, accounts=[
        {"account": f"A{size}", "site": f"aes{size * 8}", "key": key, "key_format": "ascii"}
        for size, key in PEER_KEYS.items()])


async def exchange(transport: str, port: int, frames: list[bytes]) -> list[str]:
    """Send the frames one by one as a panel does (next one after the reply); the replies."""
    replies = []
    if transport == "tcp":
        conn = await TcpPanel.connect(port)
        try:
            for raw in frames:
                await conn.send(raw)
                replies.append(await conn.reply())
        finally:
            await conn.close()
    else:
        udp, proto = await UdpPanel.open(port)
        try:
            for raw in frames:
                udp.sendto(raw)
                replies.append(await proto.reply())
        finally:
            udp.close()
    return replies


def padded_frames(size: int, mid: str = "SIA-DCS") -> tuple[list[bytes], PadSource]:
    pads = PadSource(seed=size)
    data = (lambda n: f"Nri1/BA{n:02d}") if mid == "SIA-DCS" else (lambda n: f"1130 01 {n:03d}")
    frames = [message(n, data(n), account=f"A{size}", mid=mid, key=PEER_KEYS[size].encode(), pads=pads)
              for n in range(1, FRAMES_PER_RUN + 1)]
    return frames, pads


@pytest.mark.parametrize("transport", ["tcp", "udp"])
@pytest.mark.parametrize("size", [16, 24, 32], ids=["aes128", "aes192", "aes256"])
async def test_every_legal_pad_byte_is_accepted(size: int, transport: str, sink: RecordingSink) -> None:
    trigger = SiaDc09Trigger("arc", keyed_config(), sink)
    await trigger.start()
    try:
        frames, pads = padded_frames(size, "SIA-DCS" if transport == "tcp" else "ADM-CID")
        port = trigger.port if transport == "tcp" else trigger.udp_port
        assert port is not None
        replies = await exchange(transport, port, frames)
    finally:
        await trigger.stop()
    assert pads.used == set(LEGAL_PAD)  # control bytes, 0x80-0xFF and all the rest were sent
    assert all(r.startswith(f'"*ACK"{n:04d}R1L0#A{size}[') for n, r in enumerate(replies, 1)), replies
    assert all(decrypt_reply(r, PEER_KEYS[size].encode()).startswith("]_") for r in replies)
    assert [a.zone for a in sink.alarms] == [str(n) for n in range(1, FRAMES_PER_RUN + 1)]
    assert {a.site for a in sink.alarms} == {f"aes{size * 8}"}
    assert trigger.stats["decrypt_errors"] == 0 and trigger.stats["undecodable"] == 0


@pytest.mark.parametrize("transport", ["tcp", "udp"])
@pytest.mark.parametrize("size", [16, 24, 32], ids=["aes128", "aes192", "aes256"])
async def test_pysiaalarm_receiver_accepts_the_same_frames(size: int, transport: str) -> None:
    """The simulator is checked against a receiver written outside the project."""
    events: list[Any] = []

    async def on_event(event: Any) -> None:
        events.append(event)

    port = free_udp_and_tcp_port()
    account = SIAAccount(f"A{size}", PEER_KEYS[size])
    frames, pads = padded_frames(size)
    if transport == "tcp":
        peer = SIAClient("127.0.0.1", port, [account], on_event, protocol=CommunicationsProtocol.TCP)
        await peer.async_start()
        stop = peer.async_stop
    else:  # pysiaalarm's UDP start asserts a transport class asyncio does not use: give it its socket
        peer = SIAClient("127.0.0.1", port, [account], on_event, protocol=CommunicationsProtocol.UDP)
        udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _PeerUdp(peer.sia_server), local_addr=("127.0.0.1", port))
        stop = udp.close  # type: ignore[assignment]
    try:
        replies = await exchange(transport, port, frames)
        for _ in range(100):
            if len(events) == len(frames):
                break
            await asyncio.sleep(0.02)
    finally:
        result = stop()
        if result is not None:
            await result
    assert pads.used == set(LEGAL_PAD)
    assert all(r.startswith(f'"*ACK"{n:04d}') for n, r in enumerate(replies, 1)), replies
    assert [(e.code, int(e.message)) for e in events] == [("BA", n) for n in range(1, FRAMES_PER_RUN + 1)]


class _PeerUdp(asyncio.DatagramProtocol):
    def __init__(self, server: Any) -> None:
        self.server = server

    def connection_made(self, transport: Any) -> None:
        self.server.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server.datagram_received(data, addr)


def free_udp_and_tcp_port() -> int:
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both TCP and UDP")


WRONG_KEYS = 4000


async def test_wrong_key_false_accept_rate(receiver: SiaDc09Trigger, sink: RecordingSink,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """Thousands of frames under random wrong keys (all three sizes, full-range pads): none
    may get through. The bound is on the rate; the structure check makes it ~1e-30 per frame.
    The log says so once per burst, not 4,000 times."""
    caplog.set_level(logging.WARNING, logger="crisisbot")
    rng = random.Random(11)
    pads = PadSource(seed=11)
    conn = await TcpPanel.connect(receiver.port or 0)
    replies: list[str] = []
    try:
        for batch in range(0, WRONG_KEYS, 200):
            for n in range(batch, batch + 200):
                key = rng.randbytes(rng.choice((16, 24, 32)))
                mid = "SIA-DCS" if n % 2 else "ADM-CID"
                data = "Nri1/PA01" if n % 2 else "1120 01 001"
                await conn.send(message(n % 9999 + 1, data, account="AB12", mid=mid, key=key, pads=pads))
            replies += [await conn.reply() for _ in range(200)]
    finally:
        await conn.close()
    accepted = sum(1 for r in replies if r.startswith('"*ACK"'))
    assert len(replies) == WRONG_KEYS
    assert accepted / WRONG_KEYS <= 1 / WRONG_KEYS / 2  # i.e. none in this run
    assert all(r.startswith('"DUH"') for r in replies)
    assert sink.alarms == [] and receiver.stats["decrypt_errors"] == WRONG_KEYS
    refusals = [r.getMessage() for r in caplog.records if "decrypt" in r.getMessage()]
    assert 1 <= len(refusals) <= 3, refusals


# -- duplicate memory of frames without timestamp, across restarts -------------------------------

def untimed(seq: int, zone: int) -> bytes:
    """A plain frame without timestamp: only the receiver's memory tells a repeat from a new event."""
    return wrap(f'"SIA-DCS"{seq:04d}R1L0#1234[#1234|Nri1/BA{zone:02d}]')


async def test_untimed_frames_are_remembered_one_row_each_across_restarts(tmp_path: Path) -> None:
    """Each new frame writes its own row of trigger state (not the whole memory again), and a
    receiver started afterwards on the same store still ACKs a repeat without firing again."""
    from triggers.state import TriggerState

    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    writes: list[int] = []
    save = store.save_trigger_state

    async def counting_save(trigger: str, changes: dict[str, Any]) -> None:
        # remembered frames written: a list of frames counts each one
        writes.append(sum(len(v) if isinstance(v, list) and v and isinstance(v[0], list) else 1
                          for v in changes.values()))
        await save(trigger, changes)

    store.save_trigger_state = counting_save  # type: ignore[method-assign]
    try:
        sink = RecordingSink()
        trigger = SiaDc09Trigger("arc", make_config(), sink, state=await TriggerState.load(store, "arc"))
        await trigger.start()
        conn = TcpPanel(*await asyncio.open_connection("127.0.0.1", trigger.port))
        for seq in range(1, 201):
            await conn.send(untimed(seq, seq % 90))
            assert (await conn.reply()).startswith('"ACK"')
        await conn.close()
        await trigger.state.flush()
        await trigger.stop()
        assert len(sink.alarms) == 200
        # 200 frames and the panel's silence timer: each frame written once, not the memory again
        assert sum(writes) <= 200 + len(writes), writes
        rows = await store.load_trigger_state("arc")
        assert len([k for k in rows if k.startswith("recent:1234:")]) == 200

        again = SiaDc09Trigger("arc", make_config(), sink, state=await TriggerState.load(store, "arc"))
        await again.start()
        try:
            conn = TcpPanel(*await asyncio.open_connection("127.0.0.1", again.port))
            await conn.send(untimed(7, 7))  # a repeat of a frame the previous run stored
            assert (await conn.reply()).startswith('"ACK"')
            await conn.send(untimed(7, 8))  # same number, other content: a new event
            assert (await conn.reply()).startswith('"ACK"')
            await conn.close()
        finally:
            await again.stop()
        assert again.stats["duplicates"] == 1 and len(sink.alarms) == 201
    finally:
        await store.close()


async def test_duplicate_memory_saved_as_one_list_by_earlier_versions_is_kept(tmp_path: Path) -> None:
    import time

    from triggers.state import TriggerState

    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    try:
        await store.save_trigger_state("arc", {"recent:1234": [["0007", "Nri1/BA07", time.time() + 600],
                                                               ["0008", "Nri1/BA08", time.time() - 1]]})
        sink = RecordingSink()
        trigger = SiaDc09Trigger("arc", make_config(), sink, state=await TriggerState.load(store, "arc"))
        await trigger.start()
        try:
            conn = TcpPanel(*await asyncio.open_connection("127.0.0.1", trigger.port))
            await conn.send(untimed(7, 7))  # remembered: not fired again
            await conn.send(untimed(8, 8))  # its memory had expired: a new event
            assert [(await conn.reply())[:5] for _ in range(2)] == ['"ACK"'] * 2
            await conn.close()
            await trigger.state.flush()
        finally:
            await trigger.stop()
        assert trigger.stats["duplicates"] == 1 and len(sink.alarms) == 1
        rows = await store.load_trigger_state("arc")
        assert "recent:1234" not in rows  # rewritten as one row per frame
        assert sorted(v[0] for k, v in rows.items() if k.startswith("recent:1234:")) == ["0007", "0008"]
    finally:
        await store.close()
