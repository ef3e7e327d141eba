"""An operator's look at one reader: found by their exact address, with their subscriptions
and what the service last sent them. Operators only: it tells who reads what."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from service.models import Delivery, Edition, Subscriber, Subscription
from service.suppressions import is_suppressed

RECENT_DELIVERIES = 20


@dataclass(frozen=True)
class SubscriptionLine:
    tag: str  # slug
    cadence: str  # instant | daily | weekly


@dataclass(frozen=True)
class DeliveryLine:
    edition_id: int
    edition_key: str  # digest:3:2026-11-27, breaking:42, …
    edition_kind: str  # digest | breaking | instant
    status: str  # queued | sending | sent | failed | skipped | suppressed | unknown
    sent_at: datetime | None
    error: str | None
    created_at: datetime


@dataclass(frozen=True)
class SubscriberRecord:
    id: int
    email: str
    status: str  # pending | active | unsubscribed | bounced | complained | erased
    timezone: str
    send_hour: int | None  # None: each schedule's time
    breaking_alerts: bool
    paused: bool
    suppressed: bool  # on the suppression list: no mail whatever the status
    consented_at: datetime | None
    consent_source: str | None
    created_at: datetime
    subscriptions: list[SubscriptionLine]
    recent_deliveries: list[DeliveryLine]  # newest first


def find_subscribers(
    session: Session, email: str, *, deliveries: int = RECENT_DELIVERIES
) -> list[SubscriberRecord]:
    """The reader with exactly this address (any case): a list of one, or empty."""
    address = email.strip().lower()
    if not address:
        return []
    rows = session.scalars(
        select(Subscriber)
        .where(func.lower(Subscriber.email) == address)  # the unique lower(email) index
        .options(selectinload(Subscriber.subscriptions).joinedload(Subscription.tag))
    ).all()
    return [_record(session, s, deliveries) for s in rows]


def _record(session: Session, subscriber: Subscriber, limit: int) -> SubscriberRecord:
    recent = session.execute(
        select(Delivery, Edition.key, Edition.kind)
        .join(Edition, Edition.id == Delivery.edition_id)
        .where(Delivery.subscriber_id == subscriber.id)
        .order_by(Delivery.id.desc())
        .limit(limit)
    ).all()
    return SubscriberRecord(
        id=subscriber.id,
        email=subscriber.email,
        status=str(subscriber.status),
        timezone=subscriber.timezone,
        send_hour=subscriber.send_hour,
        breaking_alerts=subscriber.breaking_alerts,
        paused=subscriber.paused,
        suppressed=is_suppressed(session, subscriber.email),
        consented_at=subscriber.consented_at,
        consent_source=subscriber.consent_source,
        created_at=subscriber.created_at,
        subscriptions=sorted(
            (SubscriptionLine(s.tag.slug, str(s.cadence)) for s in subscriber.subscriptions),
            key=lambda line: line.tag,
        ),
        recent_deliveries=[
            DeliveryLine(
                edition_id=d.edition_id,
                edition_key=key,
                edition_kind=str(kind),
                status=str(d.status),
                sent_at=d.sent_at,
                error=d.error,
                created_at=d.created_at,
            )
            for d, key, kind in recent
        ],
    )
