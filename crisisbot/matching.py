"""Which playbook runs for an alarm: a pure function of (alarm, playbooks, sites, time).

Rule (documented in docs/playbooks.md): every enabled playbook whose `match`
holds is a candidate; the one with the highest `priority` runs; among equals,
the first in file-name order. Exactly one playbook runs per alarm.
"""

from __future__ import annotations

from datetime import datetime
from typing import Mapping, Sequence
from zoneinfo import ZoneInfo

from crisisbot.config.settings import Site
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
    listed = match.criteria()  # sets: a playbook may list thousands of sites
    if listed and (
        ("sites" in listed and alarm.site not in listed["sites"])
        or ("kinds" in listed and alarm.kind not in listed["kinds"])
        or ("sources" in listed and alarm.source not in listed["sources"])
        or ("zones" in listed and alarm.zone not in listed["zones"])
        or ("inputs" in listed and alarm.input not in listed["inputs"])
    ):
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


INDEX_FROM = 64  # below this many playbooks a plain scan is as fast as the index
_indexes: dict[int, tuple[Sequence[Playbook], int, dict[str, list[int]], list[int]]] = {}


def _for_site(playbooks: Sequence[Playbook], site_id: str) -> list[int]:
    """Positions of the playbooks that may match an alarm of this site, in file order:
    those listing it and those naming no site. Per-alarm time stays flat however many
    sites and playbooks an organisation has (benchmarks/bench_scale.py)."""
    cached = _indexes.get(id(playbooks))
    if cached is None or cached[0] is not playbooks or cached[1] != len(playbooks):
        by_site: dict[str, list[int]] = {}
        anywhere: list[int] = []
        for index, playbook in enumerate(playbooks):
            if playbook.match.sites is None:
                anywhere.append(index)
            else:
                for listed in dict.fromkeys(playbook.match.sites):
                    by_site.setdefault(listed, []).append(index)
        if len(_indexes) >= 4:  # one per loaded configuration; old ones go
            _indexes.clear()
        cached = _indexes[id(playbooks)] = (playbooks, len(playbooks), by_site, anywhere)
    return sorted(cached[2].get(site_id, []) + cached[3])


def candidates(alarm: Alarm, playbooks: Sequence[Playbook], sites: Mapping[str, Site], now: datetime) -> list[Playbook]:
    """All matching playbooks, best first (the first one is the one that runs)."""
    site = sites.get(alarm.site)
    positions = _for_site(playbooks, alarm.site) if len(playbooks) >= INDEX_FROM else range(len(playbooks))
    found = [(i, playbooks[i]) for i in positions
             if playbooks[i].enabled and matches(playbooks[i].match, alarm, site, now)]
    return [p for _, p in sorted(found, key=lambda item: (-item[1].priority, item[0]))]


def select(alarm: Alarm, playbooks: Sequence[Playbook], sites: Mapping[str, Site], now: datetime) -> Playbook | None:
    found = candidates(alarm, playbooks, sites, now)
    return found[0] if found else None

