"""Console sessions and revoked links shared by two processes through their files (the
daemon and its web child): a change in one is seen by the other on its next lookup,
and concurrent changes from both are all kept."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from crisisbot.errors import CrisisbotError
from crisisbot.links import Claims
from crisisbot.models import utcnow
from crisisbot.web import shared_file
from crisisbot.web.access import Revocations
from crisisbot.web.sessions import SessionFile, Sessions

PEER = Path(__file__).with_name("web_state_peer.py")
HANG = 60.0


class Peer:
    """One process holding `Sessions` and `Revocations` on the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, str(PEER), str(data_dir)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.answer() == {"ready": True}

    def send(self, **request: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(HANG)
            raise AssertionError(f"the peer process ended: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return json.loads(line)

    def ask(self, **request: Any) -> dict[str, Any]:
        self.send(**request)
        return self.answer()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(HANG)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(HANG)


@pytest.fixture
def peers(tmp_path: Path):
    started: list[Peer] = []

    def start() -> Peer:
        started.append(Peer(tmp_path))
        return started[-1]

    yield start
    for peer in started:
        peer.stop()


def sessions_on(data_dir: Path) -> Sessions:
    return Sessions(SessionFile(data_dir / "console-sessions.json"), lifetime=3600, idle=600,
                    offload=asyncio.to_thread)


def test_a_session_revoked_in_one_process_is_refused_at_once_in_the_other(peers):
    web, daemon = peers(), peers()  # both loaded before any session exists
    token = web.ask(op="create", user="operator")["token"]
    seen_by_daemon = daemon.ask(op="list")["sessions"]
    assert web.ask(op="known", token=token) == {"known": True}
    assert web.ask(op="user", token=token) == {"user": "operator"}
    assert daemon.ask(op="revoke", id=seen_by_daemon[0]["id"]) == {"revoked": 1}
    assert web.ask(op="known", token=token) == {"known": False}  # the very next request
    assert web.ask(op="user", token=token) == {"user": None}
    assert [s["user"] for s in seen_by_daemon] == ["operator"]


def test_a_login_in_one_process_is_known_in_the_other_and_a_logout_there_ends_it(peers):
    web, other = peers(), peers()
    token = web.ask(op="create", user="admin")["token"]
    assert other.ask(op="user", token=token) == {"user": "admin"}
    assert other.ask(op="revoke", user="admin") == {"revoked": 1}
    assert web.ask(op="user", token=token) == {"user": None}
    assert other.ask(op="revoke", user="admin") == {"revoked": 0}


async def test_concurrent_creates_and_touches_from_two_processes_lose_no_session(peers, tmp_path):
    first, second = peers(), peers()
    old = [first.ask(op="create", user="early-a")["token"], second.ask(op="create", user="early-b")["token"]]
    for peer in (first, second):
        peer.ask(op="advance", seconds=120)  # every use now persists its last-use time
    first.send(op="flood", user="a", n=50, touch=old)
    second.send(op="flood", user="b", n=50, touch=old)
    made = first.answer()["tokens"] + second.answer()["tokens"]
    stored = SessionFile(tmp_path / "console-sessions.json").read()
    fresh = sessions_on(tmp_path)
    await fresh.load()
    users = {s.user for s in stored}
    assert len(made) == 100 and len(set(made)) == 100
    assert users == {f"a{i}" for i in range(50)} | {f"b{i}" for i in range(50)} | {"early-a", "early-b"}
    assert all(fresh.known(t) for t in made + old)
    early = [s for s in stored if s.user.startswith("early")]
    assert all(s.last_seen > s.created_at for s in early)  # the touches were written too


def test_a_link_revoked_in_one_process_is_refused_in_the_other_on_the_next_check(peers):
    daemon, web = peers(), peers()
    link = {"token": "tok-1", "incident": "inc-1", "recipient": "alice"}
    assert web.ask(op="link_reason", **link) == {"reason": None}  # read before the revocation
    assert daemon.ask(op="revoke_link", **link) == {"ok": True}
    assert web.ask(op="link_reason", **link) == {"reason": "revoked by the test"}
    other = {"token": "tok-2", "incident": "inc-1", "recipient": "bruno"}
    assert web.ask(op="revoke_link", **other) == {"ok": True}  # a save from the other side keeps both
    assert daemon.ask(op="link_reason", **other) == {"reason": "revoked by the test"}
    assert daemon.ask(op="link_reason", **link) == {"reason": "revoked by the test"}


async def test_the_files_and_their_lock_are_private(tmp_path):
    sessions = sessions_on(tmp_path)
    await sessions.load()
    await sessions.create("operator", None)
    revocations = await Revocations.from_file(tmp_path / "revoked-links.json")
    await revocations.revoke_recipient("inc", "alice")
    for name in ("console-sessions.json", "console-sessions.json.lock", "revoked-links.json",
                 "revoked-links.json.lock"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_two_versions_written_in_a_row_never_share_a_stamp(tmp_path):
    """Same size, an inode that may be reused, a coarse clock: the mtime still moves."""
    path = tmp_path / "f.json"
    stamps = []
    for _ in range(20):
        with shared_file.locked(path):
            stamps.append(shared_file.write(path, "[]", shared_file.stamp(path)))
    assert all(later.mtime_ns > earlier.mtime_ns for earlier, later in zip(stamps, stamps[1:]))
    assert stamps[-1] == shared_file.stamp(path)


async def test_a_read_only_revocation_list_refuses_to_revoke_and_says_where_to(tmp_path):
    revocations = await Revocations.from_file(tmp_path / "revoked-links.json", read_only=True)
    claims = Claims("inc", "alice", "ack", utcnow())
    with pytest.raises(CrisisbotError, match="revoked through the daemon"):
        await revocations.revoke_token("tok", claims)
    assert not (tmp_path / "revoked-links.json").exists()


async def test_a_damaged_sessions_file_lets_nobody_in_and_is_reported_once(tmp_path, caplog):
    sessions = sessions_on(tmp_path)
    await sessions.load()
    token = await sessions.create("operator", None)
    (tmp_path / "console-sessions.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="crisisbot.web.sessions"):
        refused = [sessions.known(token), await sessions.user(token), sessions.known(token)]
    assert refused == [False, None, False]
    assert len([r for r in caplog.records if "is damaged" in r.getMessage()]) == 1
    assert await sessions.create("operator", None)  # the next login writes a good file again
    assert len(SessionFile(tmp_path / "console-sessions.json").read()) == 1


async def test_a_damaged_revocation_list_keeps_the_last_good_copy_and_is_reported(tmp_path, caplog):
    revocations = await Revocations.from_file(tmp_path / "revoked-links.json")
    claims = Claims("inc", "alice", "ack", utcnow() + timedelta(hours=1))
    await revocations.revoke_token("tok", claims, "stolen")
    (tmp_path / "revoked-links.json").write_text("[{")
    with caplog.at_level(logging.ERROR, logger="crisisbot.web.access"):
        reasons = [revocations.reason("tok", claims), revocations.reason("tok", claims)]
    assert reasons == ["stolen", "stolen"]
    assert len([r for r in caplog.records if "could not be read again" in r.getMessage()]) == 1


async def test_concurrent_requests_of_one_session_write_its_last_use_once(tmp_path):
    """A page's parallel requests, a minute after the last write, make one write, not one each."""
    clock = [utcnow()]
    writes: list[str] = []

    async def offload(fn: Any, *args: Any) -> Any:
        writes.append(getattr(fn, "__name__", ""))
        return await asyncio.to_thread(fn, *args)

    sessions = Sessions(SessionFile(tmp_path / "console-sessions.json"), lifetime=3600, idle=600,
                        offload=offload, clock=lambda: clock[0])
    await sessions.load()
    token = await sessions.create("operator", None)
    clock[0] += timedelta(seconds=90)
    writes.clear()
    found = await asyncio.gather(*(sessions.user(token) for _ in range(10)))
    assert all(s is not None and s.user == "operator" for s in found)
    assert writes == ["update"]
    stored = SessionFile(tmp_path / "console-sessions.json").read()
    assert stored[0].last_seen == clock[0].isoformat()
