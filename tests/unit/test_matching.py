"""Playbook selection is a pure function: hammer it without I/O."""

from __future__ import annotations

from datetime import datetime, time, timezone

from crisisbot.config.settings import Site
from crisisbot.config.playbook import Match, Playbook, Window
from crisisbot.matching import candidates, in_window, select
from crisisbot.models import Alarm, EventKind, Severity

SITES = {"paris": Site(name="Paris", timezone="Europe/Paris"), "noumea": Site(name="Nouméa", timezone="Pacific/Noumea")}
STEP = [{"action": "meeting", "connector": "jitsi"}]


def playbook(pid: str, priority: int = 0, **match) -> Playbook:
    return Playbook(id=pid, name=pid, priority=priority, match=Match(**match), steps=STEP)


def alarm(**kw) -> Alarm:
    return Alarm(**{"source": "webhook", "site": "paris", **kw})


NOON_PARIS = datetime(2026, 11, 23, 11, 0, tzinfo=timezone.utc)  # Monday 12:00 in Paris


def test_highest_priority_wins_then_file_order():
    books = [playbook("a", 0), playbook("b", 5), playbook("c", 5)]
    assert [p.id for p in candidates(alarm(), books, SITES, NOON_PARIS)] == ["b", "c", "a"]
    assert select(alarm(), books, SITES, NOON_PARIS).id == "b"


def test_every_criterion_must_hold():
    book = playbook("fire", sites=["paris"], kinds=[EventKind.fire], min_severity=Severity.major, zones=["z1"])
    assert select(alarm(kind=EventKind.fire, zone="z1"), [book], SITES, NOON_PARIS) is book
    assert select(alarm(kind=EventKind.fire, zone="z2"), [book], SITES, NOON_PARIS) is None
    assert select(alarm(kind=EventKind.fire, zone="z1", severity=Severity.minor), [book], SITES, NOON_PARIS) is None
    assert select(alarm(kind=EventKind.panic, zone="z1"), [book], SITES, NOON_PARIS) is None
    assert select(alarm(kind=EventKind.fire, zone="z1", site="noumea"), [book], SITES, NOON_PARIS) is None


def test_disabled_playbooks_and_drills():
    drills_only = playbook("drill", drill=True)
    off = Playbook(id="off", name="off", enabled=False, steps=STEP)
    assert select(alarm(), [off, drills_only], SITES, NOON_PARIS) is None
    assert select(alarm(drill=True), [off, drills_only], SITES, NOON_PARIS) is drills_only


def test_windows_use_the_site_time_zone():
    business = playbook("day", windows=[Window(days=["mon", "tue", "wed", "thu", "fri"], start=time(8), end=time(18))])
    assert select(alarm(), [business], SITES, NOON_PARIS) is business
    # the same instant is 22:00 in Nouméa: outside business hours there
    assert select(alarm(site="noumea"), [business], SITES, NOON_PARIS) is None


def test_window_spanning_midnight_belongs_to_its_start_day():
    friday_night = Window(days=["fri"], start=time(22), end=time(6))
    assert in_window(friday_night, datetime(2026, 11, 27, 23, 0))  # Friday 23:00
    assert in_window(friday_night, datetime(2026, 11, 28, 5, 0))  # Saturday 05:00
    assert not in_window(friday_night, datetime(2026, 11, 28, 23, 0))  # Saturday 23:00
    assert not in_window(friday_night, datetime(2026, 11, 27, 5, 0))  # Friday 05:00 (Thursday night)
