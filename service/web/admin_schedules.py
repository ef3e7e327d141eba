"""Operators' JSON API over digest schedules, validated as `newsletter schedules add|set` are."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.digests import schedules
from service.digests.schedules import ScheduleError, ScheduleInfo
from service.web.admin_errors import ADMIN_ERRORS, CONFLICT, INVALID, NOT_FOUND, answered
from service.web.deps import OperatorDep, RowId, SessionDep

router = APIRouter(prefix="/api/admin/schedules", tags=["admin: schedules"], responses=ADMIN_ERRORS)

Short = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Name = Annotated[str, Field(min_length=1, max_length=100, examples=["morning"])]
Cadence = Annotated[str, Field(description="daily or weekly", examples=["daily"])]
Weekday = Annotated[str, Field(description="Weekly only: mon … sun", examples=["mon"])]
SendTime = Annotated[
    str, Field(description="Local send time HH:MM (a reader's own hour wins)", examples=["07:00"])
]


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    cadence: Cadence = "daily"
    weekday: Weekday | None = None
    send_time: SendTime = "07:00"
    template: Short = "digest"
    enabled: bool = True


class SchedulePatch(BaseModel):
    """What to change; a field left out stays as it is (a schedule made daily drops its
    weekday). The next tick plans with the new values."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    cadence: Cadence | None = None
    weekday: Weekday | None = None
    send_time: SendTime | None = None
    template: Short | None = None
    enabled: bool | None = None


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("")
def list_schedules(session: SessionDep, _: OperatorDep) -> list[ScheduleInfo]:
    """Every schedule with its next send (for a reader in UTC on the schedule's time)."""
    return schedules.describe_schedules(session, _now())


@router.post("", status_code=201, responses=CONFLICT | INVALID)
def add_schedule(body: ScheduleIn, session: SessionDep, _: OperatorDep) -> ScheduleInfo:
    """Add a digest programme; each reader gets it at their own hour in their own zone."""
    with answered(ScheduleError):
        schedule = schedules.add_schedule(
            session,
            body.name,
            schedules.parse_cadence(body.cadence),
            at=schedules.parse_time(body.send_time),
            weekday=schedules.parse_weekday(body.weekday),
            template=body.template,
            enabled=body.enabled,
        )
    session.commit()
    return ScheduleInfo.of(schedule, _now())


@router.get("/{schedule_id}", responses=NOT_FOUND)
def get_schedule(schedule_id: RowId, session: SessionDep, _: OperatorDep) -> ScheduleInfo:
    """One schedule with its next send."""
    with answered(ScheduleError):
        return schedules.get_schedule(session, schedule_id, _now())


@router.patch("/{schedule_id}", responses=NOT_FOUND | CONFLICT | INVALID)
def update_schedule(
    schedule_id: RowId, body: SchedulePatch, session: SessionDep, _: OperatorDep
) -> ScheduleInfo:
    """Change a schedule at runtime; no restart needed."""
    with answered(ScheduleError):
        schedule = schedules.update_schedule(
            session,
            schedules.find_schedule(session, schedule_id, lock=True),
            name=body.name,
            cadence=schedules.parse_cadence(body.cadence) if body.cadence else None,
            at=schedules.parse_time(body.send_time) if body.send_time else None,
            weekday=schedules.parse_weekday(body.weekday),
            template=body.template,
            enabled=body.enabled,
        )
    session.commit()
    return ScheduleInfo.of(schedule, _now())


@router.delete("/{schedule_id}", status_code=204, responses=NOT_FOUND | CONFLICT)
def delete_schedule(schedule_id: RowId, session: SessionDep, _: OperatorDep) -> Response:
    """Delete a schedule (its sent editions stay); 409 while one of its editions still has
    mail to send: disable it instead."""
    with answered(ScheduleError):
        schedules.delete_schedule(session, schedule_id)
    session.commit()
    return Response(status_code=204)
