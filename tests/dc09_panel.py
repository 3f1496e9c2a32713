"""A SIA DC-09 panel simulator for the tests, written apart from the receiver's codec.

CRC is the bitwise CRC-16/ARC of the standard (pysiaalarm's loop, over bytes; replies
are checked with pysiaalarm's own function) and AES comes from pycryptodome, so a
mistake shared with `triggers/dc09_codec.py` cannot hide. The AES pad is drawn from
the whole range DC-09-2013 §5.4.4.2 allows (any byte but `|`, `[`, `]`), as real
panels and diallers do: control and high bytes included.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone
from typing import Any

from Crypto.Cipher import AES
from pysiaalarm.event import BaseEvent

LEGAL_PAD = bytes(b for b in range(256) if b not in b"|[]")


class PadSource:
    """Pad bytes that walk through every legal value (shuffled) before repeating, so a few
    dozen frames are certain to carry control bytes, high bytes and all the rest."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._pool: list[int] = []
        self.used: set[int] = set()

    def take(self, count: int) -> bytes:
        out = bytearray()
        while len(out) < count:
            if not self._pool:
                self._pool = list(LEGAL_PAD)
                self._rng.shuffle(self._pool)
            out.append(self._pool.pop())
        self.used.update(out)
        return bytes(out)


_RANDOM_PADS = PadSource(seed=random.randrange(1 << 30))


def stamp(offset: float = 0.0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=offset)).strftime("_%H:%M:%S,%m-%d-%Y")


def crc_arc(data: bytes) -> int:
    crc = 0
    for byte in data:
        for _ in range(8):
            byte ^= crc & 1
            crc >>= 1
            if byte & 1:
                crc ^= 0xA001
            byte >>= 1
    return crc


def wrap(body: str | bytes) -> bytes:
    """`LF crc 0LLL body CR`; bytes bodies may carry what ASCII cannot (hostile tests)."""
    data = body.encode("ascii") if isinstance(body, str) else body
    return b"\n" + f"{crc_arc(data):04X}{len(data):04X}".encode() + data + b"\r"


def encrypt(key: bytes, content: str, pads: PadSource | None = None) -> str:
    """`pad|content` under AES-CBC with a zero IV, as hex; the pad fills the last block."""
    pad = (pads or _RANDOM_PADS).take(16 - (len(content) + 1) % 16)
    blob = AES.new(key, AES.MODE_CBC, iv=bytes(16)).encrypt(pad + b"|" + content.encode("ascii"))
    return blob.hex().upper()


def message(seq: int, data: str, *, account: str = "1234", mid: str = "SIA-DCS", key: bytes | None = None,
            offset: float = 0.0, receiver: str = "R1", prefix: str = "L0", pads: PadSource | None = None) -> bytes:
    content = f"#{account}|{data}]{stamp(offset)}"
    if key is None:
        return wrap(f'"{mid}"{seq:04d}{receiver}{prefix}#{account}[{content}')
    return wrap(f'"*{mid}"{seq:04d}{receiver}{prefix}#{account}[{encrypt(key, content, pads)}')


def check(reply: bytes) -> str:
    """The body of a receiver reply after checking its framing, length and CRC."""
    assert reply[:1] == b"\n" and reply[-1:] == b"\r", reply
    body = reply[9:-1].decode("ascii")
    assert int(reply[5:9], 16) == len(body)
    assert reply[1:5].decode() == BaseEvent._crc_calc(body)
    return body


def decrypt_reply(body: str, key: bytes) -> str:
    """The content of an encrypted reply, pad removed (the pad may be any legal byte)."""
    blob = bytes.fromhex(body.split("[", 1)[1])
    plain = AES.new(key, AES.MODE_CBC, iv=bytes(16)).decrypt(blob)
    return plain.split(b"|", 1)[1].decode("ascii")


class TcpPanel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> "TcpPanel":
        return cls(*await asyncio.open_connection(host, port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, timeout: float = 5.0) -> str:
        return check(await asyncio.wait_for(self.reader.readuntil(b"\r"), timeout))

    async def close(self) -> None:
        self.writer.close()


class UdpPanel(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.replies.put_nowait(data)

    @staticmethod
    async def open(port: int, host: str = "127.0.0.1") -> tuple[asyncio.DatagramTransport, "UdpPanel"]:
        return await asyncio.get_running_loop().create_datagram_endpoint(UdpPanel, remote_addr=(host, port))

    async def reply(self, timeout: float = 5.0) -> str:
        return check(await asyncio.wait_for(self.replies.get(), timeout))
