"""What a bounce or a complaint does: stored once by its id, then the suppression policy.

- a hard bounce suppresses the address and marks the reader `bounced`;
- a complaint suppresses the address and unsubscribes the reader from everything
  (`complained`);
- the provider's own unsubscribe unsubscribes the reader from everything;
- soft bounces, deliveries and anything else are kept as evidence and change nothing here.

An event seen before (same provider and event id, `provider_events` is unique on them)
changes nothing: providers retry webhooks, and an operator may replay a mailbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.bounces.events import EventKind, MailEvent
from service.models import Delivery, ProviderEvent, Subscriber, SubscriberStatus
from service.readers.accounts import unsubscribe
from service.readers.tokens import ALL_LISTS
from service.suppressions import suppress

__all__ = ["Recorded", "record"]

# What each kind makes of the reader and the suppression list (reason), if anything.
SUPPRESS = {EventKind.HARD_BOUNCE: "bounced", EventKind.COMPLAINT: "complained"}
STATUS = {
    EventKind.HARD_BOUNCE: SubscriberStatus.BOUNCED,
    EventKind.COMPLAINT: SubscriberStatus.COMPLAINED,
}


@dataclass
class Recorded:
    """What one batch of events did."""

    stored: int = 0
    replayed: int = 0  # seen before: nothing changed
    suppressed: int = 0
    unsubscribed: int = 0


def record(session: Session, events: Sequence[MailEvent]) -> Recorded:
    """Store each event once and apply the policy; the caller commits."""
    done = Recorded()
    for event in events:
        if not _store(session, event):
            done.replayed += 1
            continue
        done.stored += 1
        reader = _reader(session, event)
        if event.kind in SUPPRESS:
            suppress(session, event.email, reason=SUPPRESS[event.kind], source=event.provider)
            done.suppressed += 1
        if reader is None:
            continue
        if event.kind in (EventKind.COMPLAINT, EventKind.UNSUBSCRIBE):
            unsubscribe(session, reader, ALL_LISTS)
            done.unsubscribed += 1
        if event.kind in STATUS and reader.status != SubscriberStatus.ERASED:
            reader.status = STATUS[event.kind]
    session.flush()
    return done


def _store(session: Session, event: MailEvent) -> bool:
    """Keep the event; False when it was stored before (a replay)."""
    seen = select(ProviderEvent.id).where(
        ProviderEvent.provider == event.provider, ProviderEvent.event_id == event.event_id
    )
    if session.scalar(seen) is not None:
        return False
    payload = {
        "kind": event.kind.value,
        "email": event.email,
        "occurred_at": event.occurred_at.isoformat(),
        "detail": event.detail,
        "delivery_id": event.delivery_id,
        "message_id": event.message_id,
        "provider_message_id": event.provider_message_id,
        "received": event.payload,
    }
    try:
        with session.begin_nested():
            session.add(
                ProviderEvent(provider=event.provider, event_id=event.event_id, payload=payload)
            )
    except IntegrityError:  # the same event, arriving twice at once
        return False
    return True


def _reader(session: Session, event: MailEvent) -> Subscriber | None:
    """The reader the event is about: through its delivery when we can tell which, else by
    address (a reader may have changed address since; the delivery knows who it was)."""
    delivery = None
    if event.delivery_id is not None:
        delivery = session.get(Delivery, event.delivery_id)
    if delivery is None and event.message_id:
        delivery = session.scalar(select(Delivery).where(Delivery.message_id == event.message_id))
    if delivery is None and event.provider_message_id:
        delivery = session.scalar(
            select(Delivery).where(Delivery.provider_id == event.provider_message_id)
        )
    if delivery is not None:
        return session.get(Subscriber, delivery.subscriber_id)
    address = event.email.strip().lower()
    return session.scalar(select(Subscriber).where(func.lower(Subscriber.email) == address))
