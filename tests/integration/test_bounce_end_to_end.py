"""The loop closed: a digest goes to readers, a bounce for one reader's delivery comes back
(recorded through `policy.record`, as a provider's webhook hands it over), and the next digest
leaves that reader out, whether the bounce arrives before the next plan or between the plan
and the send (suppression is checked at send time)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.bounces.events import EventKind, MailEvent
from service.bounces.policy import record
from service.config import Settings
from service.digests import planning, schedules
from service.digests.sending import BatchReport, send_batch
from service.models import Cadence, Delivery, DeliveryStatus, Subscriber, Tag
from tests.digest_data import RecordingSender, merge, post, reader, tag

Sessions = Callable[[], Session]
NOW = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)  # 07:30 in Tokyo: the daily is due


class Desk:
    """Plans digests with the real planner and sends each handed-off batch with send_batch."""

    def __init__(self, sessions: Sessions, settings: Settings) -> None:
        self.sessions, self.settings = sessions, settings
        self.sender = RecordingSender()
        self.batches: list[tuple[int, list[int]]] = []

    def dispatch(self, edition_id: int, ids: Sequence[int]) -> None:
        self.batches.append((edition_id, list(ids)))

    def plan(self, now: datetime) -> None:
        with self.sessions() as session:
            planning.plan_digests(session, self.dispatch, now)

    def send(self, now: datetime) -> BatchReport:
        batches, self.batches = self.batches, []
        return merge(
            [
                send_batch(self.sessions, self.sender, self.settings, e, i, now=now)
                for e, i in batches
            ]
        )


def deliveries_of(sessions: Sessions, email: str) -> list[Delivery]:
    """The reader's deliveries, oldest first (one per edition they were planned in)."""
    with sessions() as s:
        return list(
            s.scalars(
                select(Delivery)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Subscriber.email == email)
                .order_by(Delivery.id)
            )
        )


def test_a_bounced_reader_is_left_out_of_the_next_digest(
    sessions: Sessions, tmp_path: Path
) -> None:
    settings = Settings(
        var_dir=tmp_path,
        secret_key="test-secret-key-0123456789abcdef",
        base_url="https://courier.example",
        mail_from="The Harbour Courier <news@courier.example>",
    )
    desk = Desk(sessions, settings)
    with sessions() as s:
        schedules.add_schedule(s, "morning", Cadence.DAILY, at=time(7, 0))
        world = tag(s, "world")
        for name in ("ann", "bob", "cy"):
            reader(s, f"{name}@example.com", {world: Cadence.DAILY}, timezone="Asia/Tokyo")
        post(s, "Harbour reopens", [world], published=NOW - timedelta(hours=1))
        s.commit()

    desk.plan(NOW)
    assert desk.send(NOW).counts == {"sent": 3}
    [ann_first] = deliveries_of(sessions, "ann@example.com")
    [bob_first] = deliveries_of(sessions, "bob@example.com")
    assert ann_first.message_id
    assert ann_first.provider_id

    # Ann's mailbox is gone: the provider's webhook names our Message-ID and its own id.
    with sessions() as s:
        done = record(
            s,
            [
                MailEvent(
                    "postmark",
                    "pm-1",
                    EventKind.HARD_BOUNCE,
                    "ann@example.com",
                    NOW + timedelta(hours=1),
                    message_id=ann_first.message_id,
                    provider_message_id=ann_first.provider_id,
                    detail="550 5.1.1 mailbox does not exist",
                )
            ],
        )
        s.commit()
    assert (done.stored, done.matched, done.suppressed) == (1, 1, 1)

    next_day = NOW + timedelta(days=1)
    with sessions() as s:
        post(
            s,
            "Ferry timetable",
            [s.get_one(Tag, world.id)],
            published=next_day - timedelta(hours=1),
        )
        s.commit()
    desk.plan(next_day)
    # Bob's bounce for yesterday's mail arrives after the planner put him in today's digest,
    # through the VERP address (our delivery id): the send itself leaves him out.
    with sessions() as s:
        record(
            s,
            [
                MailEvent(
                    "smtp",
                    "dsn-1",
                    EventKind.HARD_BOUNCE,
                    "bob@example.com",
                    next_day,
                    delivery_id=bob_first.id,
                )
            ],
        )
        s.commit()
    report = desk.send(next_day)

    assert report.counts == {"sent": 1, "suppressed": 1}
    assert [len(desk.sender.to(f"{n}@example.com")) for n in ("ann", "bob", "cy")] == [1, 1, 2]
    [_, bob_next] = deliveries_of(sessions, "bob@example.com")
    assert bob_next.status == DeliveryStatus.SUPPRESSED
    assert [d.id for d in deliveries_of(sessions, "ann@example.com")] == [
        ann_first.id
    ]  # not planned again
    assert [d.status for d in deliveries_of(sessions, "cy@example.com")] == ["sent", "sent"]
