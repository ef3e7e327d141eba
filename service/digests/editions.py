"""Editions as the newsroom sees them: the list, one edition's figures, and cancel.

The list reads each edition's counters (kept by the send batches, recounted from the rows when
an edition ends); one edition's detail counts its delivery rows as they are now, so a page
polling it while the edition sends shows live figures at the cost of a few indexed queries.

Cancel stops what has not been handed to a sender: the edition becomes `cancelled`, its
`queued` rows `skipped` (error "cancelled") in the same transaction, so no send batch can claim
them afterwards, and a running batch stops at its next claim. Rows already claimed (`sending`:
the message is with the mail server) finish as they would; cancel waits for them, a few
seconds at most, so that when it returns nothing more of the edition goes out.

    EditionError
     ├── EditionNotFound    no edition with that id
     └── EditionFinished    the edition is done: there is nothing left to cancel
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from service.bounces import figures
from service.bounces.figures import Feedback
from service.digests.sending import CANCELLED, finish_if_done
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    Post,
    Role,
    Schedule,
)

__all__ = [
    "CANCEL_WAIT",
    "ERROR_SAMPLES",
    "BackendFigures",
    "EditionDetail",
    "EditionError",
    "EditionFinished",
    "EditionNotFound",
    "EditionPage",
    "EditionSummary",
    "ErrorSample",
    "cancel_edition",
    "edition_detail",
    "list_editions",
    "may_cancel",
]

CANCEL_WAIT = 10.0  # seconds cancel waits for messages already with the mail server
ADDRESS = re.compile(r"[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+")
ERROR_SAMPLES = 5  # distinct errors an edition's detail shows
_FINAL = ("sent", "failed", "skipped", "suppressed", "unknown")


class EditionError(Exception):
    """``str()`` says what went wrong, fit for an editor."""


class EditionNotFound(EditionError):
    pass


class EditionFinished(EditionError):
    pass


@dataclass(frozen=True)
class EditionSummary:
    id: int
    key: str
    kind: str  # digest | breaking | instant
    status: str  # planned | sending | done | cancelled
    title: str  # the post's title, or the schedule and period
    subject: str | None  # an editor's own subject line (breaking news)
    planned: int
    sent: int
    failed: int
    skipped: int
    suppressed: int
    unknown: int
    left: int  # queued or being sent
    progress: float  # percent of the planned deliveries in a final state
    paused_reason: str | None  # set: the backend kept failing, nothing is sent
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class EditionPage:
    items: list[EditionSummary]
    total: int  # editions matching the filters
    offset: int
    limit: int


@dataclass(frozen=True)
class BackendFigures:
    """What one mail backend did with the edition's deliveries it was handed."""

    backend: str
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    sending: int = 0
    retrying: int = 0  # a temporary failure: back in the queue for a later attempt
    feedback: Feedback = field(default_factory=Feedback)  # bounces and complaints of its `sent`


@dataclass(frozen=True)
class ErrorSample:
    error: str
    backend: str | None
    count: int


@dataclass(frozen=True)
class EditionDetail(EditionSummary):
    queued: int
    sending: int
    cancelled: int  # among `skipped`: never sent because the edition was cancelled
    post_id: int | None
    schedule_id: int | None
    period_start: datetime | None
    period_end: datetime | None
    first_sent_at: datetime | None
    last_sent_at: datetime | None
    backends: list[BackendFigures] = field(default_factory=list)
    errors: list[ErrorSample] = field(default_factory=list)  # the first distinct ones
    # Bounces and complaints reported for its sent deliveries, with their rates.
    feedback: Feedback = field(default_factory=Feedback)


def may_cancel(role: Role, kind: EditionKind | str) -> bool:
    """Editors own breaking news; the schedules' digests and instant mail are the operators'."""
    return role == Role.OPERATOR or str(kind) == EditionKind.BREAKING


def list_editions(
    session: Session,
    *,
    kind: EditionKind | None = None,
    status: EditionStatus | None = None,
    offset: int = 0,
    limit: int = 20,
) -> EditionPage:
    """Editions newest first, with the figures their counters hold."""
    query = (
        select(Edition, Post.title, Schedule.name)
        .outerjoin(Post, Post.id == Edition.post_id)
        .outerjoin(Schedule, Schedule.id == Edition.schedule_id)
    )
    count = select(func.count()).select_from(Edition)
    if kind is not None:
        query, count = query.where(Edition.kind == kind), count.where(Edition.kind == kind)
    if status is not None:
        query, count = query.where(Edition.status == status), count.where(Edition.status == status)
    rows = session.execute(query.order_by(Edition.id.desc()).offset(offset).limit(limit)).all()
    items = []
    for edition, post_title, schedule_name in rows:
        figures = {name: getattr(edition, name) for name in _FINAL}
        items.append(_summary(edition, _title(edition, post_title, schedule_name), figures))
    return EditionPage(items, session.scalar(count) or 0, offset, limit)


def edition_detail(session: Session, edition_id: int) -> EditionDetail:
    """One edition's figures counted from its delivery rows now, per backend, first errors."""
    row = session.execute(
        select(Edition, Post.title, Schedule.name)
        .outerjoin(Post, Post.id == Edition.post_id)
        .outerjoin(Schedule, Schedule.id == Edition.schedule_id)
        .where(Edition.id == edition_id)
    ).first()
    if row is None:
        raise EditionNotFound(f"no edition {edition_id}")
    edition, post_title, schedule_name = row
    mine = Delivery.edition_id == edition_id
    by_status = {
        str(s): n
        for s, n in session.execute(
            select(Delivery.status, func.count()).where(mine).group_by(Delivery.status)
        )
    }
    backends: dict[str, dict[str, int]] = {}
    for backend, status, n in session.execute(
        select(Delivery.backend, Delivery.status, func.count())
        .where(mine, Delivery.backend.is_not(None))
        .group_by(Delivery.backend, Delivery.status)
    ):
        name = "retrying" if status == DeliveryStatus.QUEUED else str(status)
        backends.setdefault(backend or "", {})[name] = n
    first_sent, last_sent = session.execute(
        select(func.min(Delivery.sent_at), func.max(Delivery.sent_at)).where(
            mine, Delivery.status == DeliveryStatus.SENT
        )
    ).one()
    # A mail server's reply often names the recipient ("550 <bob@…> unknown"): an edition's
    # figures are for editors too, and must not tell them who is subscribed.
    samples: dict[tuple[str, str | None], int] = {}
    for error, backend, n, _first in session.execute(
        select(Delivery.error, Delivery.backend, func.count(), func.min(Delivery.id))
        .where(
            mine,
            Delivery.error.is_not(None),
            Delivery.status.in_(
                [DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN, DeliveryStatus.QUEUED]
            ),
        )
        .group_by(Delivery.error, Delivery.backend)
        .order_by(func.min(Delivery.id))
        .limit(ERROR_SAMPLES * 4)
    ):
        key = (ADDRESS.sub("<address>", error or ""), backend)
        samples[key] = samples.get(key, 0) + n
    errors = [ErrorSample(e, b, n) for (e, b), n in list(samples.items())[:ERROR_SAMPLES]]
    feedback = figures.by_edition(session, [edition_id]).get(edition_id, {})
    cancelled = 0
    if edition.status == EditionStatus.CANCELLED:
        cancelled = (
            session.scalar(
                select(func.count()).where(
                    mine, Delivery.status == DeliveryStatus.SKIPPED, Delivery.error == CANCELLED
                )
            )
            or 0
        )
    summary = _summary(
        edition,
        _title(edition, post_title, schedule_name),
        {name: by_status.get(name, 0) for name in _FINAL},
        planned=sum(by_status.values()),
    )
    return EditionDetail(
        **summary.__dict__,
        queued=by_status.get("queued", 0),
        sending=by_status.get("sending", 0),
        cancelled=cancelled,
        post_id=edition.post_id,
        schedule_id=edition.schedule_id,
        period_start=edition.period_start,
        period_end=edition.period_end,
        first_sent_at=first_sent,
        last_sent_at=last_sent,
        backends=[
            BackendFigures(
                backend=name,
                feedback=feedback.get(name, Feedback()),
                **{k: v for k, v in counts.items() if k != "skipped"},
            )
            for name, counts in sorted(backends.items())
        ],
        errors=errors,
        feedback=figures.total(feedback),
    )


def cancel_edition(
    session: Session,
    edition_id: int,
    *,
    wait: float = CANCEL_WAIT,
    now: datetime | None = None,
) -> EditionDetail:
    """Cancel the edition: nothing not yet handed to a sender goes out. Cancelling a cancelled
    edition changes nothing; a finished one raises `EditionFinished`."""
    at = now or datetime.now(UTC)
    edition = session.get(Edition, edition_id)
    if edition is None:
        raise EditionNotFound(f"no edition {edition_id}")
    if edition.status != EditionStatus.CANCELLED:
        # One transaction: the status, then the queued rows. A planner adding a chunk sees
        # the status and drops its chunk; a batch's claim finds no queued row.
        won = session.scalar(
            update(Edition)
            .where(Edition.id == edition_id, Edition.status != EditionStatus.DONE)
            .values(status=EditionStatus.CANCELLED, finished_at=at)
            .returning(Edition.id)
        )
        if won is None:
            session.rollback()
            raise EditionFinished(f"edition {edition_id} is done: there is nothing to cancel")
        _skip_queued(session, edition_id, at)
        session.commit()
        _wait_for_senders(session, edition_id, wait)
        _skip_queued(session, edition_id, at)  # a temporary failure put back meanwhile
        finish_if_done(session, edition_id, at)  # the figures, recounted from the rows
        session.commit()
    session.expire_all()
    return edition_detail(session, edition_id)


def _skip_queued(session: Session, edition_id: int, at: datetime) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.QUEUED)
        .values(status=DeliveryStatus.SKIPPED, error=CANCELLED, sent_at=at)
        .execution_options(synchronize_session=False)
    )


def _wait_for_senders(session: Session, edition_id: int, wait: float) -> None:
    """Until no row of the edition is `sending` (each is recorded right after its message),
    or ``wait`` seconds; the sweep settles a row whose worker died."""
    in_flight = select(
        exists().where(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.SENDING)
    )
    deadline = time.monotonic() + wait
    while session.scalar(in_flight) and time.monotonic() < deadline:
        session.commit()  # the next look sees what the senders committed meanwhile
        time.sleep(0.05)
    session.commit()


def _title(edition: Edition, post_title: str | None, schedule_name: str | None) -> str:
    if edition.kind == EditionKind.BREAKING:
        return post_title or f"post {edition.post_id} (deleted)"
    if edition.kind == EditionKind.DIGEST:
        day = f" {edition.period_start:%Y-%m-%d}" if edition.period_start else ""
        return f"{schedule_name or 'digest'}{day}"
    return f"instant mail: {len(edition.post_ids or [])} new posts"


def _summary(
    edition: Edition, title: str, figures: dict[str, int], planned: int | None = None
) -> EditionSummary:
    planned = edition.planned if planned is None else planned
    final = sum(figures.values())
    if planned:
        progress = round(100.0 * min(final, planned) / planned, 1)
    else:
        progress = 100.0 if edition.status in (EditionStatus.DONE, EditionStatus.CANCELLED) else 0.0
    return EditionSummary(
        id=edition.id,
        key=edition.key,
        kind=str(edition.kind),
        status=str(edition.status),
        title=title,
        subject=edition.subject,
        planned=planned,
        left=max(0, planned - final),
        progress=progress,
        paused_reason=edition.paused_reason,
        created_at=edition.created_at,
        finished_at=edition.finished_at,
        **figures,
    )
