"""The tick's sweep: what a killed worker left behind.

* A delivery still `sending` past its lease was claimed by a worker that died before recording
  the result: the message may or may not have gone out. It becomes `unknown`, is counted, and
  is never resent automatically (resending could mail the reader twice).
* An edition with `queued` deliveries and no send batch heartbeat for a few minutes lost its
  task (with Redis a task held by a SIGKILLed worker comes back only after the visibility
  timeout, an hour by default): its queued rows are enqueued again, in batches. Running a
  batch twice is safe (rows are claimed), so the worst case is a wasted task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from service.digests.planning import SEND_BATCH, Dispatch
from service.digests.sending import finish_if_done
from service.models import Delivery, DeliveryStatus, Edition, EditionStatus

__all__ = ["LEASE", "STALL", "SweepReport", "requeue", "sweep"]

LEASE = timedelta(minutes=10)  # a claimed row is sent and recorded within seconds
STALL = timedelta(minutes=3)  # no batch heartbeat for this long: the edition's task is lost


@dataclass
class SweepReport:
    unknown: int = 0
    resumed_editions: int = 0
    requeued: int = 0


def sweep(
    session: Session,
    dispatch: Dispatch,
    now: datetime,
    *,
    lease: timedelta = LEASE,
    stall: timedelta = STALL,
) -> SweepReport:
    report = SweepReport()
    expired = list(
        session.execute(
            update(Delivery)
            .where(Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_at < now - lease)
            .values(status=DeliveryStatus.UNKNOWN, error="worker lost while sending")
            .returning(Delivery.edition_id)
            .execution_options(synchronize_session=False)
        ).scalars()
    )
    report.unknown = len(expired)
    for edition_id, n in Counter(expired).items():
        session.execute(
            update(Edition).where(Edition.id == edition_id).values(unknown=Edition.unknown + n)
        )
        finish_if_done(session, edition_id, now)
    session.commit()

    queued = exists().where(
        Delivery.edition_id == Edition.id, Delivery.status == DeliveryStatus.QUEUED
    )
    stalled = list(
        session.scalars(
            select(Edition.id).where(
                Edition.status.in_([EditionStatus.PLANNED, EditionStatus.SENDING]),
                Edition.paused_reason.is_(None),
                or_(Edition.heartbeat_at.is_(None), Edition.heartbeat_at < now - stall),
                queued,
            )
        )
    )
    for edition_id in stalled:
        report.resumed_editions += 1
        report.requeued += requeue(session, edition_id, dispatch, now)
    return report


def requeue(session: Session, edition_id: int, dispatch: Dispatch, now: datetime) -> int:
    """Enqueue the edition's queued rows again (keyset over ids); returns how many."""
    session.execute(update(Edition).where(Edition.id == edition_id).values(heartbeat_at=now))
    session.commit()
    total, last = 0, 0
    while True:
        ids: Sequence[int] = list(
            session.scalars(
                select(Delivery.id)
                .where(
                    Delivery.edition_id == edition_id,
                    Delivery.status == DeliveryStatus.QUEUED,
                    Delivery.id > last,
                )
                .order_by(Delivery.id)
                .limit(SEND_BATCH)
            )
        )
        if not ids:
            return total
        dispatch(edition_id, ids)
        total += len(ids)
        last = ids[-1]
