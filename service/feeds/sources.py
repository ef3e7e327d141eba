"""Adding a source: check the URL serves a feed (or a page that links to one) before storing it."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.feeds.fetch import fetch_feed
from service.feeds.normalize import canonical_url
from service.feeds.parse import discover_feeds, looks_like_html, parse_feed
from service.feeds.store import tags_for
from service.feeds.types import FeedError
from service.models import Source

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


class SourceError(ValueError):
    """The URL or tags cannot make a source; the message says why."""


def add_source(
    session: Session,
    client: httpx.Client,
    url: str,
    *,
    tag_slugs: list[str],
    categories_as_tags: bool = False,
    interval_seconds: int = 900,
) -> Source:
    bad = [s for s in tag_slugs if not SLUG.match(s)]
    if bad or not tag_slugs:
        raise SourceError(f"tags must be slugs like 'ukraine' or 'city-hall': {bad or 'none'}")
    feed_url = resolve_feed_url(client, url)
    if session.scalar(select(Source.id).where(Source.url == feed_url)) is not None:
        raise SourceError(f"{feed_url} is already a source")
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
