"""The public archive: the editions that went out, as they went out, with nobody's links.

What an edition carried is read from what was really sent, never re-derived:

- a breaking edition: its one post;
- an instant or digest edition: the post ledger rows (`delivered_posts`) of its `sent`
  deliveries. A digest's content is not a function of its period: each reader's window runs
  from their own previous digest, and the ledger drops what an instant or breaking mail
  already carried, so the only record of what left is the ledger. The query reads the
  edition's own rows through the (edition, status) index and the ledger's delivery index, so it
  costs what the edition's size costs, whatever the archive's age. (An instant edition's
  `post_ids` are what it could carry; the ledger says which of them a reader actually got.)

An edition "of a tag" carried at least one post of that tag; an edition that sent nothing (or
whose only readers have since erased their data, taking their ledger rows) is not shown. A
tag's listing walks the sent editions newest first and probes each: a sample of its
deliveries first (finds a tag many readers got), then the ledger rows of the tag's posts dated
within the edition's window (exact; few rows when few readers follow the tag, and the same
cost in a year-old archive). A finished edition's answer is memoized per process, and a request
looks at SCAN_LIMIT editions at most (`benchmarks/archive.py` has the figures).
Pages are lists of plain dataclasses; `service.web.archive_pages` renders them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import Exists

from service.digests.content import LATE_FEED, MAX_LOOKBACK
from service.digests.schedules import PERIOD
from service.feeds.normalize import plain_text
from service.models import (
    Cadence,
    DeliveredPost,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    Post,
    Schedule,
    Tag,
    post_tags,
)

__all__ = [
    "PAGE_SIZE",
    "ArchivePost",
    "EditionInfo",
    "EditionPage",
    "Section",
    "TagArchive",
    "edition_page",
    "tag_archive",
]

PAGE_SIZE = 20
SAMPLE = 200  # deliveries the listing's first probe looks at
SCAN_LIMIT = 200  # editions one listing request looks at, at most
WEEK = timedelta(days=7)
_MEMO_SIZE = 20_000
# (edition, tag, sent) -> carried: a finished edition's answer does not change.
_memo: dict[tuple[int, int, int], bool] = {}
EXCERPT_CHARS = 280


@dataclass(frozen=True)
class EditionInfo:
    id: int
    kind: EditionKind
    title: str
    date: datetime  # the digest's day, else when the edition was made (UTC)
    done: bool  # finished sending: its page no longer changes


@dataclass(frozen=True)
class ArchivePost:
    id: int
    title: str
    url: str
    excerpt: str
    author: str | None
    when: datetime
    content_hash: str
    tag_ids: frozenset[int]


@dataclass(frozen=True)
class Section:
    slug: str
    name: str
    posts: tuple[ArchivePost, ...]


@dataclass(frozen=True)
class EditionPage:
    edition: EditionInfo
    sections: tuple[Section, ...]  # a post in several shown tags sits under the first

    @property
    def version(self) -> str:
        """Changes when what the page shows changes (for an ETag)."""
        state = "|".join(
            f"{s.slug}:" + ",".join(f"{p.id}/{p.content_hash}" for p in s.posts)
            for s in self.sections
        )
        return hashlib.sha256(f"{self.edition}|{state}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class TagArchive:
    slug: str
    name: str
    editions: tuple[EditionInfo, ...]  # newest first
    older: int | None  # the `before` of the next page, None on the last

    @property
    def version(self) -> str:
        state = ",".join(f"{e.id}:{e.done}" for e in self.editions)
        return hashlib.sha256(f"{self.slug}|{self.name}|{state}|{self.older}".encode()).hexdigest()[
            :32
        ]


# -- what an edition carried -----------------------------------------------------------------


def _ledger_posts(edition_id: int) -> Select[int]:
    """The posts of the edition's sent deliveries, from the post ledger."""
    return (
        select(DeliveredPost.post_id)
        .join(Delivery, Delivery.id == DeliveredPost.delivery_id)
        .where(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.SENT)
    )


def _carries(session: Session, edition: Edition, tag_id: int) -> bool:
    """The edition carried a post of the tag: a cheap probe that finds the common case, then
    an exact one bounded by the edition's window (1-2 queries, none once memoized)."""
    key = (edition.id, tag_id, edition.sent)
    known = _memo.get(key)
    if known is not None:
        return known
    if edition.kind == EditionKind.BREAKING:
        probe = exists().where(post_tags.c.post_id == edition.post_id, post_tags.c.tag_id == tag_id)
        found = session.scalar(select(probe))
    else:
        found = session.scalar(select(_sampled(edition.id, tag_id))) or session.scalar(
            select(_bounded(session, edition, tag_id))
        )
    return _remember(edition, key, bool(found))


def _remember(edition: Edition, key: tuple[int, int, int], found: bool) -> bool:
    if edition.status in (EditionStatus.DONE, EditionStatus.CANCELLED):
        if len(_memo) >= _MEMO_SIZE:
            _memo.clear()
        _memo[key] = found
    return found


def _sampled(edition_id: int, tag_id: int) -> Exists:
    """One of SAMPLE of the edition's sent deliveries carried a post of the tag: finds a
    tag that many readers got at once, whatever the edition's size."""
    sample = (
        select(Delivery.id)
        .where(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.SENT)
        .limit(SAMPLE)
        .subquery()
    )
    return exists().where(
        DeliveredPost.delivery_id == sample.c.id,
        post_tags.c.post_id == DeliveredPost.post_id,
        post_tags.c.tag_id == tag_id,
    )


def _bounded(session: Session, edition: Edition, tag_id: int) -> Exists:
    """The exact answer, from the ledger rows of the tag's posts the edition could have
    carried: few when few readers follow the tag, and the same in a year-old archive as in a
    new one (only posts of the edition's time window are looked up)."""
    candidates = select(post_tags.c.post_id).where(post_tags.c.tag_id == tag_id)
    if edition.post_ids is not None:
        candidates = candidates.where(post_tags.c.post_id.in_(edition.post_ids))
    else:
        lower, upper = _window(session, edition)
        when = func.coalesce(Post.published_at, Post.first_seen_at)
        candidates = candidates.join(Post, Post.id == post_tags.c.post_id).where(
            when >= lower, Post.first_seen_at < upper
        )
    return exists().where(
        DeliveredPost.post_id.in_(candidates),
        Delivery.id == DeliveredPost.delivery_id,
        Delivery.edition_id == edition.id,
        Delivery.status == DeliveryStatus.SENT,
    )


def _window(session: Session, edition: Edition) -> tuple[datetime, datetime]:
    """Bounds on the date of any post a digest edition can have carried (see
    `content.posts_for`): a reader's window starts at most MAX_LOOKBACK periods, and a late
    feed's posts LATE_FEED more, before the send; sends of a local day happen within a day and
    a half of its UTC midnight, missed ones up to a day later."""
    schedule = session.get(Schedule, edition.schedule_id) if edition.schedule_id else None
    period = PERIOD.get(Cadence(schedule.cadence), WEEK) if schedule else WEEK
    start = edition.period_start or edition.created_at
    end = edition.period_end or start + period
    lower = start - timedelta(days=1) - MAX_LOOKBACK * period - LATE_FEED
    return lower, end + timedelta(days=2)


def _carried(session: Session, edition: Edition) -> list[ArchivePost]:
    """Every post the edition carried, newest first, with all its tags (2 queries)."""
    when = func.coalesce(Post.published_at, Post.first_seen_at)
    query = select(
        Post.id, Post.title, Post.url, Post.summary_html, Post.author, when, Post.content_hash
    )
    if edition.kind == EditionKind.BREAKING:
        if edition.post_id is None:  # the post was deleted
            return []
        query = query.where(Post.id == edition.post_id)
    else:
        query = query.where(Post.id.in_(_ledger_posts(edition.id).distinct()))
    rows = session.execute(query).all()
    if not rows:
        return []
    tags: dict[int, set[int]] = defaultdict(set)
    for post_id, tag_id in session.execute(
        select(post_tags.c.post_id, post_tags.c.tag_id).where(
            post_tags.c.post_id.in_([r[0] for r in rows])
        )
    ):
        tags[post_id].add(tag_id)
    posts = [
        ArchivePost(
            pid,
            title,
            url,
            plain_text(summary, EXCERPT_CHARS),
            author,
            at,
            content_hash,
            frozenset(tags[pid]),
        )
        for pid, title, url, summary, author, at, content_hash in rows
    ]
    return sorted(posts, key=lambda p: (p.when, p.id), reverse=True)


# -- the pages -------------------------------------------------------------------------------


def tag_archive(
    session: Session, slug: str, *, before: int | None = None, limit: int = PAGE_SIZE
) -> TagArchive | None:
    """The tag's sent editions, newest first, ``limit`` a page (keyset: ids below ``before``);
    None for an unknown tag."""
    tag = session.scalars(select(Tag).where(Tag.slug == slug)).one_or_none()
    if tag is None:
        return None
    # Newest first, each edition probed on its own, until the page is full or SCAN_LIMIT
    # editions were looked at; then "older" continues from the last one looked at.
    editions: list[Edition] = []
    looked, last, older = 0, before, None
    while len(editions) <= limit and older is None:
        query = select(Edition).where(Edition.sent > 0).order_by(Edition.id.desc()).limit(50)
        if last is not None:
            query = query.where(Edition.id < last)
        chunk = list(session.scalars(query))
        if not chunk:
            break
        for edition in chunk:
            last, looked = edition.id, looked + 1
            if _carries(session, edition, tag.id):
                editions.append(edition)
                if len(editions) > limit:
                    older = editions[limit - 1].id
                    break
            if looked >= SCAN_LIMIT:
                older = edition.id
                break
    editions = editions[:limit]
    infos = _infos(session, editions)
    return TagArchive(tag.slug, tag.name, tuple(infos), older)


def edition_page(
    session: Session, edition_id: int, slugs: Sequence[str] | None = None
) -> EditionPage | None:
    """One sent edition's posts, under the tags ``slugs`` (in that order) or, with None, under
    every tag it carried (by name; also when none of ``slugs`` is in it). None when the
    edition sent nothing, so a page exists only for what really went out."""
    edition = session.get(Edition, edition_id)
    if edition is None or edition.sent <= 0:
        return None
    posts = _carried(session, edition)
    if not posts:
        return None
    sections = _sections(session, posts, slugs) if slugs else ()
    if not sections:  # no filter, or none of its tags in this edition: all of it
        sections = _sections(session, posts, None)
    if not sections:
        return None
    (info,) = _infos(session, [edition])
    return EditionPage(info, tuple(sections))


def _sections(
    session: Session, posts: Sequence[ArchivePost], slugs: Sequence[str] | None
) -> tuple[Section, ...]:
    carried = set().union(*(p.tag_ids for p in posts))
    query = select(Tag.id, Tag.slug, Tag.name).where(Tag.id.in_(carried))
    if slugs is not None:
        query = query.where(Tag.slug.in_(list(slugs)))
    found = {slug: (tid, name) for tid, slug, name in session.execute(query)}
    if slugs is not None:
        order = [s for s in dict.fromkeys(slugs) if s in found]
    else:
        order = sorted(found, key=lambda s: (found[s][1].casefold(), s))
    sections: list[Section] = []
    placed: set[int] = set()
    for slug in order:
        tag_id, name = found[slug]
        shown = tuple(p for p in posts if tag_id in p.tag_ids and p.id not in placed)
        placed.update(p.id for p in shown)
        if shown:
            sections.append(Section(slug, name, shown))
    return tuple(sections)


def _infos(session: Session, editions: Sequence[Edition]) -> list[EditionInfo]:
    """Title and date of each edition (2 queries at most for the page)."""
    schedule_ids = {e.schedule_id for e in editions if e.schedule_id is not None}
    schedules = (
        {s.id: s for s in session.scalars(select(Schedule).where(Schedule.id.in_(schedule_ids)))}
        if schedule_ids
        else {}
    )
    post_ids = {e.post_id for e in editions if e.kind == EditionKind.BREAKING and e.post_id}
    titles = (
        dict(session.execute(select(Post.id, Post.title).where(Post.id.in_(post_ids))).all())
        if post_ids
        else {}
    )
    infos = []
    for e in editions:
        if e.kind == EditionKind.DIGEST:
            schedule = schedules.get(e.schedule_id) if e.schedule_id is not None else None
            title = f"{schedule.cadence.capitalize()} digest" if schedule else "Digest"
            date = e.period_start or e.created_at
        elif e.kind == EditionKind.BREAKING:
            headline = e.subject or titles.get(e.post_id or 0)
            title = f"Breaking: {headline}" if headline else "Breaking news"
            date = e.created_at
        else:
            title, date = "News alert", e.created_at
        done = e.status in (EditionStatus.DONE, EditionStatus.CANCELLED)
        infos.append(EditionInfo(e.id, EditionKind(e.kind), title, date, done))
    return infos
