"""The data model (see ARCHITECTURE.md, "Data model"): typed SQLAlchemy 2 models.

Times are stored in UTC and always come back timezone-aware, on SQLite as on PostgreSQL.
Statuses are plain strings checked against a Python enum, so adding a state is a code change
and a migration of a CHECK constraint, not a database type migration.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Time,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so Alembic migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC; naive values read back from SQLite are marked UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 - read once by SQLAlchemy


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class SubscriberStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    ERASED = "erased"


class Cadence(enum.StrEnum):
    INSTANT = "instant"
    DAILY = "daily"
    WEEKLY = "weekly"


class EditionKind(enum.StrEnum):
    DIGEST = "digest"
    BREAKING = "breaking"
    INSTANT = "instant"


class EditionStatus(enum.StrEnum):
    PLANNED = "planned"
    SENDING = "sending"
    DONE = "done"
    CANCELLED = "cancelled"


class DeliveryStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    SUPPRESSED = "suppressed"
    UNKNOWN = "unknown"


class Role(enum.StrEnum):
    OPERATOR = "operator"
    EDITOR = "editor"


post_tags = Table(
    "post_tags",
    Base.metadata,
    Column("post_id", ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True),
)

source_tags = Table(
    "source_tags",
    Base.metadata,
    Column("source_id", ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
)


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Source(Base):
    """A feed we poll, with the validators and error state the poller keeps."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    title: Mapped[str | None] = mapped_column(String(500))
    categories_as_tags: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    interval_seconds: Mapped[int] = mapped_column(Integer, default=900)
    etag: Mapped[str | None] = mapped_column(String(1000))
    last_modified: Mapped[str | None] = mapped_column(String(200))
    body_hash: Mapped[str | None] = mapped_column(String(64))
    next_poll_at: Mapped[datetime | None] = mapped_column(index=True)
    last_polled_at: Mapped[datetime | None]
    first_polled_at: Mapped[datetime | None]
    consecutive_errors: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_result: Mapped[str | None] = mapped_column(String(200))  # what the last poll did
    # One poll in flight per source, across every worker: a poll holds this lease.
    lease_until: Mapped[datetime | None]
    # Some servers' validators never change (WordPress tag feeds): fetch without them at times.
    last_unconditional_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tags: Mapped[list[Tag]] = relationship(secondary=source_tags)


class Post(Base):
    """One article, however many feeds and tags reach it."""

    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)  # canonical
    guid: Mapped[str] = mapped_column(String(2000), index=True)
    title: Mapped[str] = mapped_column(String(1000))
    summary_html: Mapped[str] = mapped_column(Text, default="")  # sanitized
    author: Mapped[str | None] = mapped_column(String(300))
    published_at: Mapped[datetime | None] = mapped_column(index=True)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    content_hash: Mapped[str] = mapped_column(String(64))

    tags: Mapped[list[Tag]] = relationship(secondary=post_tags)


class SourceItem(Base):
    __tablename__ = "source_items"
    __table_args__ = (UniqueConstraint("source_id", "guid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    guid: Mapped[str] = mapped_column(String(2000))
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), index=True)


class Subscriber(Base):
    __tablename__ = "subscribers"
    __table_args__ = (
        # One row per address whatever its case: "Ann@Example.org" is "ann@example.org".
        Index("uq_subscribers_email_lower", text("lower(email)"), unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[SubscriberStatus] = mapped_column(
        _enum(SubscriberStatus, "subscriber_status"), default=SubscriberStatus.PENDING, index=True
    )
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    send_hour: Mapped[int | None] = mapped_column(Integer)  # None: the schedule's time
    breaking_alerts: Mapped[bool] = mapped_column(Boolean, default=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)  # no digests while paused
    # Carried by the confirmation link and cleared when it is used: a link works once.
    confirm_nonce: Mapped[str | None] = mapped_column(String(32))
    consented_at: Mapped[datetime | None]
    consent_source: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan"
    )


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("subscriber_id", "tag_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), index=True)
    cadence: Mapped[Cadence] = mapped_column(_enum(Cadence, "cadence"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    tag: Mapped[Tag] = relationship(lazy="joined")  # a subscription is always shown with its tag


class Schedule(Base):
    """An operator-defined digest programme; readers' own hour and zone override `send_time`."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    cadence: Mapped[Cadence] = mapped_column(_enum(Cadence, "cadence"))
    weekday: Mapped[int | None] = mapped_column(Integer)  # 0 = Monday, weekly only
    send_time: Mapped[time] = mapped_column(Time, default=time(7, 0))
    template: Mapped[str] = mapped_column(String(100), default="digest")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Edition(Base):
    """One mailing: a schedule's period, one breaking post, or one poll's instant posts.

    ``key`` names it naturally (``digest:3:2026-11-27``, ``breaking:42``), so planning the
    same thing twice finds the edition that exists instead of making a second one.
    """

    __tablename__ = "editions"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[EditionKind] = mapped_column(_enum(EditionKind, "edition_kind"))
    schedule_id: Mapped[int | None] = mapped_column(
        ForeignKey("schedules.id", ondelete="SET NULL"), index=True
    )
    post_id: Mapped[int | None] = mapped_column(
        ForeignKey("posts.id", ondelete="SET NULL"), index=True
    )
    period_start: Mapped[datetime | None]
    period_end: Mapped[datetime | None]
    subject: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[EditionStatus] = mapped_column(
        _enum(EditionStatus, "edition_status"), default=EditionStatus.PLANNED, index=True
    )
    planned: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    suppressed: Mapped[int] = mapped_column(Integer, default=0)
    unknown: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # An instant edition's posts (a digest's depend on each reader's tags and last digest).
    post_ids: Mapped[list[int] | None] = mapped_column(JSON)
    # Touched by every send batch: the tick's sweep re-enqueues an edition that has queued
    # deliveries and no heartbeat for a few minutes (its task was lost with a killed worker).
    heartbeat_at: Mapped[datetime | None]
    # Failed send attempts in a row on this edition; at the limit the edition pauses.
    backend_failures: Mapped[int] = mapped_column(Integer, default=0)
    paused_reason: Mapped[str | None] = mapped_column(Text)  # set: paused, nothing is sent


class Delivery(Base):
    """The delivery ledger: one row per (edition, reader), claimed before it is sent."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id"),
        Index("ix_deliveries_edition_id_status", "edition_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    backend: Mapped[str | None] = mapped_column(String(32))
    message_id: Mapped[str | None] = mapped_column(String(300), index=True)
    provider_id: Mapped[str | None] = mapped_column(String(300), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    # Start of the lease while `sending`; afterwards the cut-off of what this mail carried,
    # so the reader's next digest starts there.
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveredPost(Base):
    """The post ledger: a post reaches a reader at most once, whatever tags or cadences."""

    __tablename__ = "delivered_posts"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    post_id: Mapped[int] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    delivery_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("deliveries.id", ondelete="SET NULL"),
        index=True,  # a send batch reads its own rows; a failed send deletes them
    )
    delivered_at: Mapped[datetime] = mapped_column(default=utcnow)


class Suppression(Base):
    """An address we never mail. Erased readers leave only the hash of their address.

    A row here is a suppression in force; lifting one moves it to `lifted_suppressions`.
    """

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of lower(email)
    email: Mapped[str | None] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What made it: the feedback events (provider, event id, kind, time, detail), newest last.
    evidence: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class LiftedSuppression(Base):
    """A suppression an operator lifted: what it was, and who lifted it, when and why."""

    __tablename__ = "lifted_suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), index=True)
    email: Mapped[str | None] = mapped_column(String(320))  # None: an erased reader
    reason: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    evidence: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    suppressed_at: Mapped[datetime]
    lifted_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    lifted_by: Mapped[str] = mapped_column(String(100))
    lift_note: Mapped[str | None] = mapped_column(Text)


class ProviderEvent(Base):
    """A feedback event, stored once by its id so a replay changes nothing.

    The columns beside the payload are what the policy counts (soft bounces of one address
    in 30 days) and what the figures join (events of an edition's deliveries).
    """

    __tablename__ = "provider_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        Index(
            "ix_provider_events_email_hash_kind_occurred_at", "email_hash", "kind", "occurred_at"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(300))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str | None] = mapped_column(String(16))  # an EventKind value
    email_hash: Mapped[str | None] = mapped_column(String(64))  # sha256 of lower(email)
    occurred_at: Mapped[datetime | None]
    delivery_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("deliveries.id", ondelete="SET NULL"),
        index=True,
    )


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
