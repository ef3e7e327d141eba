"""The suppression policy for feedback events: stored once, a hard bounce, five soft bounces in
30 days or a complaint silences the address with its evidence, a complaint unsubscribes from
everything, a replay changes nothing, an operator's lift is recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.bounces.events import EventKind, MailEvent
from service.bounces.policy import record
from service.models import (
    Cadence,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    ProviderEvent,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from service.readers.accounts import erase
from service.suppressions import (
    Evidence,
    email_hash,
    is_suppressed,
    lift_history,
    lift_suppression,
    search_suppressions,
)
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


# -- soft bounces: five within 30 days, with no delivery in between ----------------------------

T = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def status_of(subscriber: Subscriber) -> SubscriberStatus:
    return subscriber.status  # read afresh after each step (mypy would narrow `.status`)


def soft(email: str, n: int, at: datetime) -> MailEvent:
    return MailEvent(
        "mailgun",
        f"soft-{n}",
        EventKind.SOFT_BOUNCE,
        email,
        at,
        detail=f"452 4.2.2 <{email}>: mailbox full (try {n})",
    )


def delivered(email: str, at: datetime) -> MailEvent:
    return MailEvent("mailgun", f"ok-{at:%j%H}", EventKind.DELIVERED, email, at)


def entry(db: Session, email: str) -> Suppression | None:
    return db.scalar(select(Suppression).where(Suppression.email_hash == email_hash(email)))


def test_four_soft_bounces_do_not_suppress_the_fifth_does(db: Session) -> None:
    dan = reader(db, "dan@example.com", {tag(db, "harbour"): Cadence.DAILY})
    first = record(db, [soft("dan@example.com", n, T + timedelta(days=n)) for n in range(4)])
    assert (first.stored, first.suppressed) == (4, 0)
    assert not is_suppressed(db, "dan@example.com")
    assert status_of(dan) == SubscriberStatus.ACTIVE

    fifth = record(db, [soft("dan@example.com", 4, T + timedelta(days=4))])
    assert fifth.suppressed == 1
    assert status_of(dan) == SubscriberStatus.BOUNCED
    listed = entry(db, "dan@example.com")
    assert listed is not None
    assert (listed.reason, listed.source) == ("soft_bounced", "mailgun")
    # The evidence is the five events: provider, id, kind, time and diagnostic of each.
    [info] = search_suppressions(db, "dan@example.com").items
    assert [e.event_id for e in info.evidence] == [f"soft-{n}" for n in range(5)]
    assert {(e.provider, e.kind) for e in info.evidence} == {("mailgun", "soft_bounce")}
    assert info.evidence[-1].occurred_at == T + timedelta(days=4)
    assert info.evidence[-1].detail == "452 4.2.2 <dan@example.com>: mailbox full (try 4)"


def test_a_delivery_in_between_starts_the_count_again(db: Session) -> None:
    email = "eve@example.com"
    record(db, [soft(email, n, T + timedelta(days=n)) for n in range(3)])
    record(db, [delivered(email, T + timedelta(days=3))])
    record(db, [soft(email, n, T + timedelta(days=n)) for n in range(4, 8)])
    assert not is_suppressed(db, email)  # 7 soft bounces in 8 days, but only 4 since delivery

    record(db, [soft(email, 8, T + timedelta(days=8))])
    [info] = search_suppressions(db, email).items
    assert [e.event_id for e in info.evidence] == [f"soft-{n}" for n in range(4, 9)]


def test_soft_bounces_older_than_30_days_do_not_count(db: Session) -> None:
    email = "fay@example.com"
    old = [soft(email, n, T - timedelta(days=40 - n)) for n in range(4)]  # 40 to 37 days ago
    recent = [soft(email, n, T - timedelta(days=n - 4)) for n in range(4, 8)]  # 0 to 3 days
    record(db, old + recent)
    assert not is_suppressed(db, email)
    record(db, [soft(email, 9, T + timedelta(days=1))])
    assert is_suppressed(db, email)


def test_a_hard_bounce_records_its_evidence_and_its_delivery(db: Session) -> None:
    run = delivery_for(db, "gus@example.com", message_id="<d1.x@courier.example>")
    bounce = MailEvent(
        "ses",
        "ses-9",
        EventKind.HARD_BOUNCE,
        "gus@example.com",
        T,
        message_id="<d1.x@courier.example>",
        detail="550 5.1.1 user unknown",
    )
    assert record(db, [bounce]).matched == 1
    [info] = search_suppressions(db, "gus@example.com").items
    assert (info.reason, info.source) == ("bounced", "ses")
    assert info.evidence == [
        Evidence("ses", "ses-9", "hard_bounce", T, "550 5.1.1 user unknown", run.id)
    ]
    stored = db.scalars(select(ProviderEvent).where(ProviderEvent.event_id == "ses-9")).one()
    assert (stored.kind, stored.delivery_id, stored.occurred_at) == ("hard_bounce", run.id, T)
    assert stored.email_hash == email_hash("gus@example.com")


def delivery_for(db: Session, email: str, *, message_id: str) -> Delivery:
    sub = reader(db, email, {tag(db, f"t-{email[:3]}"): Cadence.DAILY})
    edition = Edition(key=f"test:{email}", kind=EditionKind.DIGEST)
    db.add(edition)
    db.flush()
    row = Delivery(
        edition_id=edition.id,
        subscriber_id=sub.id,
        status=DeliveryStatus.SENT,
        message_id=message_id,
        backend="ses",
    )
    db.add(row)
    db.flush()
    return row


def test_an_erased_readers_address_is_kept_nowhere(db: Session) -> None:
    hal = reader(db, "hal@example.com", {tag(db, "harbour"): Cadence.DAILY})
    record(db, [soft("hal@example.com", 1, T)])  # stored with the address, before erasure
    erase(db, hal)
    record(
        db,
        [
            MailEvent(
                "postmark",
                "late",
                EventKind.HARD_BOUNCE,
                "hal@example.com",
                T + timedelta(days=1),
                detail="550 <hal@example.com> no such user",
                payload={"Email": "hal@example.com"},
            )
        ],
    )
    listed = entry(db, "hal@example.com")
    assert listed is not None
    assert (listed.email, listed.reason) == (None, "erased")  # erasure outranks a bounce
    assert listed.evidence == [
        Evidence(
            "postmark", "late", "hard_bounce", T + timedelta(days=1), "550 <<address>> no such user"
        ).to_json()
    ]
    for payload in db.scalars(select(ProviderEvent.payload)):
        assert "hal@example.com" not in json.dumps(payload)


def test_a_lift_is_recorded_and_the_address_is_mailable_again(db: Session) -> None:
    ivy = reader(
        db,
        "ivy@example.com",
        {tag(db, "harbour"): Cadence.DAILY},
        consented_at=T - timedelta(days=100),
    )
    record(db, [soft("ivy@example.com", n, T + timedelta(hours=n)) for n in range(5)])
    listed = entry(db, "ivy@example.com")
    assert listed is not None
    assert status_of(ivy) == SubscriberStatus.BOUNCED

    lifted = lift_suppression(
        db,
        listed.id,
        by="night-desk",
        note="mailbox emptied, says the reader",
        now=T + timedelta(days=1),
    )
    assert not is_suppressed(db, "ivy@example.com")
    assert status_of(ivy) == SubscriberStatus.ACTIVE  # the planner picks the reader up again
    [history] = lift_history(db, "ivy@")
    assert history == lifted
    assert (history.reason, history.lifted_by, history.lift_note) == (
        "soft_bounced",
        "night-desk",
        "mailbox emptied, says the reader",
    )
    assert len(history.evidence) == 5
    assert history.lifted_at == T + timedelta(days=1)

    # The count starts afresh after the lift: one more soft bounce is one, not six.
    record(db, [soft("ivy@example.com", 6, T + timedelta(days=2))])
    assert not is_suppressed(db, "ivy@example.com")


def test_lifting_a_complaint_leaves_the_reader_unsubscribed(db: Session) -> None:
    jo = reader(db, "jo@example.com", {tag(db, "harbour"): Cadence.DAILY})
    record(db, [event(EventKind.COMPLAINT, "jo@example.com", "c1")])
    listed = entry(db, "jo@example.com")
    assert listed is not None
    lift_suppression(db, listed.id, by="desk", note="wrote to us: a mistake")
    assert not is_suppressed(db, "jo@example.com")
    assert status_of(jo) == SubscriberStatus.COMPLAINED  # their choice: they subscribe again
    assert jo.subscriptions == []


def test_a_provider_id_shared_by_a_batch_finds_the_delivery_to_that_address(
    db: Session,
) -> None:
    from service.models import Delivery, DeliveryStatus, Edition, EditionKind

    harbour = tag(db, "harbour-batch")
    ann = reader(db, "ann.batch@example.com", {harbour: Cadence.DAILY})
    bob = reader(db, "bob.batch@example.com", {harbour: Cadence.DAILY})
    edition = Edition(key="digest:9:2026-11-27", kind=EditionKind.DIGEST)
    db.add(edition)
    db.flush()
    for who in (ann, bob):  # one API call, one provider id for both
        db.add(
            Delivery(
                edition_id=edition.id,
                subscriber_id=who.id,
                status=DeliveryStatus.SENT,
                provider_id="batch-42",
            )
        )
    db.flush()
    bounce = MailEvent(
        "sendgrid",
        "sg-1",
        EventKind.HARD_BOUNCE,
        "Bob.Batch@example.com",
        datetime(2026, 11, 27, tzinfo=UTC),
        provider_message_id="batch-42",
    )
    record(db, [bounce])
    assert (ann.status, bob.status) == (SubscriberStatus.ACTIVE, SubscriberStatus.BOUNCED)
