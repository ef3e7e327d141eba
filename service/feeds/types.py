"""What the feed stages hand each other: parse → normalize → store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal


@dataclass(frozen=True)
class FeedEntry:
    """One item as the feed states it: raw text, nothing cleaned or resolved yet."""

    guid: str | None = None
    link: str | None = None
    title: str | None = None  # may hold entities or markup
    summary: str | None = None  # HTML as served
    content: str | None = None  # full HTML body when the feed has one
    author: str | None = None
    published: datetime | None = None  # timezone-aware when the feed gave a zone, else UTC
    updated: datetime | None = None
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedFeed:
    kind: Literal["rss", "atom", "rdf", "json"]
    title: str | None = None
    link: str | None = None  # the site's home page, as the feed names it
    ttl_minutes: int | None = None  # RSS <ttl>
    entries: list[FeedEntry] = field(default_factory=list)


@dataclass(frozen=True)
class Item:
    """An entry ready to store: canonical URL, plain-text title, sanitized summary."""

    guid: str
    url: str
    title: str
    summary_html: str
    author: str | None
    published_at: datetime | None  # aware UTC; None: count it from when first seen
    categories: tuple[str, ...]
    content_hash: str  # of what a reader sees: title and summary


class FeedError(Exception):
    """A feed could not be fetched or read; the message is what operators see."""
