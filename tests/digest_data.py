"""Build readers, tags and posts for the digest tests and the fan-out benchmark."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from service.digests.sending import BatchReport
from service.mail import MailError, OutgoingMessage, SendResult, send_each
from service.models import Cadence, Post, Subscriber, SubscriberStatus, Subscription, Tag

Sessions = Callable[[], Session]


def tag(session: Session, slug: str) -> Tag:
    t = Tag(slug=slug, name=slug.replace("-", " ").title())
    session.add(t)
    session.flush()
    return t


def reader(
    session: Session,
    email: str,
    follows: dict[Tag, Cadence],
    *,
    timezone: str = "UTC",
    send_hour: int | None = None,
    **extra: Any,
) -> Subscriber:
    sub = Subscriber(
        email=email,
        status=extra.pop("status", SubscriberStatus.ACTIVE),
        timezone=timezone,
        send_hour=send_hour,
        **extra,
    )
    session.add(sub)
    session.flush()
    for t, cadence in follows.items():
        session.add(Subscription(subscriber_id=sub.id, tag_id=t.id, cadence=cadence))
    session.flush()
    return sub


def post(
    session: Session,
    title: str,
    tags: Sequence[Tag],
    *,
    published: datetime | None,
    seen: datetime | None = None,
) -> Post:
    slug = title.lower().replace(" ", "-")
    p = Post(
        url=f"https://courier.example/{slug}",
        guid=f"g-{slug}",
        title=title,
        summary_html=f"<p>{title}: the details, told briefly.</p>",
        published_at=published,
        first_seen_at=seen or published or datetime.now(UTC),
        updated_at=seen or published or datetime.now(UTC),
        content_hash=slug,
        tags=list(tags),
    )
    session.add(p)
    session.flush()
    return p


class RecordingSender:
    """A sender that keeps what it was given; ``fail`` maps an address to its error."""

    name = "recording"

    def __init__(self, batch_size: int = 1, fail: dict[str, MailError] | None = None) -> None:
        self.batch_size = batch_size
        self.fail = fail or {}
        self.sent: list[OutgoingMessage] = []
        self.calls = 0

    def send(self, message: OutgoingMessage) -> str:
        error = self.fail.get(message.recipient)
        if error is not None:
            raise error
        self.sent.append(message)
        return f"id-{len(self.sent)}"

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        self.calls += 1
        return send_each(self, messages)

    def close(self) -> None:
        pass

    def to(self, email: str) -> list[OutgoingMessage]:
        return [m for m in self.sent if m.recipient == email]


def merge(reports: Sequence[BatchReport]) -> BatchReport:
    total = BatchReport()
    for r in reports:
        total.counts.update(r.counts)
        total.retry_ids += r.retry_ids
    return total


def followers(
    session: Session, tag_id: int, emails: Sequence[str], cadence: Cadence = Cadence.DAILY
) -> list[int]:
    """Active readers in UTC (breaking alerts on) following ``tag_id``, thousands at a time:
    two multi-row inserts, no ORM objects. Their ids; the caller commits."""
    now = datetime.now(UTC)
    ids = session.scalars(
        insert(Subscriber).returning(Subscriber.id),
        [
            {
                "email": email,
                "status": "active",
                "timezone": "UTC",
                "breaking_alerts": True,
                "paused": False,
                "created_at": now,
                "updated_at": now,
            }
            for email in emails
        ],
    ).all()
    session.execute(
        insert(Subscription),
        [
            {"subscriber_id": i, "tag_id": tag_id, "cadence": cadence, "created_at": now}
            for i in ids
        ],
    )
    return list(ids)
