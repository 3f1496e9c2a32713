"""Crontab expressions as cron reads them, evaluated by APScheduler (crisisbot.lifecycle.crontab)."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from crisisbot.lifecycle.crontab import next_fire

PARIS = ZoneInfo("Europe/Paris")
SUNDAY = datetime(2026, 11, 29, 12, 0, tzinfo=PARIS)


@pytest.mark.parametrize("expression, expected", [
    ("0 10 * * 5L", "2026-12-25 10:00"),        # last Friday of the month
    ("0 9 * * mon-fri", "2026-11-30 09:00"),    # names, as in crontab(5)
    ("0 10 * * 1-7", "2026-11-30 10:00"),       # 7 closes a range on Sunday
    ("0 10 L * *", "2026-11-30 10:00"),         # last day of the month
    ("0 10 1 * 3", "2026-12-01 10:00"),         # the 1st OR Wednesdays: the 1st (a Tuesday) comes first
    ("0 12 * * 0", "2026-12-06 12:00"),         # strictly after: Sunday 12:00 itself is not "next"
])
def test_next_fire_follows_cron(expression, expected):
    assert next_fire(expression, "Europe/Paris", SUNDAY).strftime("%Y-%m-%d %H:%M") == expected


@pytest.mark.parametrize("expression, message", [
    ("0 10 * *", "has 4 fields"),
    ("0 10 * * 9", "not a day of the week"),
    ("0 10 * * 2#6", "week of the month"),
    ("61 10 * * *", "higher than the maximum"),
    ("0 10 30 2 *", "never comes"),
])
def test_bad_expressions_say_what_is_wrong(expression, message):
    with pytest.raises(ValueError, match=message):
        next_fire(expression, "Europe/Paris", SUNDAY)
