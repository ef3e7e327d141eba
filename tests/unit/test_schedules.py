"""When a reader is due: their own zone and hour, across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from service.digests.schedules import (
    ScheduleError,
    due_occurrence,
    last_occurrence,
    next_occurrence,
    parse_time,
    parse_weekday,
    zone,
)
from service.models import Cadence, Schedule

DAILY = Schedule(name="morning", cadence=Cadence.DAILY, weekday=None, send_time=time(7, 0))
WEEKLY_SUN = Schedule(name="week", cadence=Cadence.WEEKLY, weekday=6, send_time=time(7, 0))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tz", "before", "at"),
    [
        # Europe: clocks go forward on Sunday 29 March 2026 (07:00 local moves from 05:00 to
        # 04:00 UTC in Kyiv, from 06:00 to 05:00 UTC in Berlin) and back on 25 October.
        ("Europe/Kyiv", utc(2026, 3, 28, 5, 0), utc(2026, 3, 29, 4, 0)),
        ("Europe/Berlin", utc(2026, 3, 28, 6, 0), utc(2026, 3, 29, 5, 0)),
        ("Europe/Kyiv", utc(2026, 10, 24, 4, 0), utc(2026, 10, 25, 5, 0)),
        # The US changes on 8 March 2026: New York's 07:00 goes from 12:00 to 11:00 UTC.
        ("America/New_York", utc(2026, 3, 7, 12, 0), utc(2026, 3, 8, 11, 0)),
        # Sydney's summer time ends on 5 April 2026: 07:00 goes from 20:00 to 21:00 UTC.
        ("Australia/Sydney", utc(2026, 4, 3, 20, 0), utc(2026, 4, 4, 21, 0)),
        # Tokyo has no DST: 22:00 UTC every day.
        ("Asia/Tokyo", utc(2026, 3, 27, 22, 0), utc(2026, 3, 28, 22, 0)),
    ],
)
def test_seven_local_stays_seven_local_across_dst(tz: str, before: datetime, at: datetime) -> None:
    for moment in (before, at):
        occurrence = due_occurrence(DAILY, tz, None, moment, force=False)
        assert occurrence is not None
        assert occurrence.at == moment
        assert moment.astimezone(zone(tz)).time() == time(7, 0)
    # A minute before the day-of-change occurrence, that day's digest is not yet due.
    just_before = at - timedelta(minutes=1)
    last = last_occurrence(Cadence.DAILY, None, time(7, 0), zone(tz), just_before)
    assert last.period < at.astimezone(zone(tz)).date()


def test_a_send_time_inside_the_spring_gap_goes_out_late_not_never() -> None:
    # 02:30 does not exist in Berlin on 29 March 2026: it goes out at 03:30 summer time.
    tz = zone("Europe/Berlin")
    occ = next_occurrence(Cadence.DAILY, None, time(2, 30), tz, utc(2026, 3, 28, 23, 0))
    assert occ.period == date(2026, 3, 29)
    assert occ.at == utc(2026, 3, 29, 1, 30)
    assert occ.at.astimezone(tz).time() == time(3, 30)


def test_a_readers_hour_overrides_and_catch_up_has_a_limit() -> None:
    # 09:00 in Kyiv (winter, UTC+2) is 07:00 UTC.
    assert due_occurrence(DAILY, "Europe/Kyiv", 9, utc(2026, 1, 10, 6, 59), force=False) is None
    occ = due_occurrence(DAILY, "Europe/Kyiv", 9, utc(2026, 1, 10, 7, 0), force=False)
    assert occ is not None
    assert occ.period == date(2026, 1, 10)
    # Down until 15:00 local: the 09:00 digest still goes (within six hours)...
    assert due_occurrence(DAILY, "Europe/Kyiv", 9, utc(2026, 1, 10, 13, 0), force=False)
    # ...but not at 16:00; `--now` sends the coming one instead.
    assert due_occurrence(DAILY, "Europe/Kyiv", 9, utc(2026, 1, 10, 14, 0), force=False) is None
    forced = due_occurrence(DAILY, "Europe/Kyiv", 9, utc(2026, 1, 10, 14, 0), force=True)
    assert forced is not None
    assert forced.period == date(2026, 1, 11)


def test_weekly_goes_out_on_its_weekday_in_the_readers_zone() -> None:
    # Sunday 07:00 in Tokyo is Saturday 22:00 UTC.
    occ = due_occurrence(WEEKLY_SUN, "Asia/Tokyo", None, utc(2026, 3, 28, 22, 0), force=False)
    assert occ is not None
    assert occ.period == date(2026, 3, 29)
    assert occ.period.weekday() == 6
    # The same moment is Saturday in London: not due.
    london = due_occurrence(WEEKLY_SUN, "Europe/London", None, utc(2026, 3, 28, 22), force=False)
    assert london is None


def test_bad_schedule_input_says_what_to_change() -> None:
    with pytest.raises(ScheduleError, match="HH:MM"):
        parse_time("7am")
    with pytest.raises(ScheduleError, match="weekday"):
        parse_weekday("someday")
    assert parse_weekday("Sunday") == 6
    assert zone("Not/AZone") == zone("UTC")
