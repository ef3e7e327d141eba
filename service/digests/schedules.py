"""Digest schedules and when each reader is due.

A schedule says "daily at 07:00" (or weekly on a weekday); a reader's own hour overrides the
time, and the reader's time zone places it: a reader in Asia/Tokyo gets the daily at 07:00
Tokyo time, one in Europe/Kyiv at 07:00 Kyiv time, whatever the daylight-saving state. The
period a reader is served in is the local date of that occurrence, so one edition per
(schedule, local date) covers every zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import Conflict, NotFound
from service.models import Cadence, Delivery, DeliveryStatus, Edition, EditionStatus, Schedule

__all__ = [
    "CATCH_UP",
    "PERIOD",
    "WEEKDAYS",
    "Occurrence",
    "ScheduleConflict",
    "ScheduleError",
    "ScheduleInfo",
    "ScheduleNotFound",
    "add_schedule",
    "delete_schedule",
    "describe_schedules",
    "due_occurrence",
    "find_schedule",
    "get_schedule",
    "last_occurrence",
    "list_schedules",
    "next_occurrence",
    "next_send",
    "parse_cadence",
    "parse_time",
    "parse_weekday",
    "update_schedule",
    "zone",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PERIOD = {Cadence.DAILY: timedelta(days=1), Cadence.WEEKLY: timedelta(days=7)}
# How late a missed send still goes out (the service was down at 07:00 and back at 09:00);
# later than this the period is left out rather than a digest arriving at a strange hour.
CATCH_UP = {Cadence.DAILY: timedelta(hours=6), Cadence.WEEKLY: timedelta(hours=24)}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


class ScheduleError(ValueError):
    """A schedule that cannot be: the message says what to change."""


class ScheduleNotFound(ScheduleError, NotFound):
    """No schedule has this id."""


class ScheduleConflict(ScheduleError, Conflict):
    """The name is taken, or the schedule is in use."""


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as operators see and type it (times "HH:MM", weekdays "mon")."""

    id: int
    name: str
    cadence: str  # daily | weekly
    weekday: str | None  # mon … sun, weekly only
    send_time: str  # HH:MM, local to each reader (their own hour wins)
    template: str
    enabled: bool
    # The next send for a reader in UTC on the schedule's time; None while disabled.
    next_send_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, schedule: Schedule, now: datetime) -> ScheduleInfo:
        return cls(
            id=schedule.id,
            name=schedule.name,
            cadence=str(schedule.cadence),
            weekday=WEEKDAYS[schedule.weekday] if schedule.weekday is not None else None,
            send_time=f"{schedule.send_time:%H:%M}",
            template=schedule.template,
            enabled=schedule.enabled,
            next_send_at=next_send(schedule, now) if schedule.enabled else None,
            created_at=schedule.created_at,
        )


@dataclass(frozen=True)
class Occurrence:
    period: date  # the reader's local date of the send
    at: datetime  # the same moment in UTC


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")  # stored zones are validated; an unknown one falls back safely


def _occurrence_on(day: date, at: time, tz: ZoneInfo) -> datetime:
    # A wall time inside a spring-forward gap (02:30 that never happens) is read with the
    # offset from before the change, so it goes out at 03:30 local: late, never skipped.
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def _days(cadence: Cadence, weekday: int | None, start: date, step: int) -> list[date]:
    days = [start + timedelta(days=step * i) for i in range(9)]
    if cadence is Cadence.WEEKLY:
        return [d for d in days if d.weekday() == (weekday or 0)]
    return days


def last_occurrence(
    cadence: Cadence, weekday: int | None, at: time, tz: ZoneInfo, now: datetime
) -> Occurrence:
    """The latest send moment at or before ``now``."""
    today = now.astimezone(tz).date()
    for day in _days(cadence, weekday, today + timedelta(days=1), -1):
        moment = _occurrence_on(day, at, tz)
        if moment <= now:
            return Occurrence(day, moment)
    raise AssertionError("a weekly schedule occurs within 8 days")


def next_occurrence(
    cadence: Cadence, weekday: int | None, at: time, tz: ZoneInfo, now: datetime
) -> Occurrence:
    """The first send moment after ``now``."""
    today = now.astimezone(tz).date()
    for day in _days(cadence, weekday, today - timedelta(days=1), 1):
        moment = _occurrence_on(day, at, tz)
        if moment > now:
            return Occurrence(day, moment)
    raise AssertionError("a weekly schedule occurs within 8 days")


def due_occurrence(
    schedule: Schedule, timezone: str, send_hour: int | None, now: datetime, *, force: bool
) -> Occurrence | None:
    """The occurrence a reader with this zone and hour is due for now, if any.

    ``force`` (``digest run --now``) treats the reader as due now: the occurrence just past if
    it is still within its catch-up window, else the coming one.
    """
    cadence = Cadence(schedule.cadence)
    at = time(send_hour) if send_hour is not None else schedule.send_time
    tz = zone(timezone)
    last = last_occurrence(cadence, schedule.weekday, at, tz, now)
    if now - last.at <= CATCH_UP[cadence]:
        return last
    return next_occurrence(cadence, schedule.weekday, at, tz, now) if force else None


def next_send(schedule: Schedule, now: datetime) -> datetime:
    """When the schedule next sends to a reader in UTC who kept its time (UTC)."""
    cadence = Cadence(schedule.cadence)
    return next_occurrence(cadence, schedule.weekday, schedule.send_time, zone("UTC"), now).at


def parse_cadence(value: str) -> Cadence:
    if value not in (Cadence.DAILY, Cadence.WEEKLY):
        raise ScheduleError(f"cadence must be daily or weekly, got {value!r}")
    return Cadence(value)


def parse_time(value: str) -> time:
    try:
        hour, minute = (int(p) for p in value.split(":"))
        return time(hour, minute)
    except ValueError as exc:
        raise ScheduleError(f"time must be HH:MM (24-hour), got {value!r}") from exc


def parse_weekday(value: str | None) -> int | None:
    if value is None:
        return None
    key = value.strip().lower()[:3]
    if key not in WEEKDAYS:
        raise ScheduleError(f"weekday must be one of {', '.join(WEEKDAYS)}, got {value!r}")
    return WEEKDAYS.index(key)


def _validate(name: str, cadence: Cadence, weekday: int | None, template: str) -> None:
    if not _NAME.match(name):
        raise ScheduleError("name must be lowercase letters, digits, - or _ (up to 100)")
    if cadence not in PERIOD:
        raise ScheduleError("a schedule is daily or weekly; instant mail needs no schedule")
    if cadence is Cadence.WEEKLY and weekday is None:
        raise ScheduleError("a weekly schedule needs a weekday")
    if cadence is Cadence.DAILY and weekday is not None:
        raise ScheduleError("a daily schedule takes no weekday")
    from service.mail.render import template_names

    if template not in template_names():
        raise ScheduleError(f"no email template {template!r}")


def add_schedule(
    session: Session,
    name: str,
    cadence: Cadence,
    *,
    at: time = time(7, 0),
    weekday: int | None = None,
    template: str = "digest",
    enabled: bool = True,
) -> Schedule:
    _validate(name, cadence, weekday, template)
    if session.scalar(select(Schedule.id).where(Schedule.name == name)) is not None:
        raise ScheduleConflict(f"a schedule named {name!r} exists")
    schedule = Schedule(
        name=name,
        cadence=cadence,
        weekday=weekday,
        send_time=at,
        template=template,
        enabled=enabled,
    )
    session.add(schedule)
    session.flush()
    return schedule


def update_schedule(
    session: Session,
    schedule: Schedule,
    *,
    name: str | None = None,
    cadence: Cadence | None = None,
    at: time | None = None,
    weekday: int | None = None,
    template: str | None = None,
    enabled: bool | None = None,
) -> Schedule:
    """Change a schedule at runtime: the next tick plans with the new values.

    None leaves a value as it is; a schedule made daily drops its weekday.
    """
    new_name = name or schedule.name
    new_cadence = cadence or Cadence(schedule.cadence)
    if weekday is not None:
        new_weekday: int | None = weekday
    else:
        new_weekday = None if new_cadence is Cadence.DAILY else schedule.weekday
    new_template = template or schedule.template
    _validate(new_name, new_cadence, new_weekday, new_template)
    if new_name != schedule.name and session.scalar(
        select(Schedule.id).where(Schedule.name == new_name)
    ):
        raise ScheduleConflict(f"a schedule named {new_name!r} exists")
    schedule.name, schedule.cadence = new_name, new_cadence
    schedule.weekday, schedule.template = new_weekday, new_template
    if at is not None:
        schedule.send_time = at
    if enabled is not None:
        schedule.enabled = enabled
    session.flush()
    return schedule


def list_schedules(session: Session) -> list[Schedule]:
    return list(session.scalars(select(Schedule).order_by(Schedule.name)))


def find_schedule(session: Session, schedule_id: int, *, lock: bool = False) -> Schedule:
    """The schedule with this id, or ScheduleNotFound."""
    schedule = session.get(Schedule, schedule_id, with_for_update=lock)
    if schedule is None:
        raise ScheduleNotFound(f"no schedule with id {schedule_id}")
    return schedule


def get_schedule(session: Session, schedule_id: int, now: datetime) -> ScheduleInfo:
    return ScheduleInfo.of(find_schedule(session, schedule_id), now)


def describe_schedules(session: Session, now: datetime) -> list[ScheduleInfo]:
    """Every schedule by name, with its next send."""
    return [ScheduleInfo.of(s, now) for s in list_schedules(session)]


def delete_schedule(session: Session, schedule_id: int) -> None:
    """Delete a schedule with no edition in progress (its sent editions stay); caller commits.

    An edition with mail still to send needs its schedule's template and periods: disable
    the schedule instead, and delete it once the edition is done.
    """
    schedule = find_schedule(session, schedule_id, lock=True)
    busy = session.scalar(
        select(Edition.id)
        .join(Delivery, Delivery.edition_id == Edition.id)
        .where(
            Edition.schedule_id == schedule.id,
            Edition.status != EditionStatus.CANCELLED,
            Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]),
        )
        .limit(1)
    )
    if busy is not None:
        raise ScheduleConflict(
            f"edition {busy} of this schedule is still sending; disable the schedule instead "
            "and delete it when the edition is done"
        )
    session.delete(schedule)
    session.flush()
