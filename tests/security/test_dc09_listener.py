"""Hostile bytes on the SIA DC-09 listener: a lying length field must not hold back the
frames behind it, and well-framed data that is not ASCII gets DUH (not silence)."""

from __future__ import annotations

import pytest

from dc09_panel import TcpPanel, UdpPanel, message, stamp, wrap
from sinks import RecordingSink
from triggers.sia_dc09 import SiaDc09Config, SiaDc09Trigger


@pytest.fixture
async def receiver():
    sink = RecordingSink()
    config = SiaDc09Config.model_validate({
        "type": "sia-dc09", "host": "127.0.0.1", "port": 0, "limits": {"idle_timeout": 60},
        "accounts": [{"account": "1234", "site": "paris"}]})
    trigger = SiaDc09Trigger("arc", config, sink)
    await trigger.start()
    yield trigger, sink
    await trigger.stop()


async def test_fake_length_header_then_valid_frame_gets_its_ack(receiver) -> None:
    trigger, sink = receiver
    conn = await TcpPanel.connect(trigger.port)
    try:
        await conn.send(b"\n0000" + b"%04X" % 1008 + b'"SIA-DCS"0001L0#1234[')  # claims 1,008 bytes
        await conn.send(message(2, "Nri1/PA03"))
        assert await conn.reply() == '"ACK"0002R1L0#1234[]'
        # the false start may also be complete and end in CR by chance: still skipped
        third = message(3, "Nri1/PA04")
        await conn.send(b"\n0000" + b"%04X" % (len(third) + 7) + b"1234567" + third)  # ends on its CR
        await conn.send(message(4, "Nri1/PA05"))
        assert await conn.reply() == '"ACK"0003R1L0#1234[]'
        assert await conn.reply() == '"ACK"0004R1L0#1234[]'
    finally:
        await conn.close()
    assert [a.zone for a in sink.alarms] == ["3", "4", "5"]
    assert trigger.stats["garbage_bytes"] > 0


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_non_ascii_data_with_valid_crc_gets_duh(receiver, transport: str) -> None:
    trigger, sink = receiver
    frame = wrap('"SIA-DCS"0007R1L0#1234[#1234|Nri1/PA01 '.encode() + "Réception".encode("latin-1")
                 + b"\xff\x00]" + stamp().encode())
    if transport == "tcp":
        conn = await TcpPanel.connect(trigger.port)
        try:
            await conn.send(frame)
            assert await conn.reply() == '"DUH"0007R1L0#1234[]'
            await conn.send(message(8, "Nri1/PA01"))  # the connection keeps working
            assert await conn.reply() == '"ACK"0008R1L0#1234[]'
        finally:
            await conn.close()
    else:
        udp, proto = await UdpPanel.open(trigger.udp_port)
        try:
            udp.sendto(frame)
            assert await proto.reply() == '"DUH"0007R1L0#1234[]'
        finally:
            udp.close()
    assert trigger.stats["undecodable"] == 1 and trigger.stats["bad_frame"] == 0
    assert [a.zone for a in sink.alarms] == (["1"] if transport == "tcp" else [])
