"""Planning: which readers are due, one edition per (schedule, period), delivery rows in chunks.

Planning streams. Readers are walked by id in keyset chunks (listmonk's cursor pattern: `id >
last ORDER BY id LIMIT n`, never OFFSET), each chunk's delivery rows are inserted and
committed, and its send tasks are enqueued after that commit; memory holds one chunk whatever
the number of readers. Each chunk costs the same three statements (select ids, insert rows,
count them on the edition), so the planner's query count is asserted in tests.

Running it twice in a period plans nothing new: a reader with a delivery row in the edition is
not selected again, and the row's unique (edition, subscriber) settles any race.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Protocol

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from service.digests.schedules import PERIOD, due_occurrence
from service.digests.sending import CANCELLED, finish_if_done
from service.models import (
    Cadence,
    DeliveredPost,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    Post,
    Schedule,
    Source,
    SourceItem,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    post_tags,
)

__all__ = [
    "PLAN_CHUNK",
    "SEND_BATCH",
    "Announcer",
    "Planned",
    "breaking_audience",
    "breaking_key",
    "edition_for",
    "plan_breaking",
    "plan_digests",
    "plan_instant",
    "plan_readers",
]

PLAN_CHUNK = 2000  # readers per planning transaction
SEND_BATCH = 500  # deliveries per send task: the queue's overhead stays far below the send rate

# Called after each chunk commits with (edition id, delivery ids); enqueues the send tasks.
Dispatch = Callable[[int, Sequence[int]], None]


class Announcer(Protocol):
    """Takes new posts for instant mail once the transaction that stored them commits."""

    def new_posts(self, session: Session, post_ids: Sequence[int]) -> None: ...


@dataclass
class Planned:
    edition_id: int
    key: str
    deliveries: int = 0
    batches: int = 0


@dataclass
class _Due:
    """Readers of one period: zone → the hours due (None: readers on the schedule's time)."""

    hours: dict[str, set[int | None]] = field(default_factory=lambda: defaultdict(set))


def plan_digests(
    session: Session,
    dispatch: Dispatch,
    now: datetime,
    *,
    schedule_name: str | None = None,
    force: bool = False,
    chunk: int = PLAN_CHUNK,
) -> list[Planned]:
    """Plan every enabled schedule (or the one named) for the readers due at ``now``."""
    query = select(Schedule).order_by(Schedule.id)
    if schedule_name is not None:
        query = query.where(Schedule.name == schedule_name)
    else:
        query = query.where(Schedule.enabled.is_(True))
    planned: list[Planned] = []
    for schedule in session.scalars(query).all():
        for period, due in _due_periods(session, schedule, now, force).items():
            edition = edition_for(
                session,
                f"digest:{schedule.id}:{period.isoformat()}",
                EditionKind.DIGEST,
                schedule_id=schedule.id,
                period_start=datetime.combine(period, time(), tzinfo=UTC),
                period_end=datetime.combine(period, time(), tzinfo=UTC)
                + PERIOD[Cadence(schedule.cadence)],
            )
            who = _zone_filter(due)
            planned.append(
                plan_readers(
                    session,
                    edition,
                    _followers(Cadence(schedule.cadence), who),
                    dispatch,
                    chunk,
                    now,
                )
            )
    return planned


def _due_periods(
    session: Session, schedule: Schedule, now: datetime, force: bool
) -> dict[date, _Due]:
    """period → the (zone, hour) pairs due in it. Only distinct pairs are read (a few hundred
    at most), so due-ness is computed in Python with zoneinfo, DST included."""
    pairs = session.execute(
        select(Subscriber.timezone, Subscriber.send_hour)
        .where(_mailable(), _follows(Cadence(schedule.cadence)))
        .distinct()
    ).all()
    periods: dict[date, _Due] = defaultdict(_Due)
    for tz, hour in pairs:
        occurrence = due_occurrence(schedule, tz, hour, now, force=force)
        if occurrence is not None:
            periods[occurrence.period].hours[tz].add(hour)
    return periods


def _mailable() -> ColumnElement[bool]:
    return and_(Subscriber.status == SubscriberStatus.ACTIVE, Subscriber.paused.is_(False))


def _follows(cadence: Cadence, tag_ids: Sequence[int] | None = None) -> ColumnElement[bool]:
    condition = and_(Subscription.subscriber_id == Subscriber.id, Subscription.cadence == cadence)
    if tag_ids is not None:
        condition = and_(condition, Subscription.tag_id.in_(tag_ids))
    return exists().where(condition)


def _zone_filter(due: _Due) -> ColumnElement[bool]:
    clauses = []
    for tz, hours in due.hours.items():
        fixed = [h for h in hours if h is not None]
        by_hour: list[ColumnElement[bool]] = []
        if fixed:
            by_hour.append(Subscriber.send_hour.in_(fixed))
        if None in hours:
            by_hour.append(Subscriber.send_hour.is_(None))
        clauses.append(and_(Subscriber.timezone == tz, or_(*by_hour)))
    return or_(*clauses)


def _followers(cadence: Cadence, who: ColumnElement[bool]) -> ColumnElement[bool]:
    return and_(_mailable(), _follows(cadence), who)


def edition_for(session: Session, key: str, kind: EditionKind, **values: object) -> Edition:
    """The edition named ``key``, created if missing (a concurrent planner may win the race)."""
    edition = session.scalar(select(Edition).where(Edition.key == key))
    if edition is not None:
        return edition
    try:
        with session.begin_nested():
            edition = Edition(key=key, kind=kind, **values)
            session.add(edition)
    except IntegrityError:
        edition = session.scalars(select(Edition).where(Edition.key == key)).one()
    session.commit()
    return edition


def plan_readers(
    session: Session,
    edition: Edition,
    who: ColumnElement[bool],
    dispatch: Dispatch,
    chunk: int = PLAN_CHUNK,
    now: datetime | None = None,
) -> Planned:
    """Delivery rows for every reader matching ``who`` not yet in ``edition``, in chunks."""
    planned = Planned(edition.id, edition.key)
    if edition.status in (EditionStatus.CANCELLED,) or edition.paused_reason:
        return planned
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    last = 0
    while True:
        ids = list(
            session.scalars(
                select(Subscriber.id)
                .where(
                    Subscriber.id > last,
                    who,
                    ~exists().where(
                        Delivery.edition_id == edition.id, Delivery.subscriber_id == Subscriber.id
                    ),
                )
                .order_by(Subscriber.id)
                .limit(chunk)
            )
        )
        if not ids:
            break
        last = ids[-1]
        at = now or datetime.now(UTC)
        delivery_ids = list(
            session.scalars(
                insert(Delivery)
                .values(
                    [
                        {
                            "edition_id": edition.id,
                            "subscriber_id": sid,
                            "status": DeliveryStatus.QUEUED,
                            "attempts": 0,
                            "created_at": at,
                        }
                        for sid in ids
                    ]
                )
                .on_conflict_do_nothing()
                .returning(Delivery.id)
            )
        )
        live = session.scalar(
            update(Edition)
            .where(Edition.id == edition.id, Edition.status != EditionStatus.CANCELLED)
            .values(
                planned=Edition.planned + len(delivery_ids),
                heartbeat_at=at,
                # A period's edition gains readers zone by zone: done until the next zone.
                status=EditionStatus.SENDING,
                finished_at=None,
            )
            .returning(Edition.id)
        )
        if live is None:  # cancelled while this chunk was planned: it never goes out
            _cancel_rows(session, edition.id, delivery_ids, at)
            session.commit()
            break
        session.commit()
        for start in range(0, len(delivery_ids), SEND_BATCH):
            dispatch(edition.id, delivery_ids[start : start + SEND_BATCH])
            planned.batches += 1
        planned.deliveries += len(delivery_ids)
    return planned


def _cancel_rows(
    session: Session, edition_id: int, delivery_ids: Sequence[int], at: datetime
) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(list(delivery_ids)), Delivery.status == DeliveryStatus.QUEUED)
        .values(status=DeliveryStatus.SKIPPED, error=CANCELLED, sent_at=at)
        .execution_options(synchronize_session=False)
    )
    finish_if_done(session, edition_id, at)  # the figures, recounted from the rows


def instant_posts(session: Session, post_ids: Sequence[int]) -> list[int]:
    """The new posts that may go out instantly: not a source's backlog.

    A post first seen on its source's first poll, or dated before that first poll, is old
    news to the site's readers; adding a source must not flood instant readers with it.
    Posts pushed by the CMS (no source) always qualify.
    """
    if not post_ids:
        return []
    when = func.coalesce(Post.published_at, Post.first_seen_at)
    backlog = exists().where(
        SourceItem.post_id == Post.id,
        Source.id == SourceItem.source_id,
        or_(
            Source.first_polled_at.is_(None),
            Source.first_polled_at >= Post.first_seen_at,
            when < Source.first_polled_at,
        ),
    )
    return list(
        session.scalars(select(Post.id).where(Post.id.in_(post_ids), ~backlog).order_by(Post.id))
    )


def plan_instant(
    session: Session, post_ids: Sequence[int], dispatch: Dispatch, chunk: int = PLAN_CHUNK
) -> Planned | None:
    """One instant edition for a poll's (or a push's) new posts, to their tags' instant readers."""
    eligible = instant_posts(session, post_ids)
    if not eligible:
        return None
    digest = hashlib.sha256(",".join(map(str, eligible)).encode()).hexdigest()[:32]
    tag_ids = list(
        session.scalars(
            select(post_tags.c.tag_id).where(post_tags.c.post_id.in_(eligible)).distinct()
        )
    )
    if not tag_ids:
        return None
    now = datetime.now(UTC)
    edition = edition_for(
        session,
        f"instant:{digest}",
        EditionKind.INSTANT,
        post_ids=eligible,
        period_start=now,
        period_end=now,
    )
    who = and_(_mailable(), _follows(Cadence.INSTANT, tag_ids))
    return plan_readers(session, edition, who, dispatch, chunk)


def breaking_audience(session: Session, post_id: int) -> ColumnElement[bool] | None:
    """Who a breaking send of the post reaches (None: the post has no tags): active, unpaused
    readers who follow one of its tags (at any cadence) with breaking alerts on, less
    addresses on the suppression list and readers the post ledger says have the post already.
    The dry run counts this set and `plan_breaking` plans it: one query, shared."""
    tag_ids = list(
        session.scalars(select(post_tags.c.tag_id).where(post_tags.c.post_id == post_id))
    )
    if not tag_ids:
        return None
    follows = exists().where(
        Subscription.subscriber_id == Subscriber.id, Subscription.tag_id.in_(tag_ids)
    )
    # Entries kept with their address; an erased reader's hash-only entry goes with an
    # `erased` status, which `_mailable` leaves out already. Send time checks the hash too.
    suppressed = exists().where(
        Suppression.email.is_not(None),
        func.lower(Suppression.email) == func.lower(Subscriber.email),
    )
    has_post = exists().where(
        DeliveredPost.subscriber_id == Subscriber.id, DeliveredPost.post_id == post_id
    )
    return and_(_mailable(), Subscriber.breaking_alerts.is_(True), follows, ~suppressed, ~has_post)


def plan_breaking(
    session: Session,
    post_id: int,
    dispatch: Dispatch,
    chunk: int = PLAN_CHUNK,
    *,
    subject: str | None = None,
) -> Planned | None:
    """The post's one breaking edition, to its `breaking_audience`. A trigger that finds the
    edition plans only readers not yet in it (none, once planning has finished)."""
    who = breaking_audience(session, post_id)
    if who is None:
        return None
    edition = edition_for(
        session, breaking_key(post_id), EditionKind.BREAKING, post_id=post_id, subject=subject
    )
    return plan_readers(session, edition, who, dispatch, chunk)


def breaking_key(post_id: int) -> str:
    return f"breaking:{post_id}"
