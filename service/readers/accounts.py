"""A reader's account: subscribe, confirm, preferences, unsubscribe, export, erase.

Plain functions over a session; the caller commits. Mail goes out through a `Notifier` the
caller supplies (the web layer enqueues tasks after commit), so nothing here needs Celery.
Nothing here may tell a caller whether an address is known: `subscribe` behaves the same,
from the outside, for a new, pending, active, unsubscribed or suppressed address.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from service.config import Settings
from service.models import (
    Cadence,
    DeliveredPost,
    Delivery,
    Edition,
    Post,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Tag,
    post_tags,
)
from service.readers.schemas import (
    DeliveryOut,
    ExportOut,
    MeOut,
    PreferencesIn,
    SubscribeIn,
    TagOut,
)
from service.readers.tokens import ALL_LISTS, InvalidToken, TokenData
from service.suppressions import is_suppressed, suppress

# Statuses from which a reader is never mailed again, whatever they or anyone submits.
GONE = {SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED, SubscriberStatus.ERASED}


class ReaderError(ValueError):
    """Input that passed the schema but not the data (unknown tag, blocked domain): a 422."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class AlreadyConfirmed(Exception):
    """A confirmation link used a second time: harmless, but it does nothing."""


class Notifier(Protocol):
    def confirmation(self, session: Session, subscriber_id: int) -> None: ...

    def manage_link(self, session: Session, subscriber_id: int) -> None: ...


class Intake(Protocol):
    """Takes a checked subscribe request for processing away from the request (the worker)."""

    def subscribe(self, request: SubscribeIn, source: str) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


def find_by_email(session: Session, email: str, *, lock: bool = False) -> Subscriber | None:
    # lower() on both sides in the database: the index is on the database's lower(email).
    query = select(Subscriber).where(func.lower(Subscriber.email) == func.lower(email))
    return session.scalars(query.with_for_update() if lock else query).one_or_none()


def tags_by_slug(session: Session, slugs: Iterable[str], field: str = "tags") -> dict[str, Tag]:
    wanted = set(slugs)
    found = {t.slug: t for t in session.scalars(select(Tag).where(Tag.slug.in_(wanted)))}
    unknown = sorted(wanted - set(found))
    if unknown:
        raise ReaderError(field, f"unknown tags: {', '.join(unknown)}")
    return found


class KnownTags:
    """The tag slugs that exist, as the subscribe request path checks them: mostly no query.

    A slug seen within ``ttl`` seconds is taken as existing (a tag deleted meanwhile is
    dropped by the worker's own check, with the same answer to the reader); a slug not seen is
    looked up at once, so a new tag is usable immediately. One per API process, shared by its
    threads; ``benchmarks/api_load`` shows why (the tag query was the subscribe path's only
    database work: a pool checkout, a ping and two round trips per request).
    """

    def __init__(self, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._clock = ttl, clock
        self._seen: frozenset[str] = frozenset()
        self._since = -float("inf")
        self._lock = threading.Lock()

    def check(self, session: Session, slugs: Iterable[str], field: str = "tags") -> None:
        """Raise ReaderError for slugs that name no tag."""
        wanted = set(slugs)
        now = self._clock()
        if now - self._since > self._ttl:  # forget deleted tags now and then
            with self._lock:
                self._seen, self._since = frozenset(), now
        missing = wanted - self._seen
        if missing:
            found = set(session.scalars(select(Tag.slug).where(Tag.slug.in_(missing))))
            with self._lock:
                self._seen |= found
            unknown = sorted(missing - found)
            if unknown:
                raise ReaderError(field, f"unknown tags: {', '.join(unknown)}")


def check_request(session: Session, request: SubscribeIn, settings: Settings) -> dict[str, Tag]:
    """What can be said about a request without looking up the address: domain and tags.

    The request path stops here and hands over to `Intake`; everything that depends on
    whether the address is known happens in `subscribe`, in the worker, so neither the answer
    nor its timing can tell a new address from a known one.
    """
    if domain_blocked(request.email, settings):
        raise ReaderError("email", BLOCKED_DOMAIN)
    return tags_by_slug(session, request.tags)


def screen_request(
    session: Session, request: SubscribeIn, settings: Settings, known: KnownTags
) -> None:
    """`check_request` for the API's request path: the same answers, the tags from ``known``."""
    if domain_blocked(request.email, settings):
        raise ReaderError("email", BLOCKED_DOMAIN)
    known.check(session, request.tags)


BLOCKED_DOMAIN = "addresses at this domain are not accepted"


def domain_blocked(email: str, settings: Settings) -> bool:
    """The address is at a domain the operator refuses (``BLOCKED_EMAIL_DOMAINS``)."""
    return email.rsplit("@", 1)[1].lower() in settings.blocked_domains()


def subscribe(
    session: Session, request: SubscribeIn, *, settings: Settings, notify: Notifier, source: str
) -> None:
    """Start (or restart) double opt-in; an active reader gets their preferences link instead."""
    tags = check_request(session, request, settings)
    if is_suppressed(session, request.email):
        return  # never mailed again; the caller's answer is the same as for anyone
    subscriber = find_by_email(session, request.email, lock=True) or _create(
        session, request, source
    )
    if subscriber.status == SubscriberStatus.ACTIVE:
        # Changing an active reader's lists needs their consent, not just their address.
        notify.manage_link(session, subscriber.id)
        return
    if subscriber.status in GONE:
        return
    subscriber.status = SubscriberStatus.PENDING
    subscriber.timezone = request.timezone
    subscriber.send_hour = request.send_hour
    subscriber.consent_source = source
    subscriber.confirm_nonce = subscriber.confirm_nonce or secrets.token_urlsafe(16)
    _set_cadences(session, subscriber, {tags[s]: c for s, c in request.cadences().items()})
    notify.confirmation(session, subscriber.id)


def _create(session: Session, request: SubscribeIn, source: str) -> Subscriber:
    subscriber = Subscriber(
        email=request.email,
        status=SubscriberStatus.PENDING,
        timezone=request.timezone,
        send_hour=request.send_hour,
        consent_source=source,
        confirm_nonce=secrets.token_urlsafe(16),
    )
    try:
        with session.begin_nested():
            session.add(subscriber)
    except IntegrityError:
        # The same address was subscribed at the same moment by another request: use that row.
        existing = find_by_email(session, request.email, lock=True)
        if existing is None:
            raise
        return existing
    return subscriber


def _set_cadences(session: Session, subscriber: Subscriber, cadences: dict[Tag, Cadence]) -> None:
    current = {s.tag_id: s for s in subscriber.subscriptions}
    for tag, cadence in cadences.items():
        if tag.id in current:
            current[tag.id].cadence = cadence
        else:
            subscriber.subscriptions.append(Subscription(tag_id=tag.id, cadence=cadence))
    session.flush()


def load_subscriber(session: Session, data: TokenData, *, lock: bool = False) -> Subscriber:
    """The reader a token names; an erased or deleted reader's tokens are dead.

    ``lock``: for a change, so two saves at once queue instead of both inserting a row.
    """
    subscriber = session.get(
        Subscriber,
        data.subscriber_id,
        options=[selectinload(Subscriber.subscriptions)],
        with_for_update=lock,
    )
    if subscriber is None or subscriber.status == SubscriberStatus.ERASED:
        raise InvalidToken()
    return subscriber


def confirm(session: Session, data: TokenData, *, source: str) -> Subscriber:
    subscriber = session.get(Subscriber, data.subscriber_id, with_for_update=True)
    if subscriber is None or subscriber.status in GONE:
        raise InvalidToken()
    if data.nonce is None or data.nonce != subscriber.confirm_nonce:
        if subscriber.status == SubscriberStatus.ACTIVE:
            raise AlreadyConfirmed()
        raise InvalidToken()  # superseded, or the reader unsubscribed since
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.consented_at = _now()
    subscriber.consent_source = f"{subscriber.consent_source or source}; confirmed via {source}"
    subscriber.confirm_nonce = None
    session.flush()
    return subscriber


def update_preferences(session: Session, subscriber: Subscriber, changes: PreferencesIn) -> None:
    sent = changes.model_fields_set
    if changes.tags is not None:
        tags = tags_by_slug(session, changes.tags)
        dropped = {tags[s].id for s, c in changes.tags.items() if c is None}
        for subscription in list(subscriber.subscriptions):
            if subscription.tag_id in dropped:
                subscriber.subscriptions.remove(subscription)
        kept = {tags[s]: c for s, c in changes.tags.items() if c is not None}
        _set_cadences(session, subscriber, kept)
        if kept and subscriber.status == SubscriberStatus.UNSUBSCRIBED and subscriber.consented_at:
            # Came back through their own preferences link: that choice is fresh consent.
            subscriber.status = SubscriberStatus.ACTIVE
            subscriber.consented_at = _now()
            subscriber.consent_source = "preferences page"
    for field in ("timezone", "send_hour", "breaking_alerts", "paused"):
        if field in sent and (field == "send_hour" or getattr(changes, field) is not None):
            setattr(subscriber, field, getattr(changes, field))
    if not subscriber.subscriptions and subscriber.status == SubscriberStatus.ACTIVE:
        subscriber.status = SubscriberStatus.UNSUBSCRIBED
    session.flush()


def unsubscribe(session: Session, subscriber: Subscriber, scope: str) -> None:
    """Leave one tag's list, or everything. Takes effect for any mail not yet handed over.

    A token naming a tag that no longer exists unsubscribes from everything: an unsubscribe
    must never quietly do nothing.
    """
    if scope != ALL_LISTS and session.scalar(select(Tag.id).where(Tag.slug == scope)) is None:
        scope = ALL_LISTS
    if scope == ALL_LISTS:
        subscriber.subscriptions.clear()
    else:
        subscriber.subscriptions[:] = [s for s in subscriber.subscriptions if s.tag.slug != scope]
    if not subscriber.subscriptions and subscriber.status not in GONE:
        subscriber.status = SubscriberStatus.UNSUBSCRIBED
        subscriber.confirm_nonce = None
    session.flush()


def me(subscriber: Subscriber) -> MeOut:
    return MeOut(
        email=subscriber.email,
        status=subscriber.status.value,
        timezone=subscriber.timezone,
        send_hour=subscriber.send_hour,
        breaking_alerts=subscriber.breaking_alerts,
        paused=subscriber.paused,
        subscriptions={s.tag.slug: s.cadence for s in subscriber.subscriptions},
        consented_at=subscriber.consented_at,
        consent_source=subscriber.consent_source,
    )


def export(session: Session, subscriber: Subscriber) -> ExportOut:
    deliveries = session.execute(
        select(Delivery.edition_id, Edition.kind, Delivery.status, Delivery.sent_at)
        .join(Edition, Edition.id == Delivery.edition_id)
        .where(Delivery.subscriber_id == subscriber.id)
        .order_by(Delivery.id)
    )
    posts = session.execute(
        select(Post.url, Post.title, DeliveredPost.delivered_at)
        .join(Post, Post.id == DeliveredPost.post_id)
        .where(DeliveredPost.subscriber_id == subscriber.id)
        .order_by(DeliveredPost.delivered_at)
    )
    return ExportOut(
        profile=me(subscriber),
        created_at=subscriber.created_at,
        deliveries=[
            DeliveryOut(edition_id=e, kind=k.value, status=s.value, sent_at=t)
            for e, k, s, t in deliveries
        ],
        delivered_posts=[{"url": u, "title": t, "delivered_at": d} for u, t, d in posts],
    )


def erase(session: Session, subscriber: Subscriber) -> None:
    """Forget the reader; keep only a hash of the address so it is never mailed again.

    The row stays, anonymized, so edition figures still add up; nothing in it names anyone.
    """
    suppress(session, subscriber.email, reason="erased", source="reader", keep_address=False)
    subscriber.subscriptions.clear()
    session.execute(delete(DeliveredPost).where(DeliveredPost.subscriber_id == subscriber.id))
    session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber.id)
        .values(error=None, message_id=None, provider_id=None)
    )
    subscriber.email = f"erased-{subscriber.id}@erased.invalid"
    subscriber.status = SubscriberStatus.ERASED
    subscriber.timezone, subscriber.send_hour = "UTC", None
    subscriber.consented_at = subscriber.consent_source = subscriber.confirm_nonce = None
    session.flush()


def tags_with_counts(session: Session) -> list[TagOut]:
    rows = session.execute(
        select(Tag.slug, Tag.name, func.count(post_tags.c.post_id))
        .outerjoin(post_tags, post_tags.c.tag_id == Tag.id)
        .group_by(Tag.id, Tag.slug, Tag.name)
        .order_by(Tag.name)
    )
    return [TagOut(slug=s, name=n, posts=c) for s, n, c in rows]
