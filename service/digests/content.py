"""Who gets what: the readers of a send batch, the posts each is owed, less the post ledger.

Every function here costs a fixed number of queries per batch, whatever its size: the batch's
readers (with their tags), their previous digest, the candidate posts, and the ledger.

A digest carries the posts of the reader's tags for that cadence published since the reader's
previous digest of the schedule (a first digest: the last period, 24 h or 7 days), less what
the post ledger says the reader already got. "Published" is the feed's date, or when the post
was first seen if it has none; a post dated a little before the previous digest but seen only
after it (a feed that publishes late) still comes, while an old backlog does not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from service.digests.schedules import PERIOD
from service.feeds.normalize import plain_text
from service.models import (
    Cadence,
    DeliveredPost,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    Post,
    Schedule,
    Subscriber,
    Subscription,
    Tag,
    post_tags,
)

__all__ = ["LATE_FEED", "MAX_LOOKBACK", "PostView", "Reader", "load_readers", "posts_for"]

EXCERPT_CHARS = 280
# A post seen after the previous digest although dated up to this much before it still comes.
LATE_FEED = timedelta(hours=6)
# A reader back from a long pause gets at most this many periods (the mail shows 25 items).
MAX_LOOKBACK = 4
# The window reaches back this far before the previous digest's claim: the content of a batch
# is cut when the batch starts, its rows are claimed one by one after, and what appeared in
# between must not fall through. The post ledger keeps the overlap from repeating anything.
OVERLAP = timedelta(hours=1)


@dataclass(frozen=True)
class PostView:
    id: int
    title: str
    url: str
    excerpt: str
    author: str | None
    when: datetime  # published, or first seen when the feed gave no date
    first_seen_at: datetime
    tag_ids: frozenset[int]


@dataclass
class Reader:
    delivery_id: int
    subscriber_id: int
    email: str
    timezone: str
    status: str
    paused: bool
    tag_ids: frozenset[int]  # followed at this edition's cadence
    since: datetime | None = None  # digests: the start of this reader's window


def cadence_of(edition: Edition, schedule: Schedule | None) -> Cadence | None:
    """The cadence whose followed tags count for this edition (None: breaking, any cadence)."""
    if edition.kind == EditionKind.DIGEST and schedule is not None:
        return Cadence(schedule.cadence)
    return Cadence.INSTANT if edition.kind == EditionKind.INSTANT else None


def load_readers(
    session: Session,
    edition: Edition,
    schedule: Schedule | None,
    delivery_ids: Sequence[int],
    until: datetime,
) -> list[Reader]:
    """The batch's deliveries still `queued`, with their readers, tags and windows (3 queries)."""
    rows = session.execute(
        select(
            Delivery.id,
            Subscriber.id,
            Subscriber.email,
            Subscriber.timezone,
            Subscriber.status,
            Subscriber.paused,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(
            Delivery.id.in_(delivery_ids),
            Delivery.edition_id == edition.id,
            Delivery.status == DeliveryStatus.QUEUED,
        )
        .order_by(Delivery.id)
    ).all()
    if not rows:
        return []
    subscriber_ids = [r[1] for r in rows]
    cadence = cadence_of(edition, schedule)
    tags: dict[int, set[int]] = defaultdict(set)
    follows = select(Subscription.subscriber_id, Subscription.tag_id).where(
        Subscription.subscriber_id.in_(subscriber_ids)
    )
    if cadence is not None:
        follows = follows.where(Subscription.cadence == cadence)
    for sub_id, tag_id in session.execute(follows):
        tags[sub_id].add(tag_id)
    readers = [
        Reader(d_id, s_id, email, tz, str(status), paused, frozenset(tags[s_id]))
        for d_id, s_id, email, tz, status, paused in rows
    ]
    if edition.kind == EditionKind.DIGEST and schedule is not None:
        _set_windows(session, edition, schedule, readers, until)
    return readers


def _set_windows(
    session: Session, edition: Edition, schedule: Schedule, readers: list[Reader], until: datetime
) -> None:
    period = PERIOD[Cadence(schedule.cadence)]
    previous = dict(
        session.execute(
            select(Delivery.subscriber_id, func.max(Delivery.claimed_at))
            .join(Edition, Edition.id == Delivery.edition_id)
            .where(
                Edition.schedule_id == schedule.id,
                Edition.id != edition.id,
                Delivery.subscriber_id.in_([r.subscriber_id for r in readers]),
                Delivery.status.in_(
                    [DeliveryStatus.SENT, DeliveryStatus.SKIPPED, DeliveryStatus.UNKNOWN]
                ),
            )
            .group_by(Delivery.subscriber_id)
        ).all()
    )
    floor = until - MAX_LOOKBACK * period
    for reader in readers:
        last = previous.get(reader.subscriber_id)
        reader.since = max(last - OVERLAP, floor) if last is not None else until - period


def posts_for(
    session: Session,
    edition: Edition,
    readers: Sequence[Reader],
    until: datetime,
    claimed_by: Collection[int] = (),
) -> dict[int, list[PostView]]:
    """delivery id → the posts that reader gets, newest first (2 queries for the batch).

    ``claimed_by``: deliveries whose own ledger rows must not hide their posts (a retried
    delivery wrote its ledger rows when first claimed).
    """
    wanted_tags = set().union(*(r.tag_ids for r in readers)) if readers else set()
    if not wanted_tags:
        return {r.delivery_id: [] for r in readers}
    candidates = _candidates(session, edition, wanted_tags, readers, until)
    got = _ledger(session, [r.subscriber_id for r in readers], candidates, claimed_by)
    # Readers with the same tags and window are owed the same posts: filter once per group.
    owed: dict[tuple[frozenset[int], datetime | None], list[PostView]] = {}
    picked: dict[int, list[PostView]] = {}
    for reader in readers:
        group = (reader.tag_ids, reader.since)
        posts = owed.get(group)
        if posts is None:
            posts = owed[group] = [
                p
                for p in candidates
                if p.tag_ids & reader.tag_ids and _in_window(p, reader.since, until)
            ]
        sub = reader.subscriber_id
        picked[reader.delivery_id] = (
            [p for p in posts if (sub, p.id) not in got] if got else list(posts)
        )
    return picked


def _in_window(post: PostView, since: datetime | None, until: datetime) -> bool:
    if since is None:  # instant and breaking: the edition's own posts
        return True
    if post.first_seen_at >= until or post.when >= until:
        return False
    return post.when >= since or (post.first_seen_at >= since and post.when >= since - LATE_FEED)


def _candidates(
    session: Session,
    edition: Edition,
    tag_ids: Iterable[int],
    readers: Sequence[Reader],
    until: datetime,
) -> list[PostView]:
    when = func.coalesce(Post.published_at, Post.first_seen_at)
    query = (
        select(
            Post.id,
            Post.title,
            Post.url,
            Post.summary_html,
            Post.author,
            when,
            Post.first_seen_at,
            post_tags.c.tag_id,
        )
        .join(post_tags, post_tags.c.post_id == Post.id)
        .where(post_tags.c.tag_id.in_(list(tag_ids)))
    )
    if edition.post_ids is not None:
        query = query.where(Post.id.in_(edition.post_ids))
    elif edition.post_id is not None:
        query = query.where(Post.id == edition.post_id)
    else:
        earliest = min(r.since for r in readers if r.since is not None)
        query = query.where(
            Post.first_seen_at < until,
            when < until,
            when >= earliest - LATE_FEED,
        )
    posts: dict[int, PostView] = {}
    tags: dict[int, set[int]] = defaultdict(set)
    for pid, title, url, summary, author, at, seen, tag_id in session.execute(query):
        tags[pid].add(tag_id)
        if pid not in posts:
            excerpt = plain_text(summary, EXCERPT_CHARS)
            posts[pid] = PostView(pid, title, url, excerpt, author, at, seen, frozenset())
    views = [
        _canonical(PostView(**{**p.__dict__, "tag_ids": frozenset(tags[p.id])}))
        for p in posts.values()
    ]
    return sorted(views, key=lambda p: (p.when, p.id), reverse=True)


# One object per post (and version) however many batches load it: the bodies a worker keeps
# (compose) name their posts, and would otherwise keep every batch's copy.
_views: dict[PostView, PostView] = {}
_VIEWS = 4096


def _canonical(view: PostView) -> PostView:
    kept = _views.get(view)
    if kept is None:
        if len(_views) >= _VIEWS:
            _views.clear()
        kept = _views[view] = view
    return kept


def _ledger(
    session: Session,
    subscriber_ids: Sequence[int],
    posts: Sequence[PostView],
    claimed_by: Collection[int],
) -> set[tuple[int, int]]:
    if not posts:
        return set()
    query = select(DeliveredPost.subscriber_id, DeliveredPost.post_id).where(
        DeliveredPost.subscriber_id.in_(subscriber_ids),
        DeliveredPost.post_id.in_([p.id for p in posts]),
    )
    if claimed_by:
        query = query.where(
            ~and_(
                DeliveredPost.delivery_id.is_not(None),
                DeliveredPost.delivery_id.in_(list(claimed_by)),
            )
        )
    return {(s, p) for s, p in session.execute(query)}


def tag_names(session: Session, tag_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """tag id → (name, slug)."""
    ids = list(set(tag_ids))
    if not ids:
        return {}
    return {
        i: (n, s)
        for i, n, s in session.execute(select(Tag.id, Tag.name, Tag.slug).where(Tag.id.in_(ids)))
    }
