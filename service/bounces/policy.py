"""What a bounce or a complaint does: stored once by its id, then the suppression policy.

- a hard bounce suppresses the address (reason `bounced`) and marks the reader `bounced`;
- soft bounces suppress it (`soft_bounced`, the reader `bounced`) once there are
  ``SOFT_LIMIT`` of them within ``SOFT_WINDOW`` with no delivery in between;
- a complaint suppresses the address and unsubscribes the reader from everything
  (`complained`);
- the provider's own unsubscribe unsubscribes the reader from everything;
- deliveries and anything else are kept as evidence and change nothing here.

"A delivery in between" means a `delivered` event from the provider: the receiving server
took a message for that address. A `sent` delivery row is no such evidence: it only says our
mail backend accepted the message, and the soft bounce of that very message arrives after it
(a daily reader whose mailbox is full would otherwise never reach five). A lift also starts
the count afresh: the operator decided the address deserves another try.

Each suppression records its evidence (provider, event id, kind, time, diagnostic, delivery)
on the entry. An event for an erased reader's address is stored without the address (only
its hash, kind, time and delivery), and its diagnostic loses any address it names.

An event seen before (same provider and event id, `provider_events` is unique on them)
changes nothing: providers retry webhooks, and an operator may replay a mailbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.bounces.events import EventKind, MailEvent
from service.models import (
    Delivery,
    LiftedSuppression,
    ProviderEvent,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from service.readers.accounts import unsubscribe
from service.readers.tokens import ALL_LISTS
from service.suppressions import MAX_EVIDENCE, Evidence, email_hash, suppress

__all__ = ["SOFT_LIMIT", "SOFT_WINDOW", "Recorded", "record"]

SOFT_LIMIT = 5  # soft bounces that suppress an address …
SOFT_WINDOW = timedelta(days=30)  # … within this long, with no delivery in between

# What each kind makes of the reader and the suppression list (reason), if anything.
SUPPRESS = {EventKind.HARD_BOUNCE: "bounced", EventKind.COMPLAINT: "complained"}
SOFT_REASON = "soft_bounced"
STATUS = {
    EventKind.HARD_BOUNCE: SubscriberStatus.BOUNCED,
    EventKind.SOFT_BOUNCE: SubscriberStatus.BOUNCED,
    EventKind.COMPLAINT: SubscriberStatus.COMPLAINED,
}
# Only a reader still on the lists becomes `bounced` (and a lift brings them back).
BOUNCEABLE = (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING)


@dataclass
class Recorded:
    """What one batch of events did."""

    stored: int = 0
    replayed: int = 0  # seen before: nothing changed
    suppressed: int = 0
    unsubscribed: int = 0
    matched: int = 0  # stored events whose delivery was found (they count in the figures)


def record(session: Session, events: Sequence[MailEvent]) -> Recorded:
    """Store each event once and apply the policy; the caller commits."""
    done = Recorded()
    for event in events:
        delivery = _delivery(session, event)
        reader = _reader(session, event, delivery)
        listed = session.scalar(
            select(Suppression).where(Suppression.email_hash == email_hash(event.email))
        )
        erased = (listed is not None and listed.email is None) or (
            reader is not None and reader.status == SubscriberStatus.ERASED
        )
        stored = _store(session, event, delivery, erased=erased)
        if stored is None:
            done.replayed += 1
            continue
        done.stored += 1
        done.matched += delivery is not None
        # The diagnostic of this one is at hand (an erased reader's payload keeps none).
        details = {stored.id: event.detail}
        evidence = _evidence_of([stored], details, erased=erased)
        reason = SUPPRESS.get(event.kind)
        if event.kind == EventKind.SOFT_BOUNCE and listed is None:
            bounces = _soft_bounces(session, email_hash(event.email), _utc(event.occurred_at))
            if len(bounces) >= SOFT_LIMIT:
                reason, evidence = SOFT_REASON, _evidence_of(bounces, details, erased=erased)
        if reason is not None:
            suppress(
                session,
                event.email.strip(),
                reason=reason,
                source=event.provider,
                keep_address=not erased,
                evidence=evidence,
            )
            done.suppressed += 1
        if reader is None:
            continue
        if event.kind in (EventKind.COMPLAINT, EventKind.UNSUBSCRIBE):
            unsubscribe(session, reader, ALL_LISTS)
            done.unsubscribed += 1
        status = STATUS.get(event.kind) if reason is not None else None
        if status is not None and _may_become(reader.status, status):
            reader.status = status
    session.flush()
    return done


def _store(
    session: Session, event: MailEvent, delivery: Delivery | None, *, erased: bool
) -> ProviderEvent | None:
    """Keep the event; None when it was stored before (a replay)."""
    seen = select(ProviderEvent.id).where(
        ProviderEvent.provider == event.provider, ProviderEvent.event_id == event.event_id
    )
    if session.scalar(seen) is not None:
        return None
    at = _utc(event.occurred_at)
    payload: dict[str, Any]
    if erased:  # the hash, kind, time and delivery (in the columns) are all we keep
        payload = {"erased": True}
    else:
        payload = {
            "kind": event.kind.value,
            "email": event.email,
            "occurred_at": at.isoformat(),
            "detail": event.detail,
            "delivery_id": event.delivery_id,
            "message_id": event.message_id,
            "provider_message_id": event.provider_message_id,
            "received": event.payload,
        }
    row = ProviderEvent(
        provider=event.provider,
        event_id=event.event_id,
        payload=payload,
        kind=event.kind.value,
        email_hash=email_hash(event.email),
        occurred_at=at,
        delivery_id=delivery.id if delivery is not None else None,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # the same event, arriving twice at once
        return None
    return row


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _may_become(now: SubscriberStatus, new: SubscriberStatus) -> bool:
    """A complaint marks anyone but an erased reader; a bounce only one still on the lists
    (a bounce says nothing about a reader who left)."""
    if new == SubscriberStatus.COMPLAINED:
        return now != SubscriberStatus.ERASED
    return now in BOUNCEABLE


def _soft_bounces(session: Session, digest: str, at: datetime) -> list[ProviderEvent]:
    """The address's soft bounces that count at ``at``: within the window before it, after
    the address's last delivery and after its last lift; the latest ``MAX_EVIDENCE``."""
    same = ProviderEvent.email_hash == digest
    delivered = session.scalar(
        select(func.max(ProviderEvent.occurred_at)).where(
            same, ProviderEvent.kind == EventKind.DELIVERED.value
        )
    )
    lifted = session.scalar(
        select(func.max(LiftedSuppression.lifted_at)).where(LiftedSuppression.email_hash == digest)
    )
    start = max(t for t in (at - SOFT_WINDOW, delivered, lifted) if t is not None)
    rows = session.scalars(
        select(ProviderEvent)
        .where(
            same,
            ProviderEvent.kind == EventKind.SOFT_BOUNCE.value,
            ProviderEvent.occurred_at > start,
            ProviderEvent.occurred_at <= at,
        )
        .order_by(ProviderEvent.occurred_at.desc(), ProviderEvent.id.desc())
        .limit(MAX_EVIDENCE)
    ).all()
    return list(reversed(rows))


def _evidence_of(
    rows: Sequence[ProviderEvent], details: dict[int, str], *, erased: bool
) -> list[Evidence]:
    found = []
    for row in rows:
        detail = details.get(row.id)
        if detail is None:  # an event stored earlier: its diagnostic is in the payload
            detail = str(row.payload.get("detail") or "")
        item = Evidence(
            provider=row.provider,
            event_id=row.event_id,
            kind=row.kind or "",
            occurred_at=row.occurred_at,
            detail=detail[:500],
            delivery_id=row.delivery_id,
        )
        found.append(item.without_address() if erased else item)
    return found


def _delivery(session: Session, event: MailEvent) -> Delivery | None:
    """The delivery the event is about: by our id (VERP), our Message-ID, or the provider's."""
    if event.delivery_id is not None and 0 < event.delivery_id < 2**63:
        delivery = session.get(Delivery, event.delivery_id)
        if delivery is not None:
            return delivery
    if event.message_id:
        found = session.scalars(
            select(Delivery).where(Delivery.message_id == event.message_id).limit(1)
        ).first()
        if found is not None:
            return found
    if event.provider_message_id:
        # One provider id may cover a whole API call (SendGrid's X-Message-Id names up to
        # 1,000 recipients): when it does, only the delivery to this address is the one.
        same = Delivery.provider_id == event.provider_message_id
        candidates = session.scalars(select(Delivery).where(same).limit(2)).all()
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            address = event.email.strip().lower()
            return session.scalars(
                select(Delivery)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(same, func.lower(Subscriber.email) == address)
                .limit(1)
            ).first()
    return None


def _reader(session: Session, event: MailEvent, delivery: Delivery | None) -> Subscriber | None:
    """The reader the event is about: through its delivery when we can tell which, else by
    address (a reader may have changed address since; the delivery knows who it was)."""
    if delivery is not None:
        return session.get(Subscriber, delivery.subscriber_id)
    address = event.email.strip().lower()
    return session.scalar(select(Subscriber).where(func.lower(Subscriber.email) == address))
