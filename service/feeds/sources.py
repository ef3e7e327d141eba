"""The feeds an operator manages: add (checking the URL serves a feed, or a page that links to
one), list with their poll state, change, delete, and poll now.

Plain functions over a session; the caller commits. ``poll_now`` hands the poll to a
``PollQueue`` (the web app's enqueues a task after the commit), so nothing here needs Celery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from service.errors import Conflict, NotFound
from service.feeds.fetch import fetch_feed
from service.feeds.normalize import canonical_url
from service.feeds.parse import discover_feeds, looks_like_html, parse_feed
from service.feeds.store import tags_for
from service.feeds.types import FeedError
from service.models import Source

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
# The poller adapts the interval to the feed between these bounds (poller.MIN/MAX_INTERVAL).
MIN_INTERVAL_SECONDS = 300
MAX_INTERVAL_SECONDS = 86_400


class SourceError(ValueError):
    """The URL or tags cannot make a source; the message says why."""


class SourceNotFound(SourceError, NotFound):
    """No source has this id."""


class SourceConflict(SourceError, Conflict):
    """Already a source, or not in a state to do this now."""


@dataclass(frozen=True)
class SourceInfo:
    """A source as operators see it: its settings and what its polls last did."""

    id: int
    url: str
    title: str | None
    tags: list[str]  # slugs its posts get
    enabled: bool
    categories_as_tags: bool
    interval_seconds: int  # the base interval; the poller adapts it to the feed
    last_result: str | None  # "3 new, 0 updated", "not modified", "error: …"
    last_error: str | None  # None once a poll succeeds again
    consecutive_errors: int
    last_polled_at: datetime | None
    next_poll_at: datetime | None  # None: due at the next tick
    created_at: datetime

    @classmethod
    def of(cls, source: Source) -> SourceInfo:
        return cls(
            id=source.id,
            url=source.url,
            title=source.title,
            tags=sorted(t.slug for t in source.tags),
            enabled=source.enabled,
            categories_as_tags=source.categories_as_tags,
            interval_seconds=source.interval_seconds,
            last_result=source.last_result,
            last_error=source.last_error,
            consecutive_errors=source.consecutive_errors,
            last_polled_at=source.last_polled_at,
            next_poll_at=source.next_poll_at,
            created_at=source.created_at,
        )


class PollQueue(Protocol):
    """Where ``poll_now`` hands a source: the web app enqueues a task once the session commits."""

    def poll(self, session: Session, source_id: int) -> None: ...


def add_source(
    session: Session,
    client: httpx.Client,
    url: str,
    *,
    tag_slugs: list[str],
    categories_as_tags: bool = False,
    interval_seconds: int = 900,
) -> Source:
    """Store ``url`` as a source once it proves to serve a feed; the caller commits.

    Raises SourceError for bad tags or interval or a URL that serves no feed, SourceConflict
    when the feed is already a source.
    """
    _check_tags(tag_slugs)
    _check_interval(interval_seconds)
    _check_new(session, canonical_url(url))  # before the fetch: no request for a known feed
    feed_url = resolve_feed_url(client, url)
    _check_new(session, feed_url)
    source = Source(
        url=feed_url,
        categories_as_tags=categories_as_tags,
        interval_seconds=interval_seconds,
        tags=tags_for(session, tag_slugs),
    )
    session.add(source)
    session.flush()
    return source


def resolve_feed_url(client: httpx.Client, url: str, *, follow_page: bool = True) -> str:
    """``url`` if it serves a feed; the feed an HTML page names in <link rel=alternate>."""
    try:
        page = fetch_feed(client, url, conditional=False)
    except FeedError as exc:
        raise SourceError(f"cannot fetch {url}: {exc}") from exc
    body = page.body or b""
    if looks_like_html(body):
        found = discover_feeds(body, page.url)
        if not found or not follow_page:  # one hop only: a page naming a page is no feed
            raise SourceError(f"{url} is a web page that names no feed (<link rel=alternate>)")
        return resolve_feed_url(client, found[0], follow_page=False)
    try:
        parse_feed(body, content_type=page.content_type, url=page.url)
    except FeedError as exc:
        raise SourceError(f"{url} is not a feed: {exc}") from exc
    return canonical_url(page.moved_to or url)


def _check_tags(tag_slugs: list[str]) -> None:
    bad = [s for s in tag_slugs if not SLUG.match(s)]
    if bad or not tag_slugs:
        raise SourceError(f"tags must be slugs like 'ukraine' or 'city-hall': {bad or 'none'}")


def _check_interval(seconds: int) -> None:
    if not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
        raise SourceError(
            f"interval must be {MIN_INTERVAL_SECONDS} to {MAX_INTERVAL_SECONDS} seconds "
            f"(5 minutes to a day), got {seconds}"
        )


def _check_new(session: Session, feed_url: str) -> None:
    existing = session.scalar(select(Source.id).where(Source.url == feed_url))
    if existing is not None:
        raise SourceConflict(f"{feed_url} is already a source (id {existing})")


def find_source(session: Session, source_id: int, *, lock: bool = False) -> Source:
    """The source with this id, or SourceNotFound."""
    source = session.get(
        Source, source_id, options=[selectinload(Source.tags)], with_for_update=lock
    )
    if source is None:
        raise SourceNotFound(f"no source with id {source_id}")
    return source


def list_sources(session: Session) -> list[SourceInfo]:
    """Every source, oldest first, with its poll state."""
    rows = session.scalars(select(Source).options(selectinload(Source.tags)).order_by(Source.id))
    return [SourceInfo.of(s) for s in rows]


def get_source(session: Session, source_id: int) -> SourceInfo:
    return SourceInfo.of(find_source(session, source_id))


def update_source(
    session: Session,
    source_id: int,
    *,
    tag_slugs: list[str] | None = None,
    interval_seconds: int | None = None,
    enabled: bool | None = None,
    categories_as_tags: bool | None = None,
    now: datetime | None = None,
) -> SourceInfo:
    """Change what is given (None: leave it); the caller commits.

    New tags apply to what later polls store; posts already stored keep theirs. Enabling a
    disabled source clears its error count and makes it due at the next tick; a shorter
    interval brings a far-off next poll closer.
    """
    now = now or datetime.now(UTC)
    source = find_source(session, source_id, lock=True)
    if tag_slugs is not None:
        _check_tags(tag_slugs)
        source.tags = tags_for(session, tag_slugs)
    if interval_seconds is not None:
        _check_interval(interval_seconds)
        source.interval_seconds = interval_seconds
        soonest = now + timedelta(seconds=interval_seconds)
        if source.next_poll_at is not None and source.next_poll_at > soonest:
            source.next_poll_at = soonest
    if enabled is not None and enabled != source.enabled:
        source.enabled = enabled
        if enabled:
            source.consecutive_errors, source.next_poll_at = 0, None
    if categories_as_tags is not None:
        source.categories_as_tags = categories_as_tags
    session.flush()
    return SourceInfo.of(source)


def delete_source(session: Session, source_id: int, *, now: datetime | None = None) -> None:
    """Stop polling and forget the source; the posts it brought stay. The caller commits."""
    now = now or datetime.now(UTC)
    source = find_source(session, source_id, lock=True)
    if source.lease_until is not None and source.lease_until > now:
        raise SourceConflict("the source is being polled right now; try again in a minute")
    session.delete(source)
    session.flush()


def poll_now(session: Session, source_id: int, queue: PollQueue) -> SourceInfo:
    """Queue a poll of the source for when the caller commits; it runs on a worker.

    The poll's outcome shows on the source afterwards (``last_polled_at``, ``last_result``).
    """
    source = find_source(session, source_id)
    if not source.enabled:
        raise SourceConflict("the source is disabled; enable it to poll it")
    queue.poll(session, source.id)
    return SourceInfo.of(source)
