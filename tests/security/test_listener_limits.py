"""Idle-connection floods and slow senders against every listener.

The daemon runs as a subprocess whose open-files limit starts low (soft 256, hard
1024, like a default account): it must raise the soft limit, cap connections per
listener and per address, make room by closing idle connections, and log refusals
once per burst, while a real panel, a real webhook sender and /health still get in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from conftest import free_port, wait_until
from daemon_helpers import SECRET, signed_headers
from crisisbot.listeners import throttle_accept_errors
from dc09_panel import TcpPanel, UdpPanel, message
from sinks import RecordingSink
from triggers import sia_dc09
from triggers.sia_dc09 import SiaDc09Config, SiaDc09Trigger
from triggers.webhook import WebhookConfig, WebhookTrigger

IDLE_FLOOD = 1100




def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))


def hold(port: int, source: str, count: int, into: list[socket.socket]) -> None:
    for _ in range(count):
        try:
            into.append(socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)))
        except OSError:  # refused or reset at once: what a full listener may do
            pass


@pytest.mark.skipif(sys.platform != "linux", reason="needs the whole 127.0.0.0/8 on loopback (Linux)")
def test_idle_flood_on_dc09_and_webhook_leaves_alarms_and_health_working(workspace) -> None:
    dc09_port, hook_port, web_port = free_port(), free_port(), free_port()

    def change(data: dict) -> None:
        data["triggers"]["arc"] = {"type": "sia-dc09", "host": "127.0.0.1", "port": dc09_port, "udp": False,
                                   "accounts": [{"account": "1234", "site": "paris-hq"}]}
        data["triggers"]["hook"] = {"type": "webhook", "host": "127.0.0.1", "port": hook_port,
                                    "secret": "${CRISISBOT_TEST_WEBHOOK_SECRET}"}
        data.setdefault("web", {}).update({"enabled": True, "host": "127.0.0.1", "port": web_port})
    workspace.edit_config(change)
    log = workspace.root / "daemon.log"
    env = {**os.environ, "CRISISBOT_TEST_WEBHOOK_SECRET": SECRET}
    daemon = subprocess.Popen([sys.executable, "-m", "crisisbot", "-c", str(workspace.config_path), "run"],
                              stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, preexec_fn=low_fd_limit)
    held: list[socket.socket] = []
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{hook_port}/health"), what="the daemon to listen")
        lines_before = len(log.read_text().splitlines())
        # 960 idle connections from 20 addresses (under the per-address cap: the total cap
        # and the fd budget must hold), and 140 from one address (over its cap of 128)
        for index in range(20):
            hold(dc09_port, f"127.0.0.{index + 2}", 24, held)
            hold(hook_port, f"127.0.0.{index + 2}", 24, held)
        hold(hook_port, "127.0.0.99", 140, held)
        assert len(held) >= IDLE_FLOOD * 0.9  # the flood is really held open on our side

        async def real_traffic() -> tuple[str, int, int, int]:
            panel = await TcpPanel.connect(dc09_port)
            try:
                await panel.send(message(1, "Nri1/PA03"))
                ack = await panel.reply(timeout=20)
            finally:
                await panel.close()
            body = json.dumps({"site": "paris-hq", "label": "Panique accueil"}).encode()
            async with httpx.AsyncClient(timeout=20) as client:
                alarm = await client.post(f"http://127.0.0.1:{hook_port}/alarms", content=body,
                                          headers=signed_headers(body))
                health = await client.get(f"http://127.0.0.1:{web_port}/health")
                hook_health = await client.get(f"http://127.0.0.1:{hook_port}/health")
            return ack, alarm.status_code, health.status_code, hook_health.status_code

        ack, alarm, health, hook_health = asyncio.run(real_traffic())
        assert ack == '"ACK"0001R1L0#1234[]'
        assert (alarm, health, hook_health) == (202, 200, 200)
        assert daemon.poll() is None
    finally:
        for sock in held:
            sock.close()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    text = log.read_text()
    lines = text.splitlines()[lines_before:]
    refusals = [line for line in lines if "connection refused" in line]
    assert 1 <= len(refusals) <= 6, refusals  # visible, once per burst and listener, not per attempt
    assert len(lines) < 60, lines[:80]
    assert "Too many open files" not in text and "Traceback" not in text
    assert "open-files limit 1024" in text  # raised from the soft 256
    assert daemon.returncode == 0


# -- timeouts, in-process (short limits) ---------------------------------------------------

SHORT = {"idle_timeout": "300ms", "header_timeout": "300ms"}


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionError:
        return True


async def test_dc09_idle_and_slow_frame_connections_are_closed() -> None:
    config = SiaDc09Config.model_validate({"type": "sia-dc09", "host": "127.0.0.1", "port": 0, "udp": False,
                                           "limits": SHORT, "accounts": [{"account": "1234", "site": "paris"}]})
    trigger = SiaDc09Trigger("arc", config, RecordingSink())
    await trigger.start()
    try:
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", trigger.port)
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", trigger.port)
        frame = message(1, "Nri1/PA01")
        slow_w.write(frame[:20])  # a frame begun and never finished
        for _ in range(3):  # trickling bytes does not reset the frame's deadline
            await asyncio.sleep(0.15)
            slow_w.write(b"A")
        assert await closed_by_peer(idle_r) and await closed_by_peer(slow_r)
        idle_w.close()
        slow_w.close()
        panel = await TcpPanel.connect(trigger.port)  # and a prompt panel is served as usual
        await panel.send(message(2, "Nri1/PA01"))
        assert await panel.reply() == '"ACK"0002R1L0#1234[]'
        await panel.close()
        assert trigger.stats["timeouts"] >= 2
    finally:
        await trigger.stop()


async def test_dc09_caps_per_address_and_makes_room_by_closing_idle_ones() -> None:
    config = SiaDc09Config.model_validate({
        "type": "sia-dc09", "host": "127.0.0.1", "port": 0, "udp": False,
        "limits": {"max_connections": 4, "max_per_peer": 3}, "accounts": [{"account": "1234", "site": "paris"}]})
    trigger = SiaDc09Trigger("arc", config, RecordingSink())
    await trigger.start()
    try:
        conns = [await asyncio.open_connection("127.0.0.1", trigger.port) for _ in range(4)]
        assert await closed_by_peer(conns[3][0])  # fourth from the same address: refused
        others = [await asyncio.open_connection("127.0.0.1", trigger.port, local_addr=("127.0.0.2", 0))
                  for _ in range(2)]
        assert await closed_by_peer(conns[0][0])  # at max_connections: the oldest idle one made room
        panel = TcpPanel(*others[1])
        await panel.send(message(3, "Nri1/PA01"))
        assert await panel.reply() == '"ACK"0003R1L0#1234[]'
        assert trigger.gate.stats == {"refused": 1, "evicted": 1}
        for _, writer in conns + others:
            writer.close()
    finally:
        await trigger.stop()


async def test_webhook_slow_headers_and_idle_connections_are_closed(caplog: pytest.LogCaptureFixture) -> None:
    config = WebhookConfig.model_validate({"type": "webhook", "host": "127.0.0.1", "port": 0, "limits": SHORT})
    trigger = WebhookTrigger("hook", config, RecordingSink())
    await trigger.start()
    try:
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", trigger.port)
        slow_r, slow_w = await asyncio.open_connection("127.0.0.1", trigger.port)
        body_r, body_w = await asyncio.open_connection("127.0.0.1", trigger.port)
        slow_w.write(b"POST /alarms HTTP/1.1\r\nHost: x\r\n")
        body_w.write(b"POST /v2/enqueue HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        for _ in range(3):  # slowloris: a header byte, a body byte now and then
            await asyncio.sleep(0.15)
            slow_w.write(b"X")
            body_w.write(b" ")
        assert await closed_by_peer(idle_r) and await closed_by_peer(slow_r) and await closed_by_peer(body_r)
        for writer in (idle_w, slow_w, body_w):
            writer.close()
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{trigger.port}/health")).status_code == 200
    finally:
        await trigger.stop()
    assert not [r for r in caplog.records if r.exc_info], "a timed-out client is not a server error"


def test_limits_are_validated_in_config() -> None:
    with pytest.raises(ValueError, match="max_per_peer"):
        WebhookConfig.model_validate({"type": "webhook", "limits": {"max_per_peer": 0}})
    with pytest.raises(ValueError, match="extra"):
        SiaDc09Config.model_validate({"type": "sia-dc09", "limits": {"max_conections": 5},
                                      "accounts": [{"account": "1234", "site": "paris"}]})


async def test_dc09_udp_flood_is_bounded_and_logged_once(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(sia_dc09, "UDP_IN_FLIGHT", 100)  # the shipped 1,024, scaled down
    sink = RecordingSink()
    sink.gate = asyncio.Event()  # storage stalls: frames pile up in hand
    config = SiaDc09Config.model_validate({"type": "sia-dc09", "host": "127.0.0.1", "port": 0, "tcp": False,
                                           "accounts": [{"account": "1234", "site": "paris"}]})
    trigger = SiaDc09Trigger("arc", config, sink)
    await trigger.start()
    udp, _ = await UdpPanel.open(trigger.udp_port)
    try:
        for seq in range(1, 301):
            udp.sendto(message(seq, "Nri1/BA01"))
            await asyncio.sleep(0.001)  # loopback UDP drops what the socket buffer cannot hold
        for _ in range(200):
            if trigger.stats["udp_overload"] >= 150:
                break
            await asyncio.sleep(0.02)
        assert trigger.stats["udp_overload"] >= 150 and len(trigger._tasks) == 100, trigger.stats
        sink.gate.set()
    finally:
        udp.close()
        await trigger.stop()
    overload_lines = [r for r in caplog.records if "udp_overload" in r.getMessage()]
    assert 1 <= len(overload_lines) <= 2


def test_accept_errors_are_summarised_not_logged_per_attempt(caplog: pytest.LogCaptureFixture) -> None:
    async def burst() -> None:
        loop = asyncio.get_running_loop()
        throttle_accept_errors(loop)
        for _ in range(5000):
            loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                         "exception": OSError(24, "Too many open files")})
        loop.get_exception_handler().burst.close()  # type: ignore[union-attr]
    caplog.set_level(logging.WARNING)
    asyncio.run(burst())
    lines = [r.getMessage() for r in caplog.records if "accepting a connection failed" in r.getMessage()]
    assert len(lines) == 2 and "4999 more" in lines[1], lines
