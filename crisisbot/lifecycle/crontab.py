"""Standard crontab expressions on top of APScheduler's cron trigger.

APScheduler 3's `CronTrigger` (and its `from_crontab`) differs from cron in two ways
that moved drills to the wrong day: it counts day-of-week 0 as *Monday* (cron: 0 and
7 are Sunday, so `0 10 * * 2` ran on Wednesdays), and it ANDs day-of-month with
day-of-week where cron (Vixie/Debian) runs on a day matching *either* when both are
restricted. This module translates: day-of-week numbers become APScheduler's day
names, `2#1` ("first Tuesday") and `5L` ("last Friday") become its `1st tue` /
`last fri` day expressions, and the OR rule becomes an `OrTrigger` of one trigger per
alternative. Minute, hour and month already mean the same in both.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron numbering: 0 (and 7) = Sunday
ORDINALS = {"1": "1st", "2": "2nd", "3": "3rd", "4": "4th", "5": "5th"}


def _day_number(token: str) -> int:
    """A cron day-of-week (0-7 or a name) as 0-6 with 0 = Sunday."""
    name = token.strip().lower()[:3]
    if name in DAY_NAMES:
        return DAY_NAMES.index(name)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    raise ValueError(f"'{token}' is not a day of the week (0-7, 0 and 7 being Sunday, or sun..sat)")


def _weekdays(item: str) -> set[int]:
    """One comma item of the day-of-week field (`*`, `2`, `1-5`, `mon-fri`, `*/2`, `1-5/2`)."""
    span, _, step_text = item.partition("/")
    step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
    if step_text and step is None:
        raise ValueError(f"'{item}': the step after '/' must be a positive number")
    if span == "*":
        first, last = 0, 6
    elif "-" in span:
        low, high = span.split("-", 1)
        first, last = _day_number(low), _day_number(high)
        if high.strip() == "7":
            last = 7  # `1-7` runs Monday to Sunday
        if last < first:
            raise ValueError(f"'{item}': a range must go upwards")
    else:
        first = last = _day_number(span)
    return {day % 7 for day in range(first, last + 1, step or 1)}


def _dow_alternatives(field: str) -> tuple[set[int], list[str]]:
    """Plain weekdays, and APScheduler `day` expressions for `#n` / `L` items."""
    plain: set[int] = set()
    special: list[str] = []
    for item in field.split(","):
        if "#" in item:
            day, _, nth = item.partition("#")
            if nth not in ORDINALS:
                raise ValueError(f"'{item}': after '#' comes the week of the month, 1 to 5")
            special.append(f"{ORDINALS[nth]} {DAY_NAMES[_day_number(day)]}")
        elif item.upper().endswith("L") and item[:-1]:
            special.append(f"last {DAY_NAMES[_day_number(item[:-1])]}")
        else:
            plain |= _weekdays(item)
    return plain, special


def crontab_trigger(expression: str, zone: str) -> BaseTrigger:
    """The APScheduler trigger that fires when cron would, in the time zone `zone`."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"'{expression}' has {len(fields)} fields; a crontab expression has 5: "
                         "minute hour day-of-month month day-of-week")
    minute, hour, dom, month, dow = fields
    common = {"minute": minute, "hour": hour, "month": month, "timezone": ZoneInfo(zone)}
    dom_restricted, dow_restricted = not dom.startswith("*"), not dow.startswith("*")
    days: list[dict[str, str]] = []
    if dom_restricted or not dow_restricted:
        days.append({"day": "last" if dom.upper() == "L" else dom})
    if dow_restricted:
        plain, special = _dow_alternatives(dow)
        if plain:
            days.append({"day_of_week": ",".join(DAY_NAMES[d] for d in sorted(plain))})
        days.extend({"day": expr} for expr in special)
    try:
        triggers = [CronTrigger(**common, **day) for day in days]
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return triggers[0] if len(triggers) == 1 else OrTrigger(triggers)


def next_fire(expression: str, zone: str, after: datetime) -> datetime:
    """The first time strictly after `after`, in `zone`'s local time."""
    # APScheduler returns the first whole second >= `now`; a microsecond makes it "after".
    due = crontab_trigger(expression, zone).get_next_fire_time(None, after + timedelta(microseconds=1))
    if due is None:
        raise ValueError(f"'{expression}' never comes")
    return due
