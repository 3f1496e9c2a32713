"""Which playbook runs for an alarm: a pure function of (alarm, playbooks, sites, time).

Rule (documented in docs/playbooks.md): every enabled playbook whose `match`
holds is a candidate; the one with the highest `priority` runs; among equals,
the first in file-name order. Exactly one playbook runs per alarm.
"""

from __future__ import annotations

from datetime import datetime
from typing import Mapping, Sequence
from zoneinfo import ZoneInfo

from crisisbot.config.daemon import Site
from crisisbot.config.playbook import DAYS, Match, Playbook, Window
from crisisbot.models import Alarm


def in_window(window: Window, local: datetime) -> bool:
    day = DAYS[local.weekday()]
    now = local.time().replace(tzinfo=None)
    if window.start <= window.end:
        return day in window.days and window.start <= now <= window.end
    # spans midnight: the late part belongs to the listed day, the early part to the next
    previous = DAYS[(local.weekday() - 1) % 7]
    return (day in window.days and now >= window.start) or (previous in window.days and now <= window.end)


def matches(match: Match, alarm: Alarm, site: Site | None, now: datetime) -> bool:
    if match.sources is not None and alarm.source not in match.sources:
        return False
    if match.sites is not None and alarm.site not in match.sites:
        return False
    if match.zones is not None and alarm.zone not in match.zones:
        return False
    if match.inputs is not None and alarm.input not in match.inputs:
        return False
    if match.kinds is not None and alarm.kind not in match.kinds:
        return False
    if match.min_severity is not None and alarm.severity.rank < match.min_severity.rank:
        return False
    if match.drill is not None and alarm.drill != match.drill:
        return False
    if match.windows:
        local = now.astimezone(ZoneInfo(site.timezone if site else "UTC"))
        if not any(in_window(w, local) for w in match.windows):
            return False
    return True


def candidates(alarm: Alarm, playbooks: Sequence[Playbook], sites: Mapping[str, Site], now: datetime) -> list[Playbook]:
    """All matching playbooks, best first (the first one is the one that runs)."""
    site = sites.get(alarm.site)
    found = [p for p in playbooks if p.enabled and matches(p.match, alarm, site, now)]
    order = {id(p): i for i, p in enumerate(playbooks)}
    return sorted(found, key=lambda p: (-p.priority, order[id(p)]))


def select(alarm: Alarm, playbooks: Sequence[Playbook], sites: Mapping[str, Site], now: datetime) -> Playbook | None:
    found = candidates(alarm, playbooks, sites, now)
    return found[0] if found else None

