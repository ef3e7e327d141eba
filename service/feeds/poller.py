"""Poll one source: claim it, fetch, parse, store, and decide when to come back.

A poll claims the source with a lease in one conditional UPDATE, so one poll is in flight per
source across every worker and beat. The fetch runs outside any transaction. Whatever happens
is recorded on the source (`last_result`, `last_error`, `consecutive_errors`, `next_poll_at`)
for operators, and one broken feed never stops the others.

The database going away mid-poll (a PostgreSQL restart) saves nothing of that poll and raises
`PollInterrupted`, which names the lease the poll holds: the caller retries with `resume=`, the
retry takes the source back at once (instead of waiting for the lease to run out), records the
interruption as an error on the source, and polls again. Posts are unique by URL, so a poll
that is run twice stores nothing twice.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import Table, Update, bindparam, or_, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from service.feeds.fetch import FetchFailed, FetchResult, fetch_feed
from service.feeds.normalize import normalize_entries
from service.feeds.parse import parse_feed
from service.feeds.store import store_items
from service.feeds.types import FeedError, ParsedFeed
from service.models import Source, source_tags

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)  # longer than any fetch (deadline 30 s) plus its parse and store
MIN_INTERVAL = timedelta(minutes=5)
MAX_INTERVAL = timedelta(hours=24)
UNCONDITIONAL_EVERY = timedelta(hours=12)
ENQUEUED_HOLD = timedelta(minutes=10)  # a queued poll's source is not due again meanwhile


@dataclass
class PollOutcome:
    source_id: int
    url: str
    result: str  # new | updated | unchanged | not modified | error | busy | disabled
    new: int = 0
    updated: int = 0
    error: str | None = None
    new_post_ids: list[int] = field(default_factory=list)
    resumed: bool = False  # a retry of a poll the database interrupted

    def describe(self) -> str:
        if self.result == "error":
            text = f"error: {self.error}"
        elif self.result in ("new", "updated"):
            text = f"{self.new} new, {self.updated} updated"
        else:
            text = self.result
        return f"{text} (retried: {INTERRUPTED})" if self.resumed else text


INTERRUPTED = "database unavailable mid-poll"


@dataclass(frozen=True)
class Resume:
    """What a retry of an interrupted poll brings: the lease the first try held (None if it
    never got one) and the database error that stopped it."""

    held: datetime | None
    error: str


class PollInterrupted(Exception):
    """The database connection was lost mid-poll; nothing of the poll was saved."""

    def __init__(self, source_id: int, held: datetime | None, error: str) -> None:
        super().__init__(f"source {source_id}: {INTERRUPTED}: {error}")
        self.source_id = source_id
        self.resume = Resume(held, error)


def claim(
    session: Session, source_id: int, now: datetime, resume: Resume | None = None
) -> Source | None:
    """Take the source's lease; None if it is disabled, gone, or being polled elsewhere.

    One statement (UPDATE … RETURNING) and one commit: a 304 poll should cost little more.
    The source comes back detached from the session: the poll changes it as it goes and
    writes what it changed in one UPDATE at the end (`_save`). With ``resume`` the lease the
    interrupted try held is taken back too, and the interruption is counted as an error.
    """
    params: dict[str, Any] = {"source_id": source_id, "now": now, "until": now + LEASE}
    if resume is None:
        statement = _CLAIM
    else:
        statement = _RESUME
        params |= {
            "held": resume.held,
            "error": f"{INTERRUPTED}: {resume.error}"[:2000],
            "result": f"error: {INTERRUPTED}, retrying"[:200],
        }
    claimed = session.connection().execute(statement, params).mappings().one_or_none()
    session.commit()  # no transaction (nor SQLite's write lock) held across the fetch
    return None if claimed is None else Source(**claimed)


def poll_source(
    sessions: Callable[[], Session],
    client: httpx.Client,
    source_id: int,
    *,
    now: datetime | None = None,
    deadline: float = 30.0,
    resume: Resume | None = None,
) -> PollOutcome:
    """Poll ``source_id`` once; raises `PollInterrupted` if the database went away meanwhile."""
    now = now or datetime.now(UTC)
    held = [resume.held if resume else None]  # the lease to name if this try fails too
    try:
        return _poll(sessions, client, source_id, now, deadline, resume, held)
    except DBAPIError as exc:
        if not _connection_lost(exc):
            raise
        log.warning("poll interrupted", extra={"source_id": source_id, "error": str(exc.orig)})
        raise PollInterrupted(source_id, held[0], str(exc.orig).strip()[:300]) from exc


def _connection_lost(exc: DBAPIError) -> bool:
    """A lost or refused connection (a restart, a failover), not a bug in a statement."""
    return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)


def _poll(
    sessions: Callable[[], Session],
    client: httpx.Client,
    source_id: int,
    now: datetime,
    deadline: float,
    resume: Resume | None,
    held: list[datetime | None],
) -> PollOutcome:
    with sessions() as session:
        source = claim(session, source_id, now, resume)
        if source is None:
            return PollOutcome(source_id, "", "busy")
        held[0] = source.lease_until
        claimed = _written(source)
        conditional = not (
            source.last_unconditional_at is None
            or now - source.last_unconditional_at >= UNCONDITIONAL_EVERY
        )
        outcome = PollOutcome(source.id, source.url, "error", resumed=resume is not None)
        try:
            fetched = fetch_feed(
                client,
                source.url,
                etag=source.etag,
                last_modified=source.last_modified,
                conditional=conditional,
                deadline=deadline,
            )
            delay = _handle(session, source, fetched, outcome, now)
            if not conditional:
                source.last_unconditional_at = now
            source.consecutive_errors, source.last_error = 0, None
        except FetchFailed as exc:
            delay = _failed(source, exc, exc.retry_after, outcome)
            if exc.permanent:
                source.enabled = False
                outcome.result = "disabled"
        except FeedError as exc:
            delay = _failed(source, exc, None, outcome)
        source.last_polled_at = now
        source.first_polled_at = source.first_polled_at or now
        source.next_poll_at = now + _jittered(delay)
        source.last_result = outcome.describe()[:200]
        source.lease_until = None
        _save(session, source, claimed)
        session.commit()
    log.info("polled", extra={"source_id": outcome.source_id, "result": outcome.describe()})
    return outcome


# What a poll may change on its source. Only what it did change is written, so an operator's
# edit made during the fetch (disabling the source, say) is not written over.
_POLL_WRITES = (
    "url", "title", "enabled", "etag", "last_modified", "body_hash", "next_poll_at",
    "last_polled_at", "first_polled_at", "consecutive_errors", "last_error", "last_result",
    "lease_until", "last_unconditional_at",
)  # fmt: skip


def _written(source: Source) -> dict[str, Any]:
    return {name: getattr(source, name) for name in _POLL_WRITES}


def _save(session: Session, source: Source, claimed: dict[str, Any]) -> None:
    changed = {k: v for k, v in _written(source).items() if v != claimed[k]}
    if changed:
        session.connection().execute(_update(tuple(changed)), {"source_id": source.id, **changed})


@functools.cache
def _update(columns: tuple[str, ...]) -> Update:
    # A handful of shapes (new posts, 304, error, ...), each built once.
    c = _sources.c
    return (
        update(_sources)
        .where(c.id == bindparam("source_id"))
        .values({name: bindparam(name, type_=c[name].type) for name in columns})
    )


_sources = cast(Table, Source.__table__)
_CLAIM = (
    update(_sources)
    .where(
        _sources.c.id == bindparam("source_id"),
        _sources.c.enabled.is_(True),
        or_(_sources.c.lease_until.is_(None), _sources.c.lease_until < bindparam("now")),
    )
    .values(lease_until=bindparam("until", type_=_sources.c.lease_until.type))
    .returning(*_sources.c)
)
# A retry's claim: also the lease its interrupted try held, and the interruption recorded.
_RESUME = (
    update(_sources)
    .where(
        _sources.c.id == bindparam("source_id"),
        _sources.c.enabled.is_(True),
        or_(
            _sources.c.lease_until.is_(None),
            _sources.c.lease_until < bindparam("now"),
            _sources.c.lease_until == bindparam("held", type_=_sources.c.lease_until.type),
        ),
    )
    .values(
        lease_until=bindparam("until", type_=_sources.c.lease_until.type),
        consecutive_errors=_sources.c.consecutive_errors + 1,
        last_error=bindparam("error"),
        last_result=bindparam("result"),
    )
    .returning(*_sources.c)
)
_TAG_IDS = select(source_tags.c.tag_id).where(source_tags.c.source_id == bindparam("source_id"))


def _handle(
    session: Session, source: Source, fetched: FetchResult, outcome: PollOutcome, now: datetime
) -> timedelta:
    if fetched.moved_to and not session.scalar(
        select(Source.id).where(Source.url == fetched.moved_to)
    ):
        source.url = fetched.moved_to  # 301/308: the feed lives there now
    source.etag, source.last_modified = fetched.etag, fetched.last_modified
    if fetched.status == 304 or fetched.body is None:
        outcome.result = "not modified"
        return _interval(source, None, fetched)
    body_hash = hashlib.sha256(fetched.body).hexdigest()
    if body_hash == source.body_hash:
        outcome.result = "unchanged"  # same bytes: skip the parse
        return _interval(source, None, fetched)
    feed = parse_feed(fetched.body, content_type=fetched.content_type, url=fetched.url)
    items = normalize_entries(feed.entries, feed_url=fetched.url, site_url=feed.link, now=now)
    tag_ids = session.connection().execute(_TAG_IDS, {"source_id": source.id}).scalars().all()
    stored = store_items(session, items, source=source, tags=tag_ids, now=now)
    source.title = (feed.title or source.title or "")[:500] or None
    source.body_hash = body_hash
    outcome.new, outcome.updated = stored.new, stored.updated
    outcome.new_post_ids = stored.new_post_ids
    outcome.result = "new" if stored.new else "updated" if stored.updated else "unchanged"
    return _interval(source, feed, fetched)


def _failed(
    source: Source, exc: Exception, retry_after: float | None, outcome: PollOutcome
) -> timedelta:
    source.consecutive_errors += 1
    source.last_error = str(exc)[:2000]
    outcome.error = source.last_error
    # Exponential backoff from the source's interval, capped at a day; Retry-After wins.
    backoff = timedelta(seconds=source.interval_seconds * 2 ** min(source.consecutive_errors, 10))
    delay = min(backoff, MAX_INTERVAL)
    if retry_after:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def _interval(source: Source, feed: ParsedFeed | None, fetched: FetchResult) -> timedelta:
    """Follow the feed's posting rate, within bounds, and never sooner than it asks."""
    interval = timedelta(seconds=source.interval_seconds)
    if feed is not None:
        dates = sorted((e.published for e in feed.entries if e.published), reverse=True)[:10]
        gaps = [(a - b).total_seconds() for a, b in itertools.pairwise(dates)]
        if gaps:
            # A feed that posts every 20 minutes is worth a look every 5; one that posts daily,
            # every few hours.
            interval = timedelta(seconds=statistics.median(gaps) / 4)
    asked = [fetched.max_age or 0, fetched.retry_after or 0]
    if feed is not None and feed.ttl_minutes:
        asked.append(feed.ttl_minutes * 60)
    interval = max(interval, timedelta(seconds=max(asked)))
    return min(max(interval, MIN_INTERVAL), MAX_INTERVAL)


def _jittered(delay: timedelta) -> timedelta:
    # Spread polls so sources added together do not stay in step forever.
    return delay * random.uniform(0.9, 1.1)


def due_sources(session: Session, now: datetime, limit: int = 1000) -> list[int]:
    """Claim the due sources for enqueueing: each is held back until its poll runs."""
    ids = list(
        session.scalars(
            select(Source.id)
            .where(
                Source.enabled.is_(True),
                or_(Source.next_poll_at.is_(None), Source.next_poll_at <= now),
                or_(Source.lease_until.is_(None), Source.lease_until < now),
            )
            .order_by(Source.next_poll_at.nulls_first())
            .limit(limit)
        )
    )
    if ids:
        session.execute(
            update(Source).where(Source.id.in_(ids)).values(next_poll_at=now + ENQUEUED_HOLD)
        )
    return ids
