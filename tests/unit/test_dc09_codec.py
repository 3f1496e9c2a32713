"""The DC-09 codec's pure parts, against the test panel's independent implementation
(tests/dc09_panel.py: bitwise CRC, pycryptodome AES). The receiver over TCP/UDP, its acks
and its store: tests/test_trigger_dc09.py."""

from __future__ import annotations

import os

import pytest

from crisisbot.errors import FrameError
from crisisbot.models import EventKind
from dc09_panel import crc_arc, message, wrap
from triggers import dc09_codec as codec

KEY = bytes(range(16))


def test_crc16_is_crc_arc():
    for size in (0, 1, 7, 64, 1000):
        data = os.urandom(size)
        assert codec.crc16(data) == crc_arc(data)


def test_a_plain_frame_is_split_into_its_envelope_and_content():
    frame = codec.parse_frame(message(7, "Nri1/BA01", account="12ab"))
    assert (frame.id, frame.seq, frame.account, frame.encrypted) == ("SIA-DCS", "0007", "12AB", False)
    content = codec.parse_content(frame.rest)
    assert content.data == "Nri1/BA01" and content.sent_at is not None


@pytest.mark.parametrize(("raw", "why"), [
    (wrap('"SIA-DCS"0001R1L0#1234[]')[:-1], "not an LF"),
    (b"\n0000" + wrap('"SIA-DCS"0001R1L0#1234[]')[5:], "bad CRC"),
    (b"\n" + wrap('"SIA-DCS"0001R1L0#1234[]')[1:5] + b"00FF" + wrap('"SIA-DCS"0001R1L0#1234[]')[9:], "length field"),
])
def test_a_damaged_frame_gets_no_reply(raw, why):
    with pytest.raises(FrameError, match=why):
        codec.parse_frame(raw)


def test_an_encrypted_frame_decrypts_to_its_content_without_the_pad():
    frame = codec.parse_frame(message(8, "Nri1/BH01", key=KEY))
    assert frame.encrypted
    content = codec.parse_content(codec.decrypt(KEY, frame.rest))
    assert content.data == "Nri1/BH01" and content.account == "1234"


def test_sia_and_contact_id_events_are_classified():
    (alarm,) = codec.decode_sia("Nri1/BA01")
    assert (alarm.kind, alarm.zone, alarm.partition) == (EventKind.intrusion, "1", "1")
    (restore,) = codec.decode_sia("Nri1/BH01")
    assert (restore.kind, restore.restores) == (EventKind.restore, EventKind.intrusion)
    (cid,) = codec.decode_cid("1130 01 015")
    assert (cid.kind, cid.zone, cid.sia_code) == (EventKind.intrusion, "15", "BA")


def test_the_splitter_cuts_merged_and_split_frames_and_skips_garbage():
    first, second = message(1, "Nri1/BA01"), message(2, "Nri1/FA02")
    splitter = codec.FrameSplitter()
    assert splitter.feed(b"xx" + first + second[:5]) == [first]
    assert splitter.feed(second[5:]) == [second]
    assert splitter.garbage == 2
