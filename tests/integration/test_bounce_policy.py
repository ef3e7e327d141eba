"""The suppression policy for feedback events: stored once, a hard bounce or a complaint
silences the address, a complaint unsubscribes from everything, a replay changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.bounces.events import EventKind, MailEvent
from service.bounces.policy import record
from service.models import Cadence, ProviderEvent, SubscriberStatus
from service.suppressions import is_suppressed
from tests.digest_data import reader, tag


def event(kind: EventKind, email: str, event_id: str = "e1") -> MailEvent:
    return MailEvent("postmark", event_id, kind, email, datetime(2026, 11, 27, tzinfo=UTC))


def test_a_hard_bounce_suppresses_and_marks_the_reader(db: Session) -> None:
    ann = reader(db, "ann@example.com", {tag(db, "harbour"): Cadence.DAILY})
    done = record(db, [event(EventKind.HARD_BOUNCE, "Ann@Example.com")])
    assert (done.stored, done.suppressed) == (1, 1)
    assert is_suppressed(db, "ann@example.com")
    assert ann.status == SubscriberStatus.BOUNCED
    assert [s.tag.slug for s in ann.subscriptions] == ["harbour"]  # a bounce is no unsubscribe


def test_a_complaint_suppresses_and_unsubscribes_from_everything(db: Session) -> None:
    bob = reader(
        db, "bob@example.com", {tag(db, "harbour"): Cadence.DAILY, tag(db, "port"): Cadence.INSTANT}
    )
    done = record(db, [event(EventKind.COMPLAINT, "bob@example.com")])
    assert (done.suppressed, done.unsubscribed) == (1, 1)
    assert is_suppressed(db, "bob@example.com")
    assert bob.subscriptions == []
    assert bob.status == SubscriberStatus.COMPLAINED


def test_a_replayed_event_changes_nothing(db: Session) -> None:
    first = record(db, [event(EventKind.HARD_BOUNCE, "gone@example.com", "same-id")])
    again = record(db, [event(EventKind.HARD_BOUNCE, "gone@example.com", "same-id")])
    assert (first.stored, again.stored, again.replayed) == (1, 0, 1)
    assert db.scalar(select(func.count()).select_from(ProviderEvent)) == 1


def test_soft_bounces_and_deliveries_are_kept_but_silence_nobody(db: Session) -> None:
    reader(db, "cat@example.com", {tag(db, "harbour"): Cadence.DAILY})
    done = record(
        db,
        [
            event(EventKind.SOFT_BOUNCE, "cat@example.com", "s1"),
            event(EventKind.DELIVERED, "cat@example.com", "d1"),
        ],
    )
    assert (done.stored, done.suppressed) == (2, 0)
    assert not is_suppressed(db, "cat@example.com")
