"""Duty schedules: who a contact group means at a given instant.

A group with `duty:` slots resolves, in its site's time zone, to the members of the
first slot that holds (business hours, nights, weekends, public holidays of the
site's country via the `holidays` package, or an explicit rota); when none holds,
to its plain `members`. Pure functions of (bundle, group, time) so tests and
`crisisbot who-is-on-call --at` can hammer them.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from crisisbot.lifecycle.schema import ALL_DAYS, DutySlot, DutyWindow

if TYPE_CHECKING:
    import holidays

    from crisisbot.config.bundle import Bundle
    from crisisbot.config.contacts import Group

log = logging.getLogger(__name__)


@lru_cache(maxsize=64)
def _holiday_calendar(country: str, year: int) -> holidays.HolidayBase:
    # imported on first use (~40 ms, 25 modules): the daemon imports it right after it is
    # ready when a group has a duty roster (crisisbot/warmup.py), so no alarm pays for it
    import holidays

    return holidays.country_holidays(country, years=year)


def is_public_holiday(country: str | None, day: date) -> bool:
    return bool(country) and day in _holiday_calendar(country.upper(), day.year)  # type: ignore[union-attr]


def in_window(window: DutyWindow, local: datetime) -> bool:
    day = ALL_DAYS[local.weekday()]
    now = local.time().replace(tzinfo=None)
    if window.start <= window.end:
        return day in window.days and window.start <= now <= window.end
    previous = ALL_DAYS[(local.weekday() - 1) % 7]  # spans midnight: the early part belongs to the day before
    return (day in window.days and now >= window.start) or (previous in window.days and now <= window.end)


def _site_of(bundle: "Bundle", group: "Group") -> tuple[ZoneInfo, str | None]:
    sites = bundle.config.sites
    site = sites.get(group.site) if group.site else next(iter(sites.values()), None)
    return ZoneInfo(site.timezone if site else "UTC"), (site.country if site else None)


def slot_holds(slot: DutySlot, local: datetime, holiday: bool) -> bool:
    if slot.holidays is not None and slot.holidays != holiday:
        return False
    return slot.windows is None or any(in_window(w, local) for w in slot.windows)


def slot_members(slot: DutySlot, local: datetime) -> list[str]:
    if slot.members is not None:
        return list(slot.members)
    assert slot.rota is not None
    start = slot.rota.start if slot.rota.start.tzinfo else slot.rota.start.replace(tzinfo=local.tzinfo)
    index = int((local - start).total_seconds() // slot.rota.every) % len(slot.rota.shifts)
    return list(slot.rota.shifts[index])


def on_duty(bundle: "Bundle", group_id: str, at: datetime) -> tuple[list[str], str]:
    """(direct members on duty, the name of the slot that decided) for one group."""
    group = bundle.groups[group_id]
    if not group.duty:
        return list(group.members), "members"
    zone, country = _site_of(bundle, group)
    local = at.astimezone(zone)
    holiday = is_public_holiday(country, local.date())
    for index, slot in enumerate(group.duty):
        if slot_holds(slot, local, holiday):
            return slot_members(slot, local), slot.name or f"duty[{index}]"
    return list(group.members), "members (no duty slot holds)"


def expand(bundle: "Bundle", refs: list[str], at: datetime) -> list[str]:
    """Person ids behind refs at `at`, groups and their duty schedules expanded, each once."""
    out: list[str] = []

    def walk(ref: str, seen: frozenset[str]) -> None:
        if ref in bundle.people:
            if ref not in out:
                out.append(ref)
            return
        if ref not in bundle.groups or ref in seen:
            if ref not in bundle.groups:
                log.warning("duty schedule names unknown person or group '%s'", ref)
            return
        for member in on_duty(bundle, ref, at)[0]:
            walk(member, seen | {ref})

    for ref in refs:
        walk(ref, frozenset())
    return out
